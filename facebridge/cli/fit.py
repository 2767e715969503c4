"""`facebridge fit` and `calibrate`: where a map (or a space's thresholds) is fitted from embeddings."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facebridge.cli.common import add_settings_options, settings_from, space_for

if TYPE_CHECKING:
    from facebridge.mapping.fitting import Selection

# what `--method` offers: every method a map file can hold (facebridge.mapping.methods.SHIPPABLE, named here
# so that --help imports no numpy; tests/test_fit_real.py checks the two agree) and the bank's selection
AUTO = "auto"
FIT_METHODS = (
    AUTO,
    "ridge",
    "residual-mlp",
    "lowrank",
    "procrustes-std",
    "softmax",
    "affine",
    "lstsq",
    "procrustes",
)
DEFAULT_METHOD = AUTO


def cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from facebridge.embedding_cache import EmbeddingCache
    from facebridge.mapping.fitting import PairedEmbeddings, fit_map, pair_caches
    from facebridge.mapping.mapfile import save_map

    settings = settings_from(args)
    if args.from_heads:
        return _fit_from_heads(args, settings)
    method = args.method or ("ridge" if args.alpha is not None else DEFAULT_METHOD)
    if args.alpha is not None and method != "ridge":
        print(
            f"error: --alpha fixes the ridge penalty; it does not apply to --method {method}", file=sys.stderr
        )
        return 2
    if args.source_cache and args.target_cache:
        data = pair_caches(
            EmbeddingCache.load(args.source_cache), EmbeddingCache.load(args.target_cache), args.dataset
        )
    elif args.source_npy and args.target_npy and args.source_model and args.target_model:
        source, target = np.load(args.source_npy), np.load(args.target_npy)
        labelled = args.labels is not None
        identities = np.load(args.labels).astype(str) if labelled else np.arange(len(source)).astype(str)
        data = PairedEmbeddings(
            source,
            target,
            identities,
            space_for(settings, args.source_model, args.source_sha256, source.shape[1]),
            space_for(settings, args.target_model, args.target_sha256, target.shape[1]),
            args.dataset,
            labelled,
        )
    else:
        print(
            "error: give --source-cache and --target-cache, or --source-npy, --target-npy, "
            "--source-model and --target-model",
            file=sys.stderr,
        )
        return 2
    params = {"alphas": (args.alpha,)} if args.alpha is not None else {}
    fitted = fit_map(data, method, params, args.heldout, args.seed)
    path = map_output(args.out, data.source_space.model, data.target_space.model)
    meta = save_map(path, fitted.meta, fitted.weight, fitted.bias, fitted.residual, fitted.confidence_tensors)
    q = meta.quality
    print(f"{path}: {meta.id} method {meta.method} {meta.fitted or ''}")
    if fitted.selection is not None:
        print_selection(fitted.selection)
    print(
        f"  held-out: {meta.provenance.heldout_identities} identities, "
        f"{meta.provenance.heldout_images} images; "
        f"mean cosine {q.mean_cosine:.4f}, R2 {q.r2:.4f}"
    )
    if q.accuracy_cross is not None:
        print(
            f"  accuracy: source native {q.accuracy_source_native:.4f}, "
            f"target native {q.accuracy_target_native:.4f}, "
            f"mapped {q.accuracy_mapped:.4f}, cross {q.accuracy_cross:.4f} ({q.verification_pairs} pairs)"
        )
    return 0


def print_selection(selection: Selection) -> None:
    """Every candidate `--method auto` scored on the validation identities, and which one won."""
    from facebridge.mapping.fitting import SELECTION_FRACTION

    print(
        f"  method chosen as the bank chooses: {selection.criterion} on {selection.validation} "
        f"({SELECTION_FRACTION:.0%} of the fitting identities, held out of every candidate's fit; the "
        "held-out identities below took no part):"
    )
    for c in selection.candidates:
        verification = (
            f"accuracy {c.accuracy:.4f}, TAR@FAR 1e-3 {c.tar_far_1e3:.4f}, "
            if c.accuracy is not None and c.tar_far_1e3 is not None
            else ""
        )
        chosen = "  <- chosen" if c.method == selection.method else ""
        print(
            f"    {c.method:<14} {verification}mean cosine {c.mean_cosine:.4f}, score {c.score:.4f}{chosen}"
        )


def is_map_file(out: Path) -> bool:
    """Whether --out names a map file (FILE.safetensors, not an existing folder) rather than a folder."""
    return out.suffix == ".safetensors" and not out.is_dir()


def map_output(out: Path, source: str, target: str) -> Path:
    """--out as given when it names a .safetensors file, else the conventional file name in that folder."""
    from facebridge.mapping.mapfile import map_filename

    if is_map_file(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / map_filename(source, target)


def _fit_from_heads(args: argparse.Namespace, settings: Any) -> int:
    """`fit --from-heads`, whose writer names the file in a folder: a FILE.safetensors --out gets exactly
    that file (written in a scratch folder beside it, then moved into place)."""
    from facebridge.cli.studies import fit_from_heads

    if not is_map_file(args.out):
        return int(fit_from_heads(args, settings))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".fit-") as scratch:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = int(fit_from_heads(argparse.Namespace(**{**vars(args), "out": Path(scratch)}), settings))
        written = sorted(Path(scratch).glob("*.safetensors"))
        if code == 0 and len(written) == 1:
            os.replace(written[0], args.out)
            print(printed.getvalue().replace(str(written[0]), str(args.out)), end="")
        else:
            print(printed.getvalue(), end="")
    return code


def cmd_calibrate_space(args: argparse.Namespace) -> int:
    """`facebridge calibrate --cache`: a space file of same-space thresholds from an embedding cache."""
    from facebridge.embedding_cache import EmbeddingCache
    from facebridge.mapping.mapfile import SPACE_SUFFIX, save_space
    from facebridge.mapping.spaces import calibrate_space

    space = calibrate_space(EmbeddingCache.load(args.cache), args.dataset, args.max_images)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{space.space.model}{SPACE_SUFFIX}"
    save_space(path, space)
    points = ", ".join(
        f"{k} {v.threshold:.4f} (TAR {v.tar:.4f})" for k, v in space.calibration.thresholds.items()
    )
    print(f"{path}: {space.images} images, {space.calibration.impostor_pairs} impostor pairs; {points}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    fit = sub.add_parser(
        "fit", help="fit a map between two spaces (held-out quality and calibration included)"
    )
    fit.add_argument(
        "--source-cache", type=Path, help="embedding cache of the source model (facebridge embed)"
    )
    fit.add_argument("--target-cache", type=Path, help="embedding cache of the target model, same images")
    fit.add_argument(
        "--from-heads",
        nargs=2,
        metavar=("HEAD_A", "HEAD_B"),
        help="closed-form map from two classifiers' final layers sharing the same classes: each a "
        "model.onnx[#node], a weights.npz (weight, bias) or weight.npy[,bias.npy]; no data needed",
    )
    fit.add_argument("--source-npy", type=Path, help="(n, d_source) source embeddings, one row per photo")
    fit.add_argument("--target-npy", type=Path, help="(n, d_target) target embeddings of the same photos")
    fit.add_argument("--labels", type=Path, help=".npy identity label per row (enables verification metrics)")
    fit.add_argument("--source-model", help="id of the source model (with --source-npy)")
    fit.add_argument("--target-model", help="id of the target model (with --target-npy)")
    fit.add_argument("--source-sha256", help="sha256 of the source weights (default: the manifest's pin)")
    fit.add_argument("--target-sha256", help="sha256 of the target weights (default: the manifest's pin)")
    fit.add_argument(
        "--method",
        choices=FIT_METHODS,
        help=f"how to fit (default {DEFAULT_METHOD}; ridge when --alpha is given). auto: choose as the "
        "shipped bank does, between ridge and residual-mlp, by accuracy + TAR at FAR 1e-3 on a "
        "validation 15%% of the fitting identities (every candidate's numbers are printed); "
        "residual-mlp: ridge plus a small ReLU MLP on its residual; lowrank, procrustes-std, softmax, "
        "affine, lstsq, procrustes: other affine maps (README, 'Methods')",
    )
    fit.add_argument(
        "--alpha", type=float, help="fixed ridge alpha instead of cross-validation (implies --method ridge)"
    )
    fit.add_argument(
        "--heldout",
        type=float,
        default=0.25,
        help="fraction of identities held out of the fit, on which quality, thresholds and the "
        "confidence predictor are measured (default 0.25)",
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="the draw of held-out (and auto's validation) identities"
    )
    fit.add_argument("--dataset", default="custom", help="name recorded in the map's provenance")
    fit.add_argument(
        "--out",
        type=Path,
        default=Path("mappings"),
        help="a folder (the map is written as SOURCE__TARGET.safetensors in it) or a .safetensors file",
    )
    add_settings_options(fit)
    fit.set_defaults(func=cmd_fit)
