"""Does a cohort with several photos per person serve AS-norm worse than one template per person?

A deployment's gallery holds one template per person; a folder of labelled photos or a pair store may
hold many. For each development population, its people split in half as the threshold study splits
them: the scored half's natives (every genuine pair, up to 1,000,000 impostor pairs) are normalised
against at most 1,000 photos of the other half (the study's cohort) three ways:

- *all photos*: the cohort as it is, several photos of most people;
- *one per person*: the first photo of each of its people only (a smaller, gallery-like cohort);
- *best per person*: every photo scored, but only each person's best score counts towards the top-K
  (AS-norm's neighbourhood made of people, not photos).

Each is scored as /verify scores (plain AS-norm, and blended 0.75 with the cohort's own level) and
judged by TAR at FAR 1e-3 with its own threshold at that FAR (the oracle threshold, so only how well
the scores separate counts), against raw cosine's.

    python scripts/cohort_composition.py [--population celeba-dev ...]

(Run as a script: its folder is then on the import path, and the study's cohort draw imports from it.)
"""

from __future__ import annotations

import argparse

import numpy as np
from map_lopo_study import IMPOSTORS, ROOT, cohort_of

from facebridge.cohort.asnorm import (
    DEFAULT_TOP_K,
    DEFAULT_TOP_K_SHARE,
    SideStats,
    cohort_scale,
    normalized_scores,
    score_stats,
    select,
    top_k_for,
    top_k_stats,
)
from facebridge.evaluation.population import (
    DEVELOPMENT_POPULATIONS,
    STUDY_MODELS,
    load_population,
    split_people,
)
from facebridge.evaluation.verification import rowdot, tar_at, verification_pairs

FAR = 1e-3


def best_per_person_stats(templates: np.ndarray, cohort: np.ndarray, people: np.ndarray) -> SideStats:
    """Top-K statistics over each cohort person's best score rather than over every photo's."""
    scores = templates @ cohort.T
    best = np.stack([scores[:, people == p].max(axis=1) for p in np.unique(people)], axis=1)
    return score_stats(best, top_k_for(best.shape[1], DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--population", action="append", dest="populations", choices=DEVELOPMENT_POPULATIONS)
    args = parser.parse_args()
    columns = "all photos: AS-norm / blend 0.75 | one per person | best per person"
    print(f"| population | cohort | model | raw | {columns} |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.populations or DEVELOPMENT_POPULATIONS:
        population = load_population(ROOT / "cache", name, STUDY_MODELS)
        fit_half, scored = split_people(population)
        cohort = cohort_of(fit_half)
        one = cohort.subset(np.sort(np.unique(cohort.identities, return_index=True)[1]))
        pairs = verification_pairs(scored.identities, IMPOSTORS, 0)
        described = f"{len(cohort)} photos of {len(np.unique(cohort.identities))} people"
        for model in STUDY_MODELS:
            t = scored.clean[model]
            raw = rowdot(t, t, pairs.left, pairs.right)
            cells = [f"{tar_at(raw[pairs.genuine], raw[~pairs.genuine], FAR):.4f}"]
            ways = [
                (cohort, top_k_stats(t, cohort.clean[model], DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE)),
                (one, top_k_stats(t, one.clean[model], DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE)),
                (cohort, best_per_person_stats(t, cohort.clean[model], cohort.identities)),
            ]
            for against, stats in ways:
                level = cohort_scale(
                    against.clean[model], against.clean[model], against.identities, against.identities
                )
                tars = []
                for share in (1.0, 0.75):
                    normalised = normalized_scores(
                        raw, select(stats, pairs.left), select(stats, pairs.right), level, share
                    )
                    tars.append(tar_at(normalised[pairs.genuine], normalised[~pairs.genuine], FAR))
                cells.append(" / ".join(f"{v:.4f}" for v in tars))
            print(f"| {name} | {described} | {model} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
