"""How many re-enrolments does a migrated gallery need to search as well as a native one?

A gallery migrated A→B is searched with B's probes; where A saw less of each face than B, no map gives
back what A never had (the section "Identification against the source model's own gallery"). An
identity system closes that gap by re-enrolling people with B as they come by. Every map carries a
per-template confidence (facebridge/mapping/confidence.py: the expected cosine between a translated
template and B's own embedding of the same photo), so re-enrolment can start with the least
confident templates, as FastFill backfills.

On the study's scored halves and open-set splits (scripts/map_lopo_study.py: half of the people
enrolled with their first photo, every other photo searched, raw cosine), the gallery is migrated
through the shipped bank's direct map and a share of its entries is replaced by B's own templates of
the same photos, picked three ways:

- *confidence*: the least confident first (what `facebridge migrate` writes per row);
- *random*: a random draw (the mean of three draws), re-enrolling people in the order they come by;
- *oracle*: the entries truly farthest from B's own template first (the best any order could do).

The goal is the leave-one-population-out study's: rank-1 ≥ 0.97x and FNIR at FPIR 1e-2 ≤ 1.1x of B's
own gallery. The shipped maps saw these populations' photos (unlabelled) when they were fitted.

Numpy only, from the embedding caches. Writes the section `backfill-identification` of
docs/maps-across-populations.md.

    python scripts/backfill_identification.py

(Run as a script: its folder is then on the import path, and the study's helpers import from it.)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from map_lopo_study import MODELS, POPULATIONS, ROOT, Scored, identification_ok, load, scored_half

from facebridge.cohort.asnorm import (
    DEFAULT_BLEND,
    DEFAULT_TOP_K,
    DEFAULT_TOP_K_SHARE,
    CohortScale,
    SideStats,
    cohort_scale,
    normalized_scores,
    top_k_stats,
)
from facebridge.evaluation.identification import (
    IdentificationResult,
    OpenSetSplit,
    Scoring,
    fpir_threshold,
    identify,
)
from facebridge.evaluation.sections import command_line, upsert_section
from facebridge.evaluation.sections import table_row as row
from facebridge.mapping.bank import MappingBank

SHARES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)  # of the gallery re-enrolled with B
ORDERS = ("confidence", "random", "oracle")
RANDOM_DRAWS = 3
FPIR = 1e-2  # the open-set operating point the goal's FNIR is read at


def backfilled(
    migrated: np.ndarray, native: np.ndarray, order: np.ndarray, share: float
) -> tuple[np.ndarray, np.ndarray]:
    """The migrated gallery with its first `share` of entries in `order` replaced by B's own, and
    which entries those are."""
    gallery = migrated.copy()
    chosen = order[: round(share * len(order))]
    gallery[chosen] = native[chosen]
    replaced = np.zeros(len(gallery), bool)
    replaced[chosen] = True
    return gallery, replaced


@dataclass(frozen=True)
class MixedScoring:
    """Search scores normalised as /verify normalises a pair, for a gallery of migrated and re-enrolled
    entries: each entry against B's own cohort (its probes' kind), each probe against the cohort of
    the entry's kind (A's cohort carried into B for a migrated entry, B's own for a re-enrolled one),
    blended with that pair of cohorts' own level."""

    native_entries: np.ndarray  # bool per gallery entry: re-enrolled with B
    gallery: SideStats
    probes_vs_migrated: SideStats
    probes_vs_native: SideStats
    level_migrated: CohortScale
    level_native: CohortScale

    def __call__(self, raw: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        out = np.empty(raw.shape, np.float32)
        for native, probes, level in (
            (False, self.probes_vs_migrated, self.level_migrated),
            (True, self.probes_vs_native, self.level_native),
        ):
            columns = self.native_entries == native
            if columns.any():
                probe_side = SideStats(probes.mean[chunk, None], probes.std[chunk, None])
                entry_side = SideStats(self.gallery.mean[None, columns], self.gallery.std[None, columns])
                out[:, columns] = normalized_scores(
                    raw[:, columns], probe_side, entry_side, level, DEFAULT_BLEND
                )
        return out


@dataclass(frozen=True)
class Cohorts:
    """The scored population's cohort (photos of its other half) as a direction's searches use it."""

    native: np.ndarray  # B's own templates
    migrated: np.ndarray  # A's templates carried into B
    probes_vs_migrated: SideStats
    probes_vs_native: SideStats
    level_migrated: CohortScale
    level_native: CohortScale

    @staticmethod
    def of(s: Scored, a: str, b: str, carry: Callable[[np.ndarray], np.ndarray]) -> Cohorts:
        people = s.cohort.identities
        native, migrated = s.cohort.clean[b], carry(s.cohort.clean[a])
        probes = s.population.clean[b]
        return Cohorts(
            native,
            migrated,
            top_k_stats(probes, migrated, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
            top_k_stats(probes, native, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
            cohort_scale(migrated, native, people, people, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
            cohort_scale(native, native, people, people, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
        )

    def scoring(self, gallery: np.ndarray, native_entries: np.ndarray) -> MixedScoring:
        return MixedScoring(
            native_entries,
            top_k_stats(gallery, self.native, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
            self.probes_vs_migrated,
            self.probes_vs_native,
            self.level_migrated,
            self.level_native,
        )


def kind_offsets(
    gallery: np.ndarray,
    probes: np.ndarray,
    split: OpenSetSplit,
    scoring: Scoring | None,
    native_entries: np.ndarray,
    fpir: float = FPIR,
) -> np.ndarray:
    """Per gallery entry, the threshold of its kind (migrated or re-enrolled): each kind's own at an
    equal share of `fpir` on the non-mated searches, as one gallery's threshold is set. Subtracted from
    the scores, it puts both kinds on one scale: a kind whose impostor scores run higher no longer sets
    the threshold for the other."""
    rows = split.non_mated
    raw = probes[rows] @ gallery.T
    scores = scoring(raw, rows) if scoring is not None else raw
    kinds = [mask for mask in (native_entries, ~native_entries) if mask.any()]
    offsets = np.zeros(len(gallery), np.float32)
    for mask in kinds:
        offsets[mask] = fpir_threshold(scores[:, mask].max(axis=1), fpir / len(kinds))
    return offsets


@dataclass(frozen=True)
class Shifted:
    """A scoring with each gallery entry's kind threshold subtracted (`kind_offsets`)."""

    base: Scoring | None
    offsets: np.ndarray

    def __call__(self, raw: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        scores = self.base(raw, chunk) if self.base is not None else raw
        return scores - self.offsets[None, :]


def ratios(result: IdentificationResult, native: IdentificationResult) -> tuple[float, float]:
    return result.rank1 / max(native.rank1, 1e-9), result.fnir / max(native.fnir, 1e-9)


def first_share(oks: Sequence[bool]) -> str:
    """The smallest share at which the goal is met, and stays met at every larger share tried."""
    for index in range(len(SHARES)):
        if all(oks[index:]):
            return f"{SHARES[index]:.0%}"
    return f"> {SHARES[-1]:.0%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="embedding caches")
    parser.add_argument("--mappings", type=Path, default=ROOT / "mappings")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "maps-across-populations.md")
    parser.add_argument(
        "--normalised",
        action="store_true",
        help="search scores normalised as /verify normalises (AS-norm blended with the cohort's level)",
    )
    parser.add_argument(
        "--per-kind-thresholds",
        action="store_true",
        help="migrated and re-enrolled entries each judged at their own threshold (half the FPIR each)",
    )
    args = parser.parse_args(argv)
    models = list(MODELS)
    bank = MappingBank.load(args.mappings)
    summary = [
        row(
            "population",
            "none re-enrolled",
            *(f"{order}, {share:.0%} re-enrolled" for order in ORDERS for share in SHARES[1:4]),
        ),
        "|---|" + "---:|" * (3 * len(ORDERS) + 1),
    ]
    detail = [
        row(
            "population",
            "direction",
            "none re-enrolled: rank-1, FNIR",
            *(f"{order}, 10%: rank-1, FNIR" for order in ORDERS),
            *(f"{order}: share that meets the goal" for order in ORDERS),
        ),
        "|---|---|---:|" + "---:|" * 2 * len(ORDERS),
    ]
    for name in POPULATIONS:
        _, scored = scored_half(load(args.cache, name, models), models)
        split, identities = scored.split, scored.population.identities
        counts = {(order, share): 0 for order in ORDERS for share in SHARES}
        for a in models:
            for b in models:
                if a == b:
                    continue
                path = bank.find_path(a, b)
                assert path is not None and not path.composed, (a, b)
                natives = scored.native_norm if args.normalised else scored.native
                native_b = natives[b].identification
                probes = scored.population.clean[b]
                own = probes[split.gallery]
                migrated, confidence = path.apply_with_confidence(scored.population.clean[a][split.gallery])
                assert confidence is not None, path.ids
                cohorts = Cohorts.of(scored, a, b, path.apply) if args.normalised else None
                fidelity = np.einsum("ij,ij->i", migrated, own)
                rng = np.random.default_rng(0)
                orders = {
                    "confidence": [np.argsort(confidence, kind="stable")],
                    "random": [rng.permutation(len(own)) for _ in range(RANDOM_DRAWS)],
                    "oracle": [np.argsort(fidelity, kind="stable")],
                }
                oks: dict[str, list[bool]] = {order: [] for order in ORDERS}
                at_ten: dict[str, tuple[float, float]] = {}
                for order in ORDERS:
                    for share in SHARES:
                        found = []
                        for o in orders[order]:
                            gallery, replaced = backfilled(migrated, own, o, share)
                            scoring: Scoring | None = (
                                cohorts.scoring(gallery, replaced) if cohorts is not None else None
                            )
                            if args.per_kind_thresholds:
                                offsets = kind_offsets(gallery, probes, split, scoring, replaced)
                                scoring = Shifted(scoring, offsets)
                            searched = identify(gallery, probes, split, identities, scoring=scoring)
                            found.append(ratios(searched, native_b))
                        rank1, fnir = (
                            float(np.mean([f[0] for f in found])),
                            float(np.mean([f[1] for f in found])),
                        )
                        ok = identification_ok(rank1, fnir)
                        oks[order].append(ok)
                        counts[(order, share)] += ok
                        if share == 0.1:
                            at_ten[order] = (rank1, fnir)
                        if share == 0.0:
                            at_zero = (rank1, fnir)
                detail.append(
                    row(
                        name,
                        f"{a}→{b}",
                        f"{at_zero[0]:.3f}, {at_zero[1]:.2f}",
                        *(f"{at_ten[o][0]:.3f}, {at_ten[o][1]:.2f}" for o in ORDERS),
                        *(first_share(oks[o]) for o in ORDERS),
                    )
                )
                print(detail[-1], flush=True)
        directions = len(models) * (len(models) - 1)
        summary.append(
            row(
                name,
                f"{counts[('confidence', 0.0)]} / {directions}",
                *(f"{counts[(o, s)]} / {directions}" for o in ORDERS for s in SHARES[1:4]),
            )
        )
    command = command_line("scripts/backfill_identification.py", argv)
    scoring_words = (
        "scores normalised as /verify normalises: each entry against B's own cohort, each probe against "
        "a cohort of the entry's kind, A's carried into B or B's own, blended 0.75 with their level; "
        "against B's own gallery normalised the same way"
        if args.normalised
        else "raw cosine"
    ) + (
        "; migrated and re-enrolled entries each at their own threshold, half the FPIR each, set on the "
        "non-mated searches as a gallery's one threshold is"
        if args.per_kind_thresholds
        else ""
    )
    text = [
        "### Identification with the least confident entries re-enrolled"
        + (", normalised searches" if args.normalised else "")
        + (", a threshold per kind of entry" if args.per_kind_thresholds else ""),
        "",
        f"`{command}`. Directions meeting the goal, of 12, then each direction. A gallery migrated "
        "A→B through the shipped bank's direct map, a share of its "
        "entries replaced by B's own templates of the same photos (re-enrolled), searched with B's "
        f"probes on the study's scored halves and open-set splits ({scoring_words}). The entries re-enrolled "
        "first: the least confident (*confidence*, the per-template confidence `facebridge migrate` "
        "writes), a random draw (*random*, mean of three), or the entries truly farthest from B's own "
        "(*oracle*). The goal: rank-1 ≥ 0.97x and FNIR at FPIR 1e-2 ≤ 1.1x of B's own gallery. *share "
        "that meets the goal*: the smallest share tried (5, 10, 20, 30, 50%) from which on it is met. "
        "The shipped maps saw these populations' photos, unlabelled.",
        "",
        *summary,
        "",
        *detail,
    ]
    section = "backfill-identification" + ("-normalised" if args.normalised else "")
    section += "-per-kind" if args.per_kind_thresholds else ""
    upsert_section(args.out, section, "\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
