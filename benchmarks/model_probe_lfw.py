"""LFW 10-fold accuracy of every shared recognizer: the manifest's preprocessing vs the probe's choice.

The probe (facebridge.vision.model_probe) never reads the entry of the file it probes; it chooses
colour order and pixel scaling on a labelled photo set of *other* people (default: the CelebA dev
folder, a different population from LFW, so no scored person is ever seen while choosing). Both entries
are then scored the way the service embeds: YuNet central face, the entry's template, the service's
Recognizer, cosine similarity, 10-fold LFW accuracy on all 6,000 pairs of pairs.txt.

    python benchmarks/model_probe_lfw.py [--photos DIR] [--model ID ...] [--people 120] [--per-person 3]

LFW landmarks come from cache/lfw-landmarks-yunet.npz when it covers the pair images (written by the
dataset studies with the same detector, thresholds and face choice), otherwise they are detected here.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebridge.config import Settings
from facebridge.evaluation.lfw import Pair, pair_images, read_pairs
from facebridge.evaluation.metrics import TenFoldResult, ten_fold_accuracy
from facebridge.vision.manifest import Manifest, ModelEntry, sha256_file
from facebridge.vision.model_probe import (
    AlignedPhotos,
    ProbeResult,
    default_detector,
    embed_with,
    open_session,
    propose_entry,
    sample_photos,
)
from facebridge.vision.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"
RECOGNIZERS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128", "hse-mobilenet1024"]


@dataclass
class Row:
    model_id: str
    manifest: ModelEntry
    manifest_accuracy: TenFoldResult
    probe: ProbeResult
    probed_accuracy: TenFoldResult
    probe_seconds: float


def lfw_photos(lfw: Path, images: list[str], settings: Settings) -> AlignedPhotos:
    """The pair images with their central-face landmarks, from the shared landmark cache if it has them."""
    cache = settings.cache_dir / "lfw-landmarks-yunet.npz"
    identities = [i.split("/")[0] for i in images]
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            known = dict(zip(map(str, data["paths"]), np.asarray(data["landmarks"]), strict=True))
        if all(i in known for i in images):
            landmarks = [None if np.isnan(known[i]).any() else known[i].astype(np.float64) for i in images]
            print(f"landmarks of {len(images)} LFW photos from {cache}", flush=True)
            return AlignedPhotos(lfw, images, identities, landmarks)
    print(f"detecting faces in {len(images)} LFW photos", flush=True)
    return AlignedPhotos.detect(lfw, images, identities, default_detector(settings))


def accuracy(
    entry: ModelEntry, path: Path, photos: AlignedPhotos, pairs: list[Pair], manifest: Manifest
) -> TenFoldResult:
    """10-fold LFW accuracy of `entry` embedded as the service embeds (its template, Recognizer)."""
    recognizer = Recognizer(entry, open_session(path), sha256_file(path))
    embeddings = embed_with(recognizer, photos.crops(manifest.templates[entry.alignment or ""]))
    index = {p: i for i, p in enumerate(photos.paths)}
    left = embeddings[[index[p.left] for p in pairs]]
    right = embeddings[[index[p.right] for p in pairs]]
    scores = np.einsum("ij,ij->i", left, right)
    labels, folds = np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])
    return ten_fold_accuracy(scores, labels, folds)


def input_size(manifest: Manifest, model_id: str) -> int:
    entry = manifest.get(model_id)
    if entry is None or entry.size is None:
        raise SystemExit(f"{model_id}: not a recognizer of the manifest")
    return entry.size


def preprocessing(entry: ModelEntry) -> str:
    return f"{entry.alignment} {entry.color} ({entry.mean:g}, {entry.std:g})"


def run_model(
    model_id: str,
    settings: Settings,
    manifest: Manifest,
    lfw: AlignedPhotos,
    pairs: list[Pair],
    fitting: AlignedPhotos,
) -> Row:
    known = manifest.get(model_id)
    assert known is not None, model_id
    path = settings.models_dir / known.file
    start = time.perf_counter()
    probe = propose_entry(path, f"probed-{model_id}", None, settings=settings, photos=fitting)
    seconds = time.perf_counter() - start
    probed = ModelEntry.model_validate(probe.entry)
    manifest_accuracy = accuracy(known, path, lfw, pairs, manifest)
    same = (probed.alignment, probed.color, probed.mean, probed.std) == (
        known.alignment,
        known.color,
        known.mean,
        known.std,
    )
    probed_accuracy = manifest_accuracy if same else accuracy(probed, path, lfw, pairs, manifest)
    return Row(model_id, known, manifest_accuracy, probe, probed_accuracy, seconds)


def format_rows(rows: list[Row]) -> str:
    """A Markdown table: manifest preprocessing and accuracy, the probe's choice and its accuracy."""
    lines = [
        "| model | manifest preprocessing | LFW acc (manifest) | probe's choice | LFW acc (probed) "
        "| Δ (points) | probe time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        chosen = row.probe.chosen.candidate
        delta = (row.probed_accuracy.mean - row.manifest_accuracy.mean) * 100
        lines.append(
            f"| {row.model_id} | {preprocessing(row.manifest)} "
            f"| {row.manifest_accuracy.mean * 100:.2f} ± {row.manifest_accuracy.std * 100:.2f} "
            f"| {chosen.template} {chosen.color} {chosen.normalisation.name} "
            f"| {row.probed_accuracy.mean * 100:.2f} ± {row.probed_accuracy.std * 100:.2f} "
            f"| {delta:+.2f} | {row.probe_seconds:.0f} s |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw", type=Path, default=SHARED / "datasets" / "lfw")
    parser.add_argument(
        "--photos",
        type=Path,
        default=SHARED / "datasets" / "celeba-dev",
        help="labelled photos the probe chooses on (people in LFW's pairs are left out if it is LFW)",
    )
    parser.add_argument("--model", action="append", help="repeat for several; default the five shared ones")
    parser.add_argument("--people", type=int, default=120)
    parser.add_argument("--per-person", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--providers", choices=["auto", "cpu", "cuda"], default="cpu")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    settings = Settings(models_dir=args.models_dir, providers=args.providers, cache_dir=ROOT / "cache")
    manifest = settings.load_manifest()
    pairs = read_pairs(args.lfw / "pairs.txt")
    lfw = lfw_photos(args.lfw, pair_images(pairs), settings)
    scored_people = set(lfw.identities.tolist())
    exclude = scored_people if args.photos.resolve() == args.lfw.resolve() else set()
    fitting = sample_photos(
        args.photos, default_detector(settings), args.people, args.per_person, args.seed, exclude
    )
    assert not scored_people & set(fitting.identities.tolist()), "fitting people must not be scored"
    print(
        f"probe photos: {len(fitting)} of {len(set(fitting.identities.tolist()))} people in {args.photos}; "
        f"scored: {len(pairs)} LFW pairs, {len(lfw)} photos, {int((~lfw.found).sum())} without a face",
        flush=True,
    )
    models = args.model or RECOGNIZERS
    ordered = sorted(models, key=lambda m: input_size(manifest, m))  # photos are aligned once per size
    rows = []
    for i, model_id in enumerate(ordered):
        rows.append(run_model(model_id, settings, manifest, lfw, pairs, fitting))
        print(f"\n{model_id}: chosen {rows[-1].probe.chosen.candidate.label}", flush=True)
        print(rows[-1].probe.format_table(), flush=True)
        if all(input_size(manifest, m) != input_size(manifest, model_id) for m in ordered[i + 1 :]):
            lfw.clear()  # no later model uses crops of this size
    print()
    print(format_rows(sorted(rows, key=lambda r: models.index(r.model_id))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
