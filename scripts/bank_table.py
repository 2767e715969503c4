"""Print the table of docs/mapping-bank.md "The maps as shipped" from the map files themselves.

Everything comes from each file's metadata (method, selection, provenance, cross-fitted quality and
calibration) and its size on disk, so the documented table is what ships.

    python scripts/bank_table.py [--bank mappings]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facebridge.mapping.mapfile import MAP_SUFFIX, MapMetadata, load_map

ROOT = Path(__file__).resolve().parents[1]


def populations_seen(meta: MapMetadata) -> str:
    seen = meta.provenance.populations
    if not seen:
        return meta.provenance.dataset
    return ", ".join(p.name + ("" if p.identities is not None else " (unlabelled)") for p in seen)


def row(path: Path) -> str:
    tensors = load_map(path)
    meta = tensors.meta
    method = meta.method + (f" (h={tensors.residual.hidden})" if tensors.residual is not None else "")
    selection = (meta.provenance.selection or "").rsplit(": ", 1)[-1]
    cells = [meta.id, method, populations_seen(meta), selection, f"{meta.provenance.images:,}"]
    quality, calibration = meta.quality, meta.calibration
    cells += [
        f"{quality.mean_cosine:.4f}" if quality.mean_cosine is not None else "",
        f"{quality.r2:.4f}" if quality.r2 is not None else "",
        f"{100 * quality.accuracy_cross:.2f}" if quality.accuracy_cross is not None else "",
    ]
    if calibration is not None:
        point = calibration.cross.thresholds["far_1e-3"]
        interval = point.far_interval
        measured = f"{point.far:.2e}" + (f" [{interval[0]:.1e}, {interval[1]:.1e}]" if interval else "")
        far_range = f"[{point.far_range[0]:.1e}, {point.far_range[1]:.1e}]" if point.far_range else ""
        cells += [f"{point.threshold:.4f}", measured, far_range]
    else:
        cells += ["", "", ""]
    cells.append(f"{path.stat().st_size / 1000:,.0f}")
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", type=Path, default=ROOT / "mappings")
    args = parser.parse_args()
    print(
        "| map | method | populations seen | selection (validation: accuracy + TAR@1e-3) | fitting rows "
        "| mean cosine | R² | cross acc | far_1e-3 threshold | FAR measured [95% CI] | far_range | file kB |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|---|---:|")
    for path in sorted(args.bank.glob(f"*{MAP_SUFFIX}")):
        print(row(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
