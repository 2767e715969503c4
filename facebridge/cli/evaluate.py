"""`facebridge evaluate-native`, `evaluate` and `report`: the LFW and out-of-population studies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facebridge.cli.common import (
    add_settings_options,
    check_methods,
    lfw_caches,
    needs_onnxruntime,
    open_pipeline,
    settings_from,
)


@needs_onnxruntime
def cmd_evaluate_native(args: argparse.Namespace) -> int:
    from facebridge.embedding_cache import build_cache
    from facebridge.evaluation.lfw import pair_images, read_pairs
    from facebridge.evaluation.native import default_cache_path, evaluate_native, format_report

    settings = settings_from(args)
    pairs = read_pairs(args.lfw / "pairs.txt")
    images = pair_images(pairs)
    pipeline = open_pipeline(settings, args.model, args.detector)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for model_id in args.model:
        out = default_cache_path(settings.cache_dir, model_id)
        cache = build_cache(pipeline, args.lfw, model_id, out, args.detector, only=images)
        misses = int((~cache.detected[[cache.index()[p] for p in images]]).sum())
        report = evaluate_native(cache, pairs)
        entry = pipeline.registry.manifest.get(model_id)
        reference = entry.lfw_reference if entry is not None else None
        lines.append(format_report(model_id, report, reference, misses))
        print(lines[-1], flush=True)
    return 0


def _single_method(args: argparse.Namespace) -> None:
    """The LFW-fold protocol studies one method; --method may be repeated only for --protocol population."""
    methods = args.method or ["ridge"]
    if len(methods) > 1:
        raise SystemExit("--protocol lfw-folds takes one --method")
    args.method = methods[0]
    if args.lfw is None:
        raise SystemExit("--protocol lfw-folds needs --lfw")


@needs_onnxruntime
def cmd_evaluate(args: argparse.Namespace) -> int:
    from facebridge.cli.population import POPULATION, evaluate_population
    from facebridge.evaluation.interchange import learning_curve, paired_lfw, study_pair
    from facebridge.evaluation.report import CURVE_SIZES, fitter_for

    check_methods(args.method)
    if args.protocol == POPULATION:
        args.method = args.method or ["ridge", "residual-mlp"]
        return evaluate_population(args)
    _single_method(args)

    caches, pairs = lfw_caches(args, [args.source, args.target])
    data = paired_lfw(caches[args.source], caches[args.target], pairs)
    study = study_pair(data, fitter_for(args.method), args.method, pairing=args.pairing)
    names = {
        "native_a": f"native {args.source}",
        "native_b": f"native {args.target}",
        "mapped": f"mapped {args.source}→{args.target}",
        "cross": f"cross {args.source}→{args.target}",
        "reverse_mapped": f"mapped {args.target}→{args.source}",
        "reverse_cross": f"cross {args.target}→{args.source}",
        "fused": "cross with both maps",
    }
    print(f"method {args.method}, fitting pairs {args.pairing}; LFW 10-fold, maps fitted per fold")
    print("| comparison | accuracy (%) | AUC | EER (%) | TAR@FAR 1e-3 (%) | TAR@FAR 1e-4 (%) |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in names.items():
        m = study.metrics[key]
        print(
            f"| {label} | {m.accuracy * 100:.2f} ± {m.accuracy_std * 100:.2f} | {m.auc:.4f} "
            f"| {m.eer * 100:.2f} | {m.tar_far_1e3 * 100:.2f} | {m.tar_far_1e4 * 100:.2f} |"
        )
    print(
        f"R² {args.source}→{args.target} {study.r2:.3f}, {args.target}→{args.source} {study.r2_reverse:.3f}"
    )
    if args.learning_curve:
        print("| fitting pairs | mapped (%) | cross (%) |")
        print("|---:|---:|---:|")
        for point in learning_curve(data, fitter_for(args.method), CURVE_SIZES, pairing=args.pairing):
            print(f"| {point.fitting_pairs} | {point.mapped * 100:.2f} | {point.cross * 100:.2f} |")
    return 0


@needs_onnxruntime
def cmd_report(args: argparse.Namespace) -> int:
    from facebridge.cli.population import POPULATION, report_population
    from facebridge.evaluation.report import run_study, write_report

    check_methods(args.method)
    if args.protocol == POPULATION:
        args.method = args.method or ["ridge", "residual-mlp"]
        return report_population(args)
    _single_method(args)

    caches, pairs = lfw_caches(args, args.model)
    compare = [tuple(spec.split(":", 1)) for spec in args.compare]
    study = run_study(caches, pairs, args.method, compare_pairs=compare)
    command = "facebridge " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(study, args.out, command)
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    from facebridge.cli.population import add_population_arguments

    native = sub.add_parser(
        "evaluate-native", help="LFW 10-fold verification of recognizers in their own space"
    )
    native.add_argument("--model", action="append", required=True, help="repeat for several models")
    native.add_argument("--lfw", type=Path, required=True, help="LFW root holding pairs.txt")
    native.add_argument("--detector", default="yunet")
    add_settings_options(native)
    native.set_defaults(func=cmd_evaluate_native)
    evaluate = sub.add_parser(
        "evaluate", help="LFW interchangeability of two models: maps fitted per fold, native/mapped/cross"
    )
    evaluate.add_argument("--source", required=True)
    evaluate.add_argument("--target", required=True)
    evaluate.add_argument("--lfw", type=Path, help="LFW root holding pairs.txt (--protocol lfw-folds)")
    evaluate.add_argument(
        "--method",
        action="append",
        help="default ridge; with --protocol population repeat to choose per pair on validation "
        "(default ridge and residual-mlp)",
    )
    evaluate.add_argument("--pairing", default="same-image", choices=["same-image", "centroid"])
    evaluate.add_argument("--learning-curve", action="store_true")
    evaluate.add_argument("--detector", default="yunet")
    add_population_arguments(evaluate)
    add_settings_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    report = sub.add_parser("report", help="the interchangeability study of several models, as Markdown")
    report.add_argument("--lfw", type=Path, help="LFW root holding pairs.txt (--protocol lfw-folds)")
    report.add_argument("--model", action="append", required=True, help="repeat for several models")
    report.add_argument("--method", action="append", help="as for evaluate (default ridge)")
    report.add_argument(
        "--compare", action="append", default=[], metavar="A:B", help="pairs for method comparison and curves"
    )
    report.add_argument("--out", type=Path, default=Path("docs/interchangeability.md"))
    report.add_argument("--command-line", help=argparse.SUPPRESS)
    report.add_argument("--detector", default="yunet")
    add_population_arguments(report)
    add_settings_options(report)
    report.set_defaults(func=cmd_report)
