"""Out-of-population protocol: maps fitted on one population of people, measured on another.

LFW folds share photographers, years and press agencies across their people; a map fitted on LFW and
scored on other LFW people looks better than it will on a deployment's own people. Here the map (and
every choice made on the way: method, hyperparameters, calibration) sees only the fitting population;
the test population's photos are used for scoring alone, with every genuine pair and a large seeded
sample of impostor pairs (default 2M). Cross comparisons (mapped A template against a native B probe)
are asymmetric, so each pair is scored in both orders.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebridge.dataset_embedding import CLEAN, dataset_cache_path
from facebridge.embedding_cache import EmbeddingCache
from facebridge.linalg import l2_normalize
from facebridge.mapping.calibration import clopper_pearson

DEFAULT_IMPOSTORS = 2_000_000
# the labelled development populations (../shared/datasets) and the four recognizers the population
# studies compare across
DEVELOPMENT_POPULATIONS = ("lfw", "celeba-dev", "imfdb-dev", "rmfd-dev")
STUDY_MODELS = ("arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128")
GRID = np.linspace(-1.0, 1.0, 8001)  # candidate thresholds for accuracy (step 2.5e-4)


@dataclass
class Population:
    """Unit embeddings of one labelled population's photos under several models, rows aligned.

    `variants[kind]` holds augmented copies: the rows of `paths` they come from and, per model,
    their embeddings (same variant pixels for every model).
    """

    name: str
    paths: np.ndarray
    identities: np.ndarray
    clean: dict[str, np.ndarray]
    variants: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> Population:
        """The photos `rows` (boolean mask or indices) and their variants only."""
        index = np.nonzero(rows)[0] if rows.dtype == bool else np.asarray(rows)
        new_row = -np.ones(len(self), int)
        new_row[index] = np.arange(len(index))
        variants = {}
        for kind, (base, models) in self.variants.items():
            keep = new_row[base] >= 0
            variants[kind] = (new_row[base[keep]], {m: e[keep] for m, e in models.items()})
        return Population(
            self.name,
            self.paths[index],
            self.identities[index],
            {m: e[index] for m, e in self.clean.items()},
            variants,
        )


def _unit(cache: EmbeddingCache, rows: list[int]) -> np.ndarray:
    return l2_normalize(cache.embeddings[rows].astype(np.float64)).astype(np.float32)


def load_population(
    cache_dir: Path, dataset: str, models: Sequence[str], augmentations: Sequence[str] = ()
) -> Population:
    """Photos with a detected face in every model's clean cache, and the requested variants of them."""
    caches = {m: EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, m)) for m in models}
    indexes = {m: c.index() for m, c in caches.items()}
    first = caches[models[0]]
    paths = sorted(
        str(p)
        for p in first.paths
        if all(p in indexes[m] and caches[m].detected[indexes[m][p]] for m in models)
    )
    clean = {m: _unit(caches[m], [indexes[m][p] for p in paths]) for m in models}
    row_of = {p: i for i, p in enumerate(paths)}
    variants = {}
    for kind in augmentations:
        if kind == CLEAN:
            continue
        aug = {m: EmbeddingCache.load(dataset_cache_path(cache_dir, dataset, m, kind)) for m in models}
        aug_index = {m: c.index() for m, c in aug.items()}
        shared = [p for p in paths if all(p in aug_index[m] for m in models)]
        base = np.array([row_of[p] for p in shared], int)
        variants[kind] = (base, {m: _unit(aug[m], [aug_index[m][p] for p in shared]) for m in models})
    identities = np.array([p.split("/", 1)[0] for p in paths])
    return Population(dataset, np.array(paths), identities, clean, variants)


def population_origin(root: Path) -> tuple[str, str]:
    """(source, terms) a population folder's SOURCE.txt states: its first sentence, and the text from
    "Terms:" to the end of that paragraph. Recorded in the provenance of every map fitted on it, so a
    map file says whose photos it learned from and on what terms; ("", "") without a SOURCE.txt."""
    path = root / "SOURCE.txt"
    if not path.is_file():
        return "", ""
    text = path.read_text(encoding="utf-8", errors="replace")
    flat = " ".join(text.split())
    end = flat.find(". ")
    source = flat[: end + 1 if end >= 0 else 300][:300]
    start = text.find("Terms:")
    if start < 0:
        return source, ""
    paragraph = text[start:].split("\n\n", 1)[0]
    lines: list[str] = []
    for line in paragraph.splitlines():
        if lines and line.strip().endswith(":") is False and line[:1].isupper() and ":" in line[:40]:
            break  # the next "Field: ..." line of SOURCE.txt
        lines.append(line.strip())
    return source, " ".join(lines).removeprefix("Terms:").strip()


