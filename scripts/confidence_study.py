"""Does a map's per-template confidence find the translated templates worth re-enrolling first?

Out-of-population, from the embedding caches only (numpy): per ordered pair of recognizers, a map is
fitted on all of LFW with the method of the shipped map for that pair, and its confidence predictor on
LFW out-of-fold translations (3 identity folds, each translated by a map fitted without them). The
CelebA development people are split in half by identity with a fixed seed: half A plays the
deployment's own fitting people (the LFW maps never use them), half B is scored. On half B:

- Spearman correlation between predicted and actual fidelity (cosine between a photo's translated
  source template and the target model's own embedding of the same photo);
- cross TAR at FAR 1e-3 of a gallery of translated templates (one per photo) against native target
  probes (genuine: same person, different photo; impostors: every pair of different people), after
  re-enrolling (replacing by the native target template) the 10% least confident gallery templates,
  a random 10% (mean over --draws draws), none, and, as the bound, the 10% with the worst actual
  fidelity (an oracle no deployment has).

    .venv/bin/python scripts/confidence_study.py [--pairs all] [--out docs/confidence.md]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebridge.evaluation.population import Population, load_population, tar_at
from facebridge.evaluation.population_study import fit_estimator
from facebridge.mapping.confidence import ConfidenceModel, rank_correlation
from facebridge.mapping.estimators import group_folds, row_cosine
from facebridge.mapping.mapfile import load_map, map_filename

ROOT = Path(__file__).resolve().parents[1]

MAIN_PAIRS = [
    ("arcface-mbf128", "sirius-mbf192"),
    ("sirius-mbf192", "arcface-mbf128"),
    ("arcface-mbf128", "dlib-r29-128"),
    ("dlib-r29-128", "arcface-mbf128"),
]
MODELS = ["arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128"]


@dataclass
class PairResult:
    source: str
    target: str
    method: str
    rows: int
    identities: int
    mean_actual: float
    mean_predicted: float
    spearman: float
    tar_none: float
    tar_confident: float
    tar_random: float
    tar_random_sd: float
    tar_oracle: float
    tar_native: float
    seconds: float


def half_split(population: Population, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (A, B): the people split in half by a seeded permutation."""
    names = np.unique(population.identities)
    chosen = set(np.random.default_rng(seed).permutation(names)[: len(names) // 2].tolist())
    in_a = np.array([i in chosen for i in population.identities.tolist()])
    return in_a, ~in_a


def out_of_fold_predictor(
    lfw: Population, source: str, target: str, method: str, seed: int
) -> ConfidenceModel:
    """The confidence predictor of LFW rows translated by maps that never saw their person."""
    parts = []
    for held in group_folds(len(lfw), lfw.identities, 3, seed):
        mask = np.zeros(len(lfw), bool)
        mask[held] = True
        estimator = fit_estimator(lfw.subset(~mask), source, target, method)
        x = lfw.clean[source][mask]
        raw = estimator.transform(x)
        parts.append((x, raw, row_cosine(raw, lfw.clean[target][mask]), lfw.identities[mask]))
    x, raw, cosine, groups = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return ConfidenceModel(random_state=seed).fit(x, raw, cosine, groups)


def cross_tar(gallery: np.ndarray, probes: np.ndarray, identities: np.ndarray) -> float:
    """TAR at FAR 1e-3: every gallery template against every probe of another photo."""
    scores = gallery @ probes.T
    same = identities[:, None] == identities[None, :]
    np.fill_diagonal(same, False)
    different = identities[:, None] != identities[None, :]
    return tar_at(scores[same], scores[different], 1e-3)


def study_pair(
    lfw: Population, celeba: Population, source: str, target: str, draws: int, seed: int
) -> PairResult:
    started = time.perf_counter()
    method = load_map(ROOT / "mappings" / map_filename(source, target)).meta.method
    predictor = out_of_fold_predictor(lfw, source, target, method, seed)
    estimator = fit_estimator(lfw, source, target, method)
    _, in_b = half_split(celeba, seed)
    scored = celeba.subset(in_b)
    x, native = scored.clean[source], scored.clean[target]
    raw = estimator.transform(x)
    translated = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    actual = row_cosine(raw, native)
    predicted = predictor.predict(x, raw)
    ids = scored.identities
    k = round(0.1 * len(x))

    def reenrolled(rows: np.ndarray) -> float:
        gallery = translated.copy()
        gallery[rows] = native[rows]
        return cross_tar(gallery, native, ids)

    rng = np.random.default_rng(seed)
    random_tars = [reenrolled(rng.choice(len(x), k, replace=False)) for _ in range(draws)]
    return PairResult(
        source,
        target,
        method,
        len(x),
        len(np.unique(ids)),
        float(actual.mean()),
        float(predicted.mean()),
        rank_correlation(predicted, actual),
        cross_tar(translated, native, ids),
        reenrolled(np.argsort(predicted, kind="stable")[:k]),
        float(np.mean(random_tars)),
        float(np.std(random_tars)),
        reenrolled(np.argsort(actual, kind="stable")[:k]),
        cross_tar(native, native, ids),
        time.perf_counter() - started,
    )


def table(results: list[PairResult], draws: int) -> str:
    lines = [
        "| map (method) | B photos / people | mean actual / predicted cosine | Spearman "
        f"| TAR@1e-3: none | 10% random (mean ± sd of {draws}) | 10% least confident "
        "| 10% worst actual (oracle) | all native |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.source}->{r.target} ({r.method}) | {r.rows} / {r.identities} "
            f"| {r.mean_actual:.3f} / {r.mean_predicted:.3f} | {r.spearman:.3f} | {100 * r.tar_none:.1f} "
            f"| {100 * r.tar_random:.1f} ± {100 * r.tar_random_sd:.1f} | **{100 * r.tar_confident:.1f}** "
            f"| {100 * r.tar_oracle:.1f} | {100 * r.tar_native:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", choices=["main", "all"], default="main", help="all: the 12 ordered pairs")
    parser.add_argument("--draws", type=int, default=20, help="random re-enrolment draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    parser.add_argument("--out", type=Path, help="write the table into this Markdown file's marked block")
    args = parser.parse_args()
    pairs = MAIN_PAIRS if args.pairs == "main" else list(itertools.permutations(MODELS, 2))
    models = sorted({m for pair in pairs for m in pair})
    lfw = load_population(args.cache_dir, "lfw", models)
    celeba = load_population(args.cache_dir, "celeba-dev", models)
    results = []
    for source, target in pairs:
        results.append(study_pair(lfw, celeba, source, target, args.draws, args.seed))
        r = results[-1]
        print(
            f"{source}->{target}: Spearman {r.spearman:.3f} ({r.seconds:.0f} s)", file=sys.stderr, flush=True
        )
    text = table(results, args.draws)
    print(text)
    if args.out is not None:
        write_block(args.out, text)
    return 0


BEGIN, END = "<!-- confidence-study:begin -->", "<!-- confidence-study:end -->"


def write_block(path: Path, text: str) -> None:
    """Replace the text between the study's markers (the rest of the document is prose)."""
    document = path.read_text()
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
