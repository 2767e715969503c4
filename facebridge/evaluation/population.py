"""Out-of-population protocol: maps fitted on one population of people, measured on another.

LFW folds share photographers, years and press agencies across their people; a map fitted on LFW and
scored on other LFW people looks better than it will on a deployment's own people. Here the map (and
every choice made on the way: method, hyperparameters, calibration) sees only the fitting population;
the test population's photos are used for scoring alone, with every genuine pair and a large seeded
sample of impostor pairs (default 2M). Cross comparisons (mapped A template against a native B probe)
are asymmetric, so each pair is scored in both orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebridge.dataset_embedding import CLEAN, dataset_cache_path
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.verification import (
    DEFAULT_IMPOSTORS,
    GRID,
    PairSample,
    balanced_accuracy,
    pair_scores,
    tar_at,
    verification_pairs,
)
from facebridge.linalg import l2_normalize
from facebridge.mapping.calibration import clopper_pearson

__all__ = [
    "DEFAULT_IMPOSTORS",
    "GRID",
    "PairSample",
    "balanced_accuracy",
    "pair_scores",
    "tar_at",
    "verification_pairs",
]

# the labelled development populations (../shared/datasets) and the four recognizers the population
# studies compare across
DEVELOPMENT_POPULATIONS = ("lfw", "celeba-dev", "imfdb-dev", "rmfd-dev")
STUDY_MODELS = ("arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192", "dlib-r29-128")


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


def as_unlabelled(population: Population) -> Population:
    """A population without identity labels as fitting rows: every photo its own group ("NAME:path")."""
    groups = np.char.add(f"{population.name}:", population.paths.astype(str))
    return Population(population.name, population.paths, groups, population.clean, population.variants)


def pooled_parts(population: Population) -> list[tuple[str, np.ndarray]]:
    """(name, rows) of each population `population` pools (`bank_fit.merge` names it "A+B" and prefixes
    its paths "A/"), in the order of its name, those with no rows left out; one part, the whole
    population under its own name, when its paths do not say."""
    first = np.array([p.split("/", 1)[0] for p in population.paths.tolist()])
    parts = [(name, np.nonzero(first == name)[0]) for name in population.name.split("+")]
    if sum(len(rows) for _, rows in parts) != len(population):
        return [(population.name, np.arange(len(population)))]
    return [(name, rows) for name, rows in parts if len(rows)]


@dataclass(frozen=True)
class FittingPart:
    """One pooled population's share of a map's fitting rows: its photos as they are, and its rows."""

    name: str
    photos: Population
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    labelled: bool = True


@dataclass(frozen=True)
class FittingData:
    """How a labelled population's photos become a map's fitting rows, beyond `fitting_rows`.

    `unlabelled`: photos without identity labels (`as_unlabelled`: each its own group) added to every
    fit. `balance`: each pooled population's photos (and the unlabelled ones) resampled to that many,
    seeded (drawn without replacement when there are more, each repeated equally often and the
    remainder drawn when fewer; a photo's augmented variants follow it), so a large population does not
    drown the small ones. Both only ever make fitting rows: whatever forms verification pairs (quality,
    thresholds, selection scores, confidence rows) uses the labelled photos as they are. The default
    adds nothing: `rows` is then `fitting_rows` itself."""

    unlabelled: Population | None = None
    balance: int | None = None
    seed: int = 0

    @property
    def plain(self) -> bool:
        return self.unlabelled is None and self.balance is None

    def parts(
        self, population: Population, source: str, target: str, augmentations: Sequence[str] = ()
    ) -> list[FittingPart]:
        """Each pooled population's fitting rows (the labelled ones in the order of the name, then the
        unlabelled one), resampled when `balance` is set."""
        pooled = [(name, population.subset(rows), True) for name, rows in pooled_parts(population)]
        if self.unlabelled is not None:
            pooled.append((self.unlabelled.name, self.unlabelled, False))
        rng = np.random.default_rng(self.seed)
        parts = []
        for name, photos, labelled in pooled:
            kinds = [k for k in augmentations if k == CLEAN or k in photos.variants]
            x, y, groups = fitting_rows(photos, source, target, kinds)
            if self.balance is not None:
                # each row repeated as often as its photo was drawn (a variant row as its photo)
                photo = np.concatenate(
                    [np.arange(len(photos)), *(photos.variants[k][0] for k in kinds if k != CLEAN)]
                )
                drawn = np.bincount(resample_rows(len(photos), self.balance, rng), minlength=len(photos))
                take = np.repeat(np.arange(len(x)), drawn[photo])
                x, y, groups = x[take], y[take], groups[take]
            parts.append(FittingPart(name, photos, x, y, groups, labelled))
        return parts

    def rows(
        self, population: Population, source: str, target: str, augmentations: Sequence[str] = ()
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Y, groups) a map of `population` is fitted on: `fitting_rows` unless there is more to do."""
        if self.plain:
            return fitting_rows(population, source, target, augmentations)
        parts = self.parts(population, source, target, augmentations)
        return (
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.groups for p in parts]),
        )


def resample_rows(n: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` draws of n photos: without replacement when there are more, each repeated equally often
    and the remainder drawn when fewer."""
    if n >= rows:
        return np.sort(rng.choice(n, rows, replace=False))
    return np.r_[np.tile(np.arange(n), rows // n), rng.choice(n, rows % n, False)]


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
