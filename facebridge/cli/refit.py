"""`facebridge refit`: refit a map on the deployment's recorded pairs, write it only if it is better.

    facebridge refit --source arcface-mbf128 --target sirius-mbf192 [--pairs DSN] [--base lfw --augment flip]

The pairs come from the store `POST /pairs` and `POST /embed` with `record` fill (FACEBRIDGE_PAIRS_DB or
FACEBRIDGE_PAIRS_DSN, or --pairs); the base data from embedding caches (facebridge embed-dataset).
Before/after is printed for the deployment subjects held out of the refit; the map file is replaced only
when the refit is better there (or with --force), and a running service picks it up on
`POST /admin/reload-mappings` or SIGHUP.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.cli.common import add_settings_options, check_methods, needs_onnxruntime, settings_from

if TYPE_CHECKING:
    from facebridge.config import Settings
    from facebridge.evaluation.population import Population
    from facebridge.mapping.refit import RefitPlan, RefitResult


def _base_population(args: argparse.Namespace, settings: Settings, models: list[str]) -> Population | None:
    from facebridge.evaluation.population import load_population
    from facebridge.mapping.bank_fit import merge

    if not args.base:
        return None
    parts = [load_population(settings.cache_dir, name, models, args.augment) for name in args.base]
    return merge(parts) if len(parts) > 1 else parts[0]


def _deployment(args: argparse.Namespace, settings: Settings, pins: tuple[str, str]) -> Population:
    """The recorded pairs of the two models, keeping only rows made by the pinned weights."""
    from facebridge.mapping.refit import deployment_population
    from facebridge.pairs.migrations import PairStoreError
    from facebridge.pairs.store import open_store

    try:
        store = open_store(args.pairs or settings)
    except PairStoreError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        pairs = store.read(args.source, args.target)
    finally:
        store.close()
    current = (pairs.source_sha256 == pins[0]) & (pairs.target_sha256 == pins[1])
    if not current.all():
        print(
            f"skipping {int((~current).sum())} of {len(pairs)} pairs recorded with other weights than the "
            "pinned ones (a model file changed since)",
            file=sys.stderr,
        )
    return deployment_population(
        pairs.subjects[current], args.source, pairs.source[current], args.target, pairs.target[current]
    )


@needs_onnxruntime  # the deployment population's code path imports the vision stack
def cmd_refit(args: argparse.Namespace) -> int:
    from facebridge.mapping.bank import MappingBank
    from facebridge.mapping.mapfile import SpaceRef, map_filename, save_map
    from facebridge.mapping.refit import RefitPlan, format_result, refit

    check_methods(args.method)
    settings = settings_from(args)
    manifest = settings.load_manifest()
    bank = MappingBank.load(settings.mappings_dir, manifest)
    refs = []
    for model in (args.source, args.target):
        space = bank.spaces.get(model)
        entry = manifest.get(model)
        if space is None and (entry is None or entry.dim is None or entry.sha256 is None):
            print(f"error: no space or pinned manifest entry for {model}", file=sys.stderr)
            return 2
        refs.append(space or SpaceRef(model=model, dim=entry.dim, sha256=entry.sha256))  # type: ignore[union-attr,arg-type]
    deployment = _deployment(args, settings, (refs[0].sha256, refs[1].sha256))
    if len(deployment) == 0:
        print(f"error: no recorded pairs of {args.source} and {args.target}", file=sys.stderr)
        return 2
    current = bank.maps.get((args.source, args.target))
    plan = RefitPlan(
        methods=tuple(args.method or ("ridge", "residual-mlp")),
        validation=args.validation,
        heldout=args.heldout,
        base_augmentations=tuple(args.augment),
        seed=args.seed,
    )
    try:
        result = refit(
            deployment,
            refs[0],
            refs[1],
            base=_base_population(args, settings, [args.source, args.target]),
            current=current,
            plan=plan,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_result(result, args.source, args.target))
    if args.dry_run or not (result.improved or args.force):
        print(
            "map not written" + (" (--dry-run)" if args.dry_run else ": the current map is as good or better")
        )
        if not args.dry_run:
            _record_refit(args, settings, result, None)
        return 0
    out = args.out or settings.mappings_dir
    if not os.access(out, os.W_OK):
        print(
            f"error: {out} is not writable: pass --out (and serve it with FACEBRIDGE_MAPPINGS_DIR)",
            file=sys.stderr,
        )
        return 2
    path = out / map_filename(args.source, args.target)
    fitted = result.fitted
    confidence = fitted.confidence
    save_map(
        path,
        fitted.meta,
        fitted.weight,
        fitted.bias,
        fitted.residual,
        confidence.tensors() if confidence is not None else None,
        confidence.info("the refit's held-out deployment subjects") if confidence is not None else None,
    )
    print(f"wrote {path}; a running service loads it on POST /admin/reload-mappings or SIGHUP")
    _record_refit(args, settings, result, path)
    _calibrate_refitted(args, settings, out, deployment, plan)
    return 0


def _record_refit(
    args: argparse.Namespace, settings: Settings, result: RefitResult, written: Path | None
) -> None:
    """One line of the refit history (MAPPINGS/refits/history.jsonl, read by GET /refits): before/after
    on the held-out subjects and whether the map was written; skipped where the folder is read-only."""
    from facebridge.mapping.mapfile import load_map
    from facebridge.refit_history import append_record, refit_record

    out: Path = args.out or settings.mappings_dir
    if not os.access(out, os.W_OK):
        return
    digest = load_map(written).meta.tensor_sha256 if written is not None else None
    record = refit_record(result, args.source, args.target, out, written, digest)
    print(f"refit recorded in {append_record(out, record)}")


def _calibrate_refitted(
    args: argparse.Namespace, settings: Settings, out: Path, deployment: Population, plan: RefitPlan
) -> None:
    """Thresholds for the new map measured on the held-out deployment subjects, raw and AS-norm, into
    the deployment calibration file: the shipped normalised entry is pinned to the old map's tensors,
    so without this a refitted map would be judged on raw thresholds only."""
    from facebridge.cohort.calibration_set import load_calibration_set, save_calibration_set
    from facebridge.cohort.deployment import calibrate_population, merge_sets
    from facebridge.mapping.bank import MappingBank
    from facebridge.mapping.refit import subject_sides

    target_file = args.calibration_out or settings.calibration_file
    if target_file is None:
        print(
            "no deployment calibration file (--calibration-out or FACEBRIDGE_CALIBRATION_FILE): the new map "
            "is judged on the raw thresholds above; with a cohort, pass one to get normalised thresholds"
        )
        return
    bank = MappingBank.load(out, settings.load_manifest())
    held = deployment.subset(subject_sides(deployment.identities, plan) == 2)
    try:
        fresh = calibrate_population(bank, held, [args.source, args.target], seed=args.seed)
    except ValueError as error:
        print(f"no normalised calibration for the new map: {error}")
        return
    sets = [fresh]
    if target_file.exists():
        sets.insert(0, load_calibration_set(target_file))
    merged = merge_sets(sets)
    merged.entries.update(fresh.entries)  # the new map's entries win over older ones
    written = save_calibration_set(target_file, merged)
    entry = fresh.entries[f"{args.source}->{args.target}"]
    assert entry.normalized is not None and entry.raw is not None
    people = len(set(held.identities.tolist()))
    print(
        f"thresholds of the new map on {people} held-out subjects written to {written}: "
        f"far_1e-3 AS-norm {entry.normalized.thresholds['far_1e-3'].threshold:.4f} (applied where a cohort "
        f"serves it), raw {entry.raw.thresholds['far_1e-3'].threshold:.4f}"
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = sub.add_parser(
        "refit",
        help="refit a map on the deployment's recorded pairs (held-out subjects decide whether it is kept)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument(
        "--pairs", help="pair store: a SQLite file or a postgresql:// DSN (default: the service's settings)"
    )
    parser.add_argument(
        "--base", action="append", default=[], help="embedding-cache dataset name(s) to fit with (e.g. lfw)"
    )
    parser.add_argument("--augment", action="append", default=[], help="base variants (flip, jitter, ...)")
    parser.add_argument(
        "--method", action="append", help="default: ridge and residual-mlp, chosen on validation"
    )
    parser.add_argument("--validation", type=float, default=0.2, help="share of deployment subjects")
    parser.add_argument("--heldout", type=float, default=0.2, help="share of deployment subjects")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="mappings folder to write into (default: the service's)")
    parser.add_argument("--force", action="store_true", help="write the map even if it is not better")
    parser.add_argument("--dry-run", action="store_true", help="print before/after, write nothing")
    parser.add_argument(
        "--calibration-out",
        type=Path,
        help="deployment calibration file to add the new map's raw and AS-norm thresholds to "
        "(default: FACEBRIDGE_CALIBRATION_FILE)",
    )
    add_settings_options(parser)
    parser.set_defaults(func=cmd_refit)
