"""One-off check that our SCRFD and ArcFace-crop code gives what insightface gives, on real LFW photos.

facebridge no longer imports insightface (its wheel pulls in opencv-python and onnxruntime beside ours);
this script compares the port with the original where insightface is still installed:

- detection: our ScrfdDetector against insightface's model_zoo SCRFD on every photo, as it is and
  letterboxed the other two ways (cropped tall, padded wide), at each --threshold: the same number of
  faces, then the largest absolute difference of boxes, keypoints and scores;
- alignment: align_face on the arcface112 template against insightface's face_align.norm_crop, with the
  landmarks of both our detectors: the largest difference of the 2x3 matrices and of the crop pixels.

    .venv/bin/python scripts/check_insightface_port.py [--photos 300] [--threshold 0.5 --threshold 0.1]

Exits 1 when anything differs, 2 when insightface is not installed.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from facebridge.vision.alignment import align_face, similarity_transform
from facebridge.vision.detection import Detection, ScrfdDetector, YuNetDetector
from facebridge.vision.images import decode_image
from facebridge.vision.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]

CPU = ["CPUExecutionProvider"]


@dataclass
class Difference:
    """Running maximum of one compared quantity."""

    what: str
    compared: int = 0
    max_abs: float = 0.0
    mismatches: int = 0

    def add(self, ours: np.ndarray, theirs: np.ndarray) -> None:
        diff = float(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)).max(initial=0.0))
        self.compared += 1
        self.max_abs = max(self.max_abs, diff)
        self.mismatches += diff > 0


def import_insightface() -> tuple[ModuleType, ModuleType]:
    """insightface's face_align and model_zoo, or exit with a clear message (only this script needs it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from insightface import model_zoo
            from insightface.utils import face_align
    except ImportError:
        print(
            "insightface is not installed: this check compares against it, so run it where it is "
            "(pip install insightface into a scratch environment); facebridge itself does not need it",
            file=sys.stderr,
        )
        sys.exit(2)
    return face_align, model_zoo


def sample_photos(lfw: Path, count: int) -> list[Path]:
    """`count` photos spread evenly over the sorted LFW tree (many people, deterministic)."""
    photos = sorted(lfw.glob("*/*.jpg"))
    if len(photos) < count:
        sys.exit(f"found {len(photos)} photos under {lfw}; need {count}")
    return [photos[i] for i in np.linspace(0, len(photos) - 1, count).round().astype(int)]


def variants(image: np.ndarray) -> Iterator[np.ndarray]:
    """The photo, a tall crop and a wide padding of it: both letterbox directions get exercised."""
    height, width = image.shape[:2]
    yield image
    yield np.ascontiguousarray(image[:, width // 5 : width - width // 5])
    wide = np.zeros((height, width * 8 // 5, 3), np.uint8)
    wide[:, width * 3 // 10 : width * 3 // 10 + width] = image
    yield wide


def compare_detection(
    ours: list[Detection], theirs: tuple[np.ndarray, np.ndarray], table: dict[str, Difference]
) -> None:
    boxes, keypoints = theirs
    table["count"].add(np.array(len(ours)), np.array(len(boxes)))
    if len(ours) != len(boxes):
        return
    for face, box, points in zip(ours, boxes, keypoints, strict=True):
        table["box"].add(face.box, box[:4])
        table["keypoints"].add(face.landmarks, points)
        table["score"].add(np.array(face.score), box[4])


def compare_alignment(
    image: np.ndarray,
    faces: list[Detection],
    face_align: ModuleType,
    template: Any,
    table: dict[str, Difference],
) -> None:
    for face in faces:
        points = np.asarray(face.landmarks, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface
            matrix, crop = face_align.estimate_norm(points, 112), face_align.norm_crop(image, points, 112)
        table["matrix"].add(similarity_transform(points, np.asarray(template.points, np.float32)), matrix)
        table["pixels"].add(align_face(image, face.landmarks, template), crop)


def print_table(tables: dict[str, dict[str, Difference]]) -> bool:
    """Markdown table of every check; True when nothing differs."""
    print("| check | compared | differing | max abs difference |")
    print("|---|---:|---:|---:|")
    clean = True
    for section, table in tables.items():
        for row in table.values():
            print(f"| {section}: {row.what} | {row.compared} | {row.mismatches} | {row.max_abs:.3g} |")
            clean = clean and row.mismatches == 0
    return clean


def detection_table() -> dict[str, Difference]:
    return {
        "count": Difference("faces found (count)"),
        "box": Difference("box x1 y1 x2 y2 (px)"),
        "keypoints": Difference("keypoints (px)"),
        "score": Difference("score"),
    }


def alignment_table() -> dict[str, Difference]:
    return {"matrix": Difference("2x3 matrix"), "pixels": Difference("112x112 crop pixels (0-255)")}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--threshold", type=float, action="append", help="score threshold (0.5 and 0.1)")
    args = parser.parse_args()
    face_align, model_zoo = import_insightface()
    thresholds = args.threshold or [0.5, 0.1]
    manifest = load_manifest(args.models_dir / "manifest.toml")
    template = manifest.templates["arcface112"]
    scrfd_entry, yunet_entry = manifest.get("scrfd-500m"), manifest.get("yunet")
    assert scrfd_entry is not None and yunet_entry is not None
    ours = ScrfdDetector(scrfd_entry, args.models_dir / scrfd_entry.file, CPU)
    yunet = YuNetDetector(yunet_entry, args.models_dir / yunet_entry.file)
    theirs = model_zoo.get_model(str(args.models_dir / scrfd_entry.file), providers=CPU)
    theirs.prepare(ctx_id=-1, input_size=(640, 640))
    tables = {f"SCRFD @{t}": detection_table() for t in thresholds}
    tables["ArcFace crop"] = alignment_table()
    photos = sample_photos(args.lfw, args.photos)
    for path in photos:
        image = decode_image(path.read_bytes(), max_bytes=1 << 24, max_pixels=1 << 24)
        for variant in variants(image):
            for t in thresholds:
                compare_detection(
                    ours.detect(variant, t), theirs.detect(variant, det_thresh=t), tables[f"SCRFD @{t}"]
                )
        for faces in (ours.detect(image, 0.5), yunet.detect(image, 0.5)):
            compare_alignment(image, faces, face_align, template, tables["ArcFace crop"])
    print(f"{len(photos)} LFW photos from {args.lfw} (3 letterbox variants each for detection)\n")
    clean = print_table(tables)
    print("\nidentical" if clean else "\nDIFFERENCES FOUND")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
