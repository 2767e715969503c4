"""Open-set identification (1:N), as identity systems search galleries: rank-1 rate and FNIR at FPIR.

Half of the people (a seeded draw) are enrolled with one photo each; every other photo of an enrolled
person is a mated search, every photo of a person not enrolled a non-mated one. A search returns its
best-scoring gallery entry. FPIR at a threshold is the share of non-mated searches whose best score
reaches it; FNIR is the share of mated searches whose mate is not the best entry at or above it (NIST
FRVT part 2's definitions at rank 1). A gallery migrated from model A into B's space is searched with
native B probes and compared with B's own gallery of the same photos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facebridge.cohort.asnorm import DEFAULT_BLEND, CohortScale, SideStats, normalized_scores

# how a block of raw search scores (probe rows `chunk` x every gallery entry) becomes decision scores
Scoring = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OpenSetSplit:
    """Rows of a population: one gallery photo per enrolled person, mated and non-mated searches."""

    gallery: np.ndarray  # row indices, one per enrolled person
    mated: np.ndarray  # row indices of searches whose person is enrolled
    non_mated: np.ndarray  # row indices of searches whose person is not


def open_set_split(identities: np.ndarray, seed: int = 0) -> OpenSetSplit:
    """Half of the people enrolled (each with its first photo), the rest of the photos searched."""
    people = np.unique(identities)
    enrolled = set(np.random.default_rng(seed).permutation(people)[: len(people) // 2].tolist())
    gallery, mated, non_mated, seen = [], [], [], set()
    for row, person in enumerate(identities.tolist()):
        if person not in enrolled:
            non_mated.append(row)
        elif person in seen:
            mated.append(row)
        else:
            seen.add(person)
            gallery.append(row)
    return OpenSetSplit(np.array(gallery, int), np.array(mated, int), np.array(non_mated, int))


@dataclass(frozen=True)
class IdentificationResult:
    rank1: float  # mated searches whose best entry is the mate (no threshold)
    fnir: float  # at the threshold where FPIR = fpir
    fpir: float
    threshold: float
    mated: int
    non_mated: int


def identify(
    gallery: np.ndarray,
    probes: np.ndarray,
    split: OpenSetSplit,
    identities: np.ndarray,
    fpir: float = 1e-2,
    normalization: tuple[SideStats, SideStats] | None = None,
    level: CohortScale | None = None,
    share: float = DEFAULT_BLEND,
    scoring: Scoring | None = None,
) -> IdentificationResult:
    """Search `probes` (unit rows of the whole population, in the gallery's space) against `gallery`
    (unit rows of `split.gallery` photos, e.g. migrated from another model). With `normalization`
    (the gallery rows' and every probe row's AS-norm statistics), each search score is AS-normalised
    as /verify normalises a pair, and blended with the cohort's own `level` where one is given
    (asnorm.blend, `share` of the per-template score), so the threshold at the FPIR is in normalised
    units. `scoring` replaces all three for a gallery whose entries are not all of one kind (e.g.
    some migrated, some enrolled natively, each normalised against its own cohort)."""
    if scoring is not None and (normalization is not None or level is not None):
        raise ValueError("give either scoring or normalization (and level), not both")
    enrolled = identities[split.gallery]
    if scoring is None:
        gallery_stats, probe_stats = normalization if normalization is not None else (None, None)
        scoring = _Scoring(probe_stats, gallery_stats, level, share)
    best_mated, best_mated_id = _best(probes, split.mated, gallery, scoring)
    best_non_mated, _ = _best(probes, split.non_mated, gallery, scoring)
    hit = enrolled[best_mated_id] == identities[split.mated]
    threshold = fpir_threshold(best_non_mated, fpir)
    found = hit & (best_mated >= threshold)
    return IdentificationResult(
        rank1=float(hit.mean()),
        fnir=float(1.0 - found.mean()),
        fpir=float(np.mean(best_non_mated >= threshold)),
        threshold=threshold,
        mated=len(split.mated),
        non_mated=len(split.non_mated),
    )


def fpir_threshold(best_non_mated: np.ndarray, fpir: float) -> float:
    """The lowest threshold that at most `fpir` of the non-mated searches' best scores reach."""
    allowed = int(np.floor(fpir * len(best_non_mated)))
    ordered = np.sort(best_non_mated)[::-1]
    return float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered) else float(ordered[-1])


@dataclass(frozen=True)
class _Scoring:
    """How a search scores: raw cosine, AS-norm (both sides' statistics), or AS-norm blended."""

    probe_stats: SideStats | None = None
    gallery_stats: SideStats | None = None
    level: CohortScale | None = None
    share: float = DEFAULT_BLEND

    def __call__(self, raw: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        """Scores of the probes `chunk` (rows) against every gallery entry, from their raw cosines."""
        if self.probe_stats is None or self.gallery_stats is None:
            return raw
        probe_side = SideStats(self.probe_stats.mean[chunk, None], self.probe_stats.std[chunk, None])
        gallery_side = SideStats(self.gallery_stats.mean[None, :], self.gallery_stats.std[None, :])
        return normalized_scores(raw, probe_side, gallery_side, self.level, self.share)


def _best(
    probes: np.ndarray,
    rows: np.ndarray,
    gallery: np.ndarray,
    scoring: Scoring = _Scoring(),
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Best score and gallery row of each probe in `rows`, in blocks (bounded memory on large
    galleries), scored as `scoring` says."""
    scores, best = np.empty(len(rows), np.float32), np.empty(len(rows), int)
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        part = scoring(probes[chunk] @ gallery.T, chunk)
        best[start : start + block] = part.argmax(axis=1)
        scores[start : start + block] = part[np.arange(len(part)), best[start : start + block]]
    return scores, best
