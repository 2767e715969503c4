"""The fold-aware interchangeability protocol against a plain, loop-by-loop recomputation.

Real embeddings of an LFW subset under two recognizers; pairs and folds are drawn from the subset the
way pairs.txt is built (identity-disjoint folds, matched and mismatched pairs).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.interchange import FittedTransform, paired_lfw, study_pair
from facebridge.evaluation.lfw import Pair
from facebridge.evaluation.report import fitter_for, run_study, write_report
from facebridge.evaluation.sections import upsert_section
from tests.conftest import subset_pairs

SOURCE, TARGET = "arcface-mbf128", "sirius-mbf192"


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(v @ v))


def straightforward_ten_fold(scores: list[float], labels: list[bool], folds: list[int]) -> float:
    """Per fold: try every midpoint of the other folds' sorted scores, keep the first best, apply it."""
    accuracies = []
    for fold in sorted(set(folds)):
        train = [(s, y) for s, y, f in zip(scores, labels, folds, strict=True) if f != fold]
        values = sorted({s for s, _ in train})
        candidates = [
            values[0] - 1e-6,
            *[(a + b) / 2 for a, b in itertools.pairwise(values)],
            values[-1] + 1e-6,
        ]
        best, best_correct = candidates[0], -1
        for t in candidates:
            correct = sum((s >= t) == y for s, y in train)
            if correct > best_correct:
                best, best_correct = t, correct
        test = [(s, y) for s, y, f in zip(scores, labels, folds, strict=True) if f == fold]
        accuracies.append(sum((s >= best) == y for s, y in test) / len(test))
    return sum(accuracies) / len(accuracies)


@pytest.fixture(scope="module")
def pairs(subset_caches: dict[str, EmbeddingCache]) -> list[Pair]:
    return subset_pairs(subset_caches[SOURCE])


def test_protocol_matches_a_straightforward_computation(
    subset_caches: dict[str, EmbeddingCache], pairs: list[Pair]
) -> None:
    source, target = subset_caches[SOURCE], subset_caches[TARGET]
    data = paired_lfw(source, target, pairs)
    study = study_pair(data, fitter_for("affine"), "affine")

    a = {p: unit(e.astype(np.float64)) for p, e in zip(source.paths, source.embeddings, strict=True)}
    b = {p: unit(e.astype(np.float64)) for p, e in zip(target.paths, target.embeddings, strict=True)}
    fold_of = {q.split("/")[0]: p.fold for p in pairs for q in (p.left, p.right)}
    native, cross, mapped, labels, folds = [], [], [], [], []
    genuine: list[float] = []
    impostor: list[float] = []
    for fold in range(10):
        fit = [p for p in a if fold_of.get(p.split("/")[0], -1) != fold]
        design = np.array([[*a[p], 1.0] for p in fit])
        solution = np.linalg.lstsq(design, np.array([b[p] for p in fit]), rcond=None)[0]

        def mapped_of(path: str, solution: np.ndarray = solution) -> np.ndarray:
            return unit(np.array([*a[path], 1.0]) @ solution)

        for p in [p for p in pairs if p.fold == fold]:
            native.append(float(a[p.left] @ a[p.right]))
            cross.append(float(mapped_of(p.left) @ b[p.right]))
            mapped.append(float(mapped_of(p.left) @ mapped_of(p.right)))
            labels.append(p.same)
            folds.append(fold)
        tested = [p for p in a if fold_of.get(p.split("/")[0], -1) == fold]
        for i, j in itertools.permutations(tested, 2):
            score = float(mapped_of(i) @ b[j])
            (genuine if i.split("/")[0] == j.split("/")[0] else impostor).append(score)

    assert study.metrics["native_a"].accuracy == pytest.approx(
        straightforward_ten_fold(native, labels, folds)
    )
    assert study.metrics["cross"].accuracy == pytest.approx(straightforward_ten_fold(cross, labels, folds))
    assert study.metrics["mapped"].accuracy == pytest.approx(straightforward_ten_fold(mapped, labels, folds))

    # AUC of the listed pairs = probability that a genuine pair outscores an impostor pair
    pos = [s for s, y in zip(cross, labels, strict=True) if y]
    neg = [s for s, y in zip(cross, labels, strict=True) if not y]
    wins = sum(1.0 if g > i else 0.5 if g == i else 0.0 for g in pos for i in neg)
    assert study.metrics["cross"].auc == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-9)

    # TAR at FAR 1e-3 over every ordered pair of test photos: the k+1-th highest impostor sets the bar
    assert study.metrics["cross"].impostor_pairs == len(impostor)
    k = math.floor(1e-3 * len(impostor))
    bar = sorted(impostor, reverse=True)[k]
    expected_tar = sum(g > bar for g in genuine) / len(genuine)
    assert study.metrics["cross"].tar_far_1e3 == pytest.approx(expected_tar, abs=2 / len(genuine))


def test_maps_never_see_the_people_they_are_tested_on(
    subset_caches: dict[str, EmbeddingCache], pairs: list[Pair]
) -> None:
    data = paired_lfw(subset_caches[SOURCE], subset_caches[TARGET], pairs)
    seen: dict[int, set[str]] = {}

    def recording_fitter(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> FittedTransform:
        seen[len(seen)] = set(groups.astype(str))
        return fitter_for("ridge")(x, y, groups)

    study_pair(data, recording_fitter, "ridge")
    # forward maps are fitted first, one per fold in fold order
    for fold in range(10):
        tested = {p.left.split("/")[0] for p in pairs if p.fold == fold}
        assert seen[fold].isdisjoint(tested)


def test_identity_in_two_folds_is_refused(
    subset_caches: dict[str, EmbeddingCache], pairs: list[Pair]
) -> None:
    broken = [*pairs, Pair(pairs[0].left, pairs[0].right, True, (pairs[0].fold + 1) % 10)]
    with pytest.raises(ValueError, match="appears in folds"):
        paired_lfw(subset_caches[SOURCE], subset_caches[TARGET], broken)


def test_report_is_written_with_tables_and_plots(
    subset_caches: dict[str, EmbeddingCache], pairs: list[Pair], tmp_path: Path
) -> None:
    caches = {m: subset_caches[m] for m in (SOURCE, TARGET)}
    study = run_study(
        caches,
        pairs,
        "ridge",
        compare_pairs=[(SOURCE, TARGET)],
        compare_methods=["affine", "procrustes"],
        curve_sizes=[50, 200],
        progress=False,
        log=lambda _: None,
    )
    out = tmp_path / "report.md"
    write_report(study, out, "facebridge report ...")
    text = out.read_text()
    for heading in ("## Native accuracy", "## Every ordered pair", "## Asymmetry", "## Method comparison"):
        assert heading in text
    assert f"| {SOURCE} → {TARGET} | procrustes |" in text
    for figure in ("cross-heatmap.png", "learning-curves.png", "roc.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 10_000
    # the reversed row is the same study seen from the other side
    forward, backward = study.pairs[(SOURCE, TARGET)], study.pairs[(TARGET, SOURCE)]
    assert backward.metrics["cross"] == forward.metrics["reverse_cross"]
    # a section another study wrote survives the report being generated again, once
    upsert_section(out, "polytope-hub", "## Polytope hub space\n\n| a table |")
    write_report(study, out, "facebridge report ... again")
    text = out.read_text()
    assert (
        "again" in text and text.count("## Polytope hub space") == 1 and text.count("## Native accuracy") == 1
    )
