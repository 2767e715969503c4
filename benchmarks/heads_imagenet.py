"""Closed-form head maps on two real ImageNet classifiers, next to data-fitted maps, in one run.

EfficientNet-Lite0 and -Lite2 (separately trained, 1,280-d features, the same 1,000 classes; built by
`scripts/imagenet_classifiers.py`) give each photo a feature vector and logits. The closed-form map
A→B comes from the two heads alone (`facebridge fit --from-heads A.onnx B.onnx`, run here as a CLI);
ridge maps A→B are fitted on features of N unlabelled photos (LFW photos, which neither network was
trained on). Measured, for both directions:

- top-1 accuracy on the 20 labelled ImageNet photos of B's head applied to A's mapped features,
  next to A's and B's own top-1;
- on 1,000 other LFW photos: how often B's head on the mapped features agrees with B's own top-1
  (and with A's own top-1), and the mean cosine of mapped to true B features.

    python benchmarks/heads_imagenet.py [--lfw ../shared/datasets/lfw] [--report docs/interchangeability.md]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from facebridge.evaluation.sections import upsert_section
from facebridge.mapping.estimators import RidgeMap, row_cosine
from facebridge.mapping.heads import head_from_onnx
from facebridge.mapping.mapfile import load_map

ROOT = Path(__file__).resolve().parents[1]

# input size, shorter side before the centre crop
MODELS = {"efficientnet-lite0": (224, 256), "efficientnet-lite2": (260, 292)}
FIT_SIZES = (100, 500, 2000)


def preprocess(path: Path, size: int, shorter: int) -> np.ndarray:
    """Resize the shorter side (bicubic), centre-crop, (x - 127) / 128, NCHW RGB."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    s = shorter / min(w, h)
    image = image.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    x = (np.asarray(image.crop((left, top, left + size, top + size)), np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)


def run_model(model: Path, name: str, photos: list[Path], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of every photo."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    size, shorter = MODELS[name]
    features, logits = [], []
    for start in range(0, len(photos), batch):
        tensor = np.stack([preprocess(p, size, shorter) for p in photos[start : start + batch]])
        f, z = session.run(["features", "logits"], {"input": tensor})
        features.append(f)
        logits.append(z)
    return np.concatenate(features).astype(np.float64), np.concatenate(logits).astype(np.float64)


@dataclass
class Row:
    name: str
    fitted_on: str
    top1: float  # on the labelled photos, through B's head
    agree_b: float  # with B's own top-1 on the held-out photos
    agree_a: float  # with A's own top-1
    cosine: float  # mapped vs B's true features (held out)


def closed_form_map(source: Path, target: Path, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """`facebridge fit --from-heads` as a user runs it; the written map file is read back."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "facebridge",
            "fit",
            "--from-heads",
            str(source),
            str(target),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    loaded = load_map(next(out.glob(f"{source.stem}__{target.stem}*.safetensors")))
    return loaded.weight.astype(np.float64), loaded.bias.astype(np.float64)


def study(
    a: str,
    b: str,
    models: dict[str, Path],
    data: dict[str, dict[str, np.ndarray]],
    labels: np.ndarray,
    work: Path,
) -> list[Row]:
    head_b = head_from_onnx(models[b])
    fa, fb = data[a]["features"], data[b]["features"]
    za, zb = data[a]["logits"], data[b]["logits"]
    n_labelled = len(labels)
    fit_pool = np.arange(n_labelled, n_labelled + max(FIT_SIZES))
    test = np.arange(n_labelled + max(FIT_SIZES), len(fa))
    own_a, own_b = za.argmax(axis=1), zb.argmax(axis=1)

    def row(name: str, fitted_on: str, mapped: np.ndarray) -> Row:
        predicted = head_b.logits(mapped).argmax(axis=1)
        return Row(
            name,
            fitted_on,
            float(np.mean(predicted[:n_labelled] == labels)),
            float(np.mean(predicted[test] == own_b[test])),
            float(np.mean(predicted[test] == own_a[test])),
            float(row_cosine(mapped[test], fb[test]).mean()),
        )

    rows = [
        Row(f"{b} own features", "-", float(np.mean(own_b[:n_labelled] == labels)), 1.0,
            float(np.mean(own_b[test] == own_a[test])), 1.0),
        Row(f"{a} own head (no map)", "-", float(np.mean(own_a[:n_labelled] == labels)),
            float(np.mean(own_a[test] == own_b[test])), 1.0, float("nan")),
    ]  # fmt: skip
    weight, bias = closed_form_map(models[a], models[b], work / f"{a}-{b}")
    rows.append(row("closed form from the heads", "0 photos", fa @ weight + bias))
    for n in FIT_SIZES:
        ridge = RidgeMap().fit(fa[fit_pool[:n]], fb[fit_pool[:n]])
        rows.append(row("ridge on features", f"{n} photos", ridge.transform(fa)))
    return rows


def markdown(results: dict[tuple[str, str], list[Row]], photos: int, held_out: int, command: str) -> str:
    lines = [
        "## Closed-form maps from classifier heads (ImageNet)",
        "",
        "Face recognizers ship without their training heads, so this is shown on two separately trained "
        "ImageNet-1k classifiers that share the 1,000 classes: EfficientNet-Lite0 and -Lite2 (1,280-d "
        "features each). The closed-form map A→B = W_A W_B⁺ (logits centred over the classes) is computed "
        "from the two final layers alone; ridge maps are fitted on features of N unlabelled LFW photos. "
        f"Top-1: B's head on A's mapped features, on the {photos} labelled ImageNet photos foolbox ships; "
        f"agreement and cosine on {held_out:,} other LFW photos.",
        "",
        f"    {command}",
        "",
    ]
    for (a, b), rows in results.items():
        lines += [
            f"### {a} → {b}",
            "",
            "| features through B's head | fitted on | top-1 on labelled (%) | agrees with B's own top-1 (%) "
            "| agrees with A's own top-1 (%) | cosine to B's features |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            cosine = "-" if np.isnan(r.cosine) else f"{r.cosine:.3f}"
            lines.append(
                f"| {r.name} | {r.fitted_on} | {r.top1 * 100:.0f} | {r.agree_b * 100:.1f} "
                f"| {r.agree_a * 100:.1f} | {cosine} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--classifiers", type=Path, default=ROOT / ".cache" / "imagenet")
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "interchangeability.md")
    args = parser.parse_args()
    prepare = ROOT / "scripts" / "imagenet_classifiers.py"
    subprocess.run([sys.executable, str(prepare), "--out", str(args.classifiers)], check=True)
    models = {name: args.classifiers / f"{name}.onnx" for name in MODELS}
    with (args.classifiers / "photos.csv").open() as f:
        labelled = [(args.classifiers / "photos" / name, int(label)) for name, label in csv.reader(f)]
    lfw = sorted(args.lfw.glob("*/*.jpg"))
    unlabelled = [
        lfw[i] for i in np.random.default_rng(0).permutation(len(lfw))[: max(FIT_SIZES) + args.held_out]
    ]
    photos = [p for p, _ in labelled] + unlabelled
    labels = np.array([label for _, label in labelled])
    data = {}
    for name, path in models.items():
        features, logits = run_model(path, name, photos)
        data[name] = {"features": features, "logits": logits}
        top1 = np.mean(logits[: len(labels)].argmax(axis=1) == labels)
        print(f"{name}: top-1 {top1:.2f} on the labelled photos")
    names = list(MODELS)
    with tempfile.TemporaryDirectory() as work:
        results = {
            (a, b): study(a, b, models, data, labels, Path(work))
            for a, b in ((names[0], names[1]), (names[1], names[0]))
        }
    text = markdown(results, len(labels), args.held_out, "python benchmarks/heads_imagenet.py")
    print(text)
    if args.report:
        upsert_section(args.report, "classifier-heads", text)
        print(f"wrote the classifier-heads section of {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
