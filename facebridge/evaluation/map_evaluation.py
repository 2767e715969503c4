"""Per-map evaluation sidecars: what the operator console draws for a map (DET curves, histograms).

`evaluate_map` scores one loaded map on labelled populations (embedding caches): every genuine pair and
a seeded sample of impostor pairs, native (both photos embedded by the target model) and cross (the
source model's template translated, against the target model's own template, both orders). The scores
are summarised as histograms on shared bins and a DET curve of about a hundred points, so a file stays
small (tens of kB) and the service serves it as it is (`load_evaluation`).

A population the map was fitted on is marked `in_fit`: its cross curve is optimistic (the map saw
those photos), the others are people it never saw.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from facebridge import __version__
from facebridge.evaluation.metrics import eer
from facebridge.evaluation.population import PairSample, Population, tar_at
from facebridge.mapping.bank import LoadedMap
from facebridge.mapping.calibration import OPERATING_POINTS
from facebridge.schemas.evaluation import (
    Bins,
    DetPoint,
    MapEvaluation,
    PopulationEvaluation,
    ScoreSet,
)

BINS = Bins(low=-0.5, high=1.0, count=75)
FMR_POINTS = 72  # DET points spaced evenly in log FMR, plus FNMR_POINTS in log FNMR
FNMR_POINTS = 36
PAIR_BLOCK = 65_536  # pairs gathered at once: bounds the temporaries to 2 x block x dim floats
METHOD = (
    "every genuine pair and a seeded sample of impostor pairs of the population's photos with a face found "
    "by every model; native: both photos embedded by the target model; cross: the source model's template "
    "translated by the map against the target model's own template of the other photo, both orders"
)


def histogram(scores: np.ndarray, bins: Bins = BINS) -> list[int]:
    """Counts on the shared bins; scores outside the range land in the first or last bin."""
    width = (bins.high - bins.low) / bins.count
    index = np.clip(np.floor((scores - bins.low) / width).astype(np.int64), 0, bins.count - 1)
    return np.bincount(index, minlength=bins.count).astype(int).tolist()


def det_points(genuine: np.ndarray, impostor: np.ndarray) -> list[DetPoint]:
    """A DET curve sampled where it matters on log axes: thresholds at log-spaced impostor and genuine
    quantiles, thresholds descending (FMR rising from its smallest measurable value)."""
    imp = np.sort(impostor)
    gen = np.sort(genuine)
    n_imp, n_gen = len(imp), len(gen)
    fmrs = np.logspace(np.log10(1.0 / n_imp), 0.0, FMR_POINTS)
    # the threshold that accepts about fmr * n_imp impostors: the k-th largest impostor score
    by_fmr = imp[np.clip(n_imp - np.ceil(fmrs * n_imp).astype(np.int64), 0, n_imp - 1)]
    fnmrs = np.logspace(np.log10(1.0 / n_gen), 0.0, FNMR_POINTS)
    by_fnmr = gen[np.clip(np.ceil(fnmrs * n_gen).astype(np.int64) - 1, 0, n_gen - 1)]
    thresholds = np.unique(np.r_[by_fmr, by_fnmr])[::-1]
    fmr = (n_imp - np.searchsorted(imp, thresholds, side="left")) / n_imp
    fnmr = np.searchsorted(gen, thresholds, side="left") / n_gen
    return [
        DetPoint(threshold=round(float(t), 5), fmr=float(f"{a:.5g}"), fnmr=float(f"{b:.5g}"))
        for t, a, b in zip(thresholds, fmr, fnmr, strict=True)
    ]


def score_set(scores: np.ndarray, genuine: np.ndarray) -> ScoreSet:
    gen, imp = scores[genuine], scores[~genuine]
    return ScoreSet(
        genuine_pairs=len(gen),
        impostor_pairs=len(imp),
        genuine=histogram(gen),
        impostor=histogram(imp),
        det=det_points(gen, imp),
        eer=round(eer(scores, genuine), 6),
        tar_at_far={name: round(tar_at(gen, imp, far), 6) for name, far in OPERATING_POINTS.items()},
    )


def in_fit(loaded: LoadedMap, population: str) -> bool:
    """Was the map fitted on photos of `population`? (its provenance names the datasets it saw)"""
    provenance = loaded.meta.provenance
    seen = set(provenance.dataset.split("+")) | {p.name for p in provenance.populations}
    return population in seen


def rowdot(a: np.ndarray, b: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """`a[left[k]] . b[right[k]]` for every k, gathered in blocks (a sample of pairs is far smaller than
    the all-pairs Gram matrix, so gathering costs less than the products of every pair)."""
    out = np.empty(len(left), np.float32)
    for start in range(0, len(left), PAIR_BLOCK):
        stop = start + PAIR_BLOCK
        out[start:stop] = np.einsum("ij,ij->i", a[left[start:stop]], b[right[start:stop]])
    return out


def native_scores(embeddings: np.ndarray, pairs: PairSample) -> ScoreSet:
    """Both photos embedded by one model (symmetric: each pair once)."""
    return score_set(rowdot(embeddings, embeddings, pairs.left, pairs.right), pairs.genuine)


def evaluate_population(
    loaded: LoadedMap, population: Population, pairs: PairSample, native: ScoreSet | None = None
) -> PopulationEvaluation:
    """One population: the target model's native curves (`native` when already scored for another map
    into the same target) and the map's cross curves, translated source against native target."""
    source, target = loaded.meta.source.model, loaded.meta.target.model
    native_target = population.clean[target]
    mapped = loaded.apply(np.ascontiguousarray(population.clean[source], dtype=np.float32))
    cross = np.r_[
        rowdot(mapped, native_target, pairs.left, pairs.right),
        rowdot(mapped, native_target, pairs.right, pairs.left),
    ]
    return PopulationEvaluation(
        name=population.name,
        in_fit=in_fit(loaded, population.name),
        images=len(population),
        identities=len(np.unique(population.identities)),
        mean_cosine=round(float(np.mean(np.einsum("ij,ij->i", mapped, native_target))), 6),
        native=native if native is not None else native_scores(native_target, pairs),
        cross=score_set(cross, np.r_[pairs.genuine, pairs.genuine]),
    )


def evaluate_map(
    loaded: LoadedMap,
    populations: Sequence[tuple[Population, PairSample]],
    native: dict[tuple[str, str], ScoreSet] | None = None,
) -> MapEvaluation:
    """The map on every population; `native` caches native score sets by (population, model)."""
    meta = loaded.meta
    native = native if native is not None else {}
    results = []
    for population, pairs in populations:
        key = (population.name, meta.target.model)
        result = evaluate_population(loaded, population, pairs, native.get(key))
        native[key] = result.native
        results.append(result)
    return MapEvaluation(
        map=meta.id,
        source=meta.source,
        target=meta.target,
        tensor_sha256=meta.tensor_sha256,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        code_version=__version__,
        method=METHOD,
        bins=BINS,
        populations=results,
    )