def split_people(population: Population, seed: int = 0) -> tuple[Population, Population]:
    """(first half, second half) of a population by people: no person on both sides."""
    people = np.random.default_rng(seed).permutation(np.unique(population.identities))
    first = set(people[: len(people) // 2].tolist())
    in_first = np.array([p in first for p in population.identities.tolist()])
    return population.subset(in_first), population.subset(~in_first)


def fitting_rows(
    population: Population, source: str, target: str, augmentations: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, identities) of the clean photos plus each requested variant of them, stacked."""
    xs, ys, groups = [population.clean[source]], [population.clean[target]], [population.identities]
    for kind in augmentations:
        if kind == CLEAN:
            continue
        base, models = population.variants[kind]
        xs.append(models[source])
        ys.append(models[target])
        groups.append(population.identities[base])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


@dataclass(frozen=True)
class PairSample:
    """Photo pairs (i < j) of a population: every genuine pair and a seeded sample of impostor pairs."""

    left: np.ndarray
    right: np.ndarray
    genuine: np.ndarray  # bool

    @property
    def genuine_pairs(self) -> int:
        return int(self.genuine.sum())

    @property
    def impostor_pairs(self) -> int:
        return int((~self.genuine).sum())


def verification_pairs(
    identities: np.ndarray, max_impostors: int = DEFAULT_IMPOSTORS, seed: int = 0
) -> PairSample:
    """All same-identity pairs; impostor pairs all (if fewer than `max_impostors`) or a uniform
    sample without replacement of that many distinct unordered pairs."""
    n = len(identities)
    _, label = np.unique(identities, return_inverse=True)
    order = np.argsort(label, kind="stable")
    starts = np.r_[0, np.nonzero(np.diff(label[order]))[0] + 1, n]
    gl, gr = [], []
    for a, b in itertools.pairwise(starts):
        members = np.sort(order[a:b])
        i, j = np.triu_indices(len(members), 1)
        gl.append(members[i])
        gr.append(members[j])
    g_left, g_right = np.concatenate(gl), np.concatenate(gr)
    total_impostors = n * (n - 1) // 2 - len(g_left)
    rng = np.random.default_rng(seed)
    if total_impostors <= max_impostors:
        i, j = np.triu_indices(n, 1)
        keep = label[i] != label[j]
        i_left, i_right = i[keep], j[keep]
    else:
        chosen = np.empty(0, np.int64)
        while len(chosen) < max_impostors:
            need = int((max_impostors - len(chosen)) * 1.5) + 1000
            a, b = rng.integers(0, n, need), rng.integers(0, n, need)
            keep = label[a] != label[b]
            lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
            merged = np.sort(np.r_[chosen, lo.astype(np.int64) * n + hi])
            chosen = merged[np.r_[True, merged[1:] != merged[:-1]]]  # sort-based unique: fast for int64
        chosen = rng.permutation(chosen)[:max_impostors]
        i_left, i_right = chosen // n, chosen % n
    return PairSample(
        np.r_[g_left, i_left].astype(np.int64),
        np.r_[g_right, i_right].astype(np.int64),
        np.r_[np.ones(len(g_left), bool), np.zeros(len(i_left), bool)],
    )


def _rowdot(
    a: np.ndarray, b: np.ndarray, left: np.ndarray, right: np.ndarray, block: int = 1024
) -> np.ndarray:
    """`a[left[k]] . b[right[k]]` for every k, as blocks of a Gram matrix (one BLAS product per block
    of left rows, then a scalar gather) instead of gathering millions of embedding rows."""
    out = np.empty(len(left), np.float32)
    order = np.argsort(left, kind="stable")
    sorted_left = left[order]
    bounds = np.searchsorted(sorted_left, np.arange(0, len(a) + block, block))
    bt = np.ascontiguousarray(b.T)
    for k, start in enumerate(range(0, len(a), block)):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        gram = a[start : start + block] @ bt
        picked = order[lo:hi]
        out[picked] = gram[sorted_left[lo:hi] - start, right[picked]]
    return out


def pair_scores(a: np.ndarray, b: np.ndarray, pairs: PairSample) -> tuple[np.ndarray, np.ndarray]:
    """(scores, genuine labels) of `a[i] . b[j]`; when `a` and `b` are different spaces or maps the
    comparison is asymmetric, so both orders are scored: `a[i] . b[j]` and `a[j] . b[i]`."""
    if a is b:
        return _rowdot(a, b, pairs.left, pairs.right), pairs.genuine
    scores = np.r_[_rowdot(a, b, pairs.left, pairs.right), _rowdot(a, b, pairs.right, pairs.left)]
    return scores, np.r_[pairs.genuine, pairs.genuine]


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    """Mean of TAR and TRR, the threshold chosen on the other folds (pairs split at random into
    `folds`); with all genuine pairs and many more impostors, the LFW-style accuracy of a balanced set."""
    fold = np.random.default_rng(seed).permutation(np.arange(len(scores)) % folds)
    below_genuine = np.zeros((folds, len(GRID)), np.int64)  # genuine pairs below each threshold
    below_impostor = np.zeros((folds, len(GRID)), np.int64)
    n_genuine = np.zeros(folds, np.int64)
    n_impostor = np.zeros(folds, np.int64)
    for f in range(folds):
        s, lab = scores[fold == f], labels[fold == f]
        below_genuine[f] = np.searchsorted(np.sort(s[lab]), GRID, side="left")
        below_impostor[f] = np.searchsorted(np.sort(s[~lab]), GRID, side="left")
        n_genuine[f], n_impostor[f] = int(lab.sum()), int((~lab).sum())
    accuracies = []
    for f in range(folds):
        g = below_genuine.sum(axis=0) - below_genuine[f]
        i = below_impostor.sum(axis=0) - below_impostor[f]
        ng, ni = n_genuine.sum() - n_genuine[f], n_impostor.sum() - n_impostor[f]
        value = (ng - g) / ng + i / ni
        ties = np.flatnonzero(value == value.max())
        best = int(ties[len(ties) // 2])  # the middle of the best range, not its edge
        tar = (n_genuine[f] - below_genuine[f, best]) / n_genuine[f]
        accuracies.append(0.5 * (tar + below_impostor[f, best] / n_impostor[f]))
    return float(np.mean(accuracies))


def tar_at(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """Best TAR whose FAR (impostors accepted at score >= t) does not exceed `far`: the threshold sits
    just above the (k+1)-th highest impostor score, k = floor(far * impostors). One partition, no sort,
    so it is cheap on millions of pairs (same value as metrics.tar_at_far)."""
    allowed = int(np.floor(far * len(impostor)))
    if allowed >= len(impostor):
        return 1.0
    kth = np.partition(impostor, len(impostor) - 1 - allowed)[len(impostor) - 1 - allowed]
    return float(np.mean(genuine > kth))


@dataclass(frozen=True)
class FarCheck:
    """The FAR a calibrated threshold reached on other people, with its Clopper-Pearson interval."""

    operating_point: str
    threshold: float
    nominal_far: float
    accepted: int
    impostors: int
    interval: tuple[float, float]

    @property
    def far(self) -> float:
        return self.accepted / self.impostors


@dataclass(frozen=True)
class PopulationMetrics:
    accuracy: float
    tar_far_1e3: float
    tar_far_1e4: float
    genuine_pairs: int
    impostor_pairs: int
    far_checks: tuple[FarCheck, ...] = ()


def measure(
    scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, tuple[float, float]] | None = None
) -> PopulationMetrics:
    """Accuracy, TAR at FAR 1e-3/1e-4, and the FAR reached at each given (threshold, nominal FAR)."""
    impostor = scores[~labels]
    checks = []
    for point, (threshold, nominal) in (thresholds or {}).items():
        accepted = int((impostor >= threshold).sum())
        checks.append(
            FarCheck(
                point, threshold, nominal, accepted, len(impostor), clopper_pearson(accepted, len(impostor))
            )
        )
    genuine = scores[labels]
    return PopulationMetrics(
        balanced_accuracy(scores, labels),
        tar_at(genuine, impostor, 1e-3),
        tar_at(genuine, impostor, 1e-4),
        int(labels.sum()),
        int((~labels).sum()),
        tuple(checks),
    )
