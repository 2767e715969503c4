"""The LFW "View 2" protocol file: 10 folds of 300 matched and 300 mismatched pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    left: str  # image path relative to the LFW root, e.g. "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    right: str
    same: bool
    fold: int


def image_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse pairs.txt; the header gives the fold count and pairs per class per fold."""
    lines = path.read_text().splitlines()
    folds, per_class = (int(v) for v in lines[0].split())
    pairs: list[Pair] = []
    for index, line in enumerate(lines[1:]):
        fields = line.split()
        if not fields:
            continue
        fold = index // (2 * per_class)
        if len(fields) == 3:
            name, a, b = fields
            pairs.append(Pair(image_path(name, int(a)), image_path(name, int(b)), True, fold))
        elif len(fields) == 4:
            name_a, a, name_b, b = fields
            pairs.append(Pair(image_path(name_a, int(a)), image_path(name_b, int(b)), False, fold))
        else:
            raise ValueError(f"{path}:{index + 2}: expected 3 or 4 fields, got {len(fields)}")
    if len(pairs) != folds * 2 * per_class:
        raise ValueError(f"{path}: header promises {folds * 2 * per_class} pairs, found {len(pairs)}")
    return pairs


def pair_images(pairs: list[Pair]) -> list[str]:
    """Every image that some pair uses, sorted."""
    return sorted({p.left for p in pairs} | {p.right for p in pairs})
