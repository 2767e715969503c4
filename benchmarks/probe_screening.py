"""The model probe's time with and without the screening margin, side by side, same photos.

`facebridge models add` (facebridge.vision.model_probe.propose_entry) screens every candidate
preprocessing on ~30 people, then scores the best few again on the whole sample. Without a margin the
`keep` best always go on, even when they separate people at 55% where the best does 98%; with
`FINAL_MARGIN` only those within it of the best do. Each recognizer is probed both ways on the same
LFW sample (120 people, at most 5 photos each, detected once), alternating which goes first, and the
table gives the probe's time, how many candidates reached the full round and what each way chose.

    python -m benchmarks.probe_screening [--model ID ...] [--people 120] [--per-person 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facebridge.config import Settings
from facebridge.vision.model_probe import FINAL_MARGIN, default_detector, propose_entry, sample_photos
from tests.conftest import MODELS_DIR, RECOGNIZERS

ROOT = Path(__file__).resolve().parents[1]
NO_MARGIN = 2.0  # wider than any two separation scores can differ: the old rule, the `keep` best go on


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--model", action="append", dest="models", help="recognizer id (repeatable)")
    parser.add_argument("--people", type=int, default=120)
    parser.add_argument("--per-person", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(models_dir=MODELS_DIR, providers="cpu")
    manifest = settings.load_manifest()
    photos = sample_photos(args.photos, default_detector(settings), args.people, args.per_person)
    print(f"{len(photos)} photos of {len(set(photos.identities.tolist()))} people in {args.photos.name}\n")
    print(
        "| model | no margin: probe s | full-round candidates | with margin: probe s "
        "| full-round candidates | time ratio | same choice |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    totals = [0.0, 0.0]
    for index, model_id in enumerate(args.models or RECOGNIZERS):
        entry = manifest.get(model_id)
        assert entry is not None, model_id
        runs = {}
        order = (NO_MARGIN, FINAL_MARGIN) if index % 2 == 0 else (FINAL_MARGIN, NO_MARGIN)
        for margin in order:
            start = time.perf_counter()
            path = MODELS_DIR / entry.file
            result = propose_entry(
                path, model_id, None, settings=settings, photos=photos, final_margin=margin
            )
            finals = sum(row.stage == "full" for row in result.table)
            runs[margin] = (time.perf_counter() - start, finals, result.chosen.candidate.label)
        (old_s, old_n, old_pick), (new_s, new_n, new_pick) = runs[NO_MARGIN], runs[FINAL_MARGIN]
        totals[0] += old_s
        totals[1] += new_s
        print(
            f"| {model_id} | {old_s:.1f} | {old_n} | {new_s:.1f} | {new_n} | {new_s / old_s:.2f}x | "
            f"{'yes' if old_pick == new_pick else f'no: {old_pick} / {new_pick}'} |"
        )
    print(f"| all | {totals[0]:.1f} | | {totals[1]:.1f} | | {totals[1] / totals[0]:.2f}x | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
