"""The maps and space calibrations the service serves, and how to get from one space to another.

`LoadedMap.apply` is the one place maps are applied (routes, migrations, benchmarks): an affine map is
`x @ weight + bias`, a nonlinear one adds its residual MLP (see facebridge/mapping/mapfile.py); rows are then
L2-normalised. A map may carry a confidence predictor (facebridge/mapping/confidence.py):
`LoadedMap.confidence` / `MapPath.confidence` give each row's expected cosine with the target model's own
embedding of the same photo, and `apply_with_confidence` gives both from one application of the maps.

Every file in the mappings folder is verified on load; a bad one is refused (with its reason, shown by
GET /mappings) and the others keep serving. When there is no direct map A→C the bank composes maps
through intermediate spaces and picks the path with the best recorded quality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facebridge.cohort.asnorm import scoring_layout
from facebridge.cohort.calibration_set import CALIBRATION_SUFFIX, CalibrationSetError, load_calibration_set
from facebridge.cohort.cohortfile import (
    COHORT_SUFFIX,
    RECOMMENDED_COHORT,
    SMALL_COHORT_NOTE,
    CohortError,
    load_cohort,
)
from facebridge.cohort.scoring import Scoring
from facebridge.mapping.calibration import Calibration
from facebridge.mapping.confidence import expected_cosine
from facebridge.mapping.mapfile import (
    MAP_SUFFIX,
    SPACE_SUFFIX,
    ConfidenceTensors,
    MapFileError,
    MapMetadata,
    ResidualTensors,
    SpaceCalibration,
    SpaceRef,
    load_map,
    load_space,
)
from facebridge.vision.manifest import Manifest

if TYPE_CHECKING:
    from facebridge.config import Settings

log = logging.getLogger(__name__)

MAX_HOPS = 3
RESIDUAL_CHUNK_ROWS = 8192  # rows per hidden-layer block: bounds the temporaries to chunk x (h + d_target)
_TINY = np.finfo(np.float32).tiny


def apply_map_tensors(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    residual: ResidualTensors | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The map's formula without normalisation (what an estimator's transform must equal).

    Written into `out` when given; the affine part is one matmul plus an in-place bias, and the residual
    is added in row blocks so a bulk batch never materialises an (n, h) hidden layer.
    """
    out = np.matmul(x, weight, out=out)
    out += bias
    if residual is not None:
        _add_residual(x, residual, out)
    return out


def _add_residual(x: np.ndarray, residual: ResidualTensors, out: np.ndarray) -> None:
    """out += relu(x @ in_weight + in_bias) @ out_weight + out_bias, block by block, buffers reused."""
    rows = min(RESIDUAL_CHUNK_ROWS, len(x))
    hidden = np.empty((rows, residual.hidden), dtype=out.dtype)
    delta = np.empty((rows, out.shape[1]), dtype=out.dtype)
    if rows == len(x):  # one block: the same operations without the block bookkeeping
        np.matmul(x, residual.in_weight, out=hidden)
        hidden += residual.in_bias
        np.maximum(hidden, 0.0, out=hidden)
        out += np.matmul(hidden, residual.out_weight, out=delta)
        out += residual.out_bias
        return
    for start in range(0, len(x), RESIDUAL_CHUNK_ROWS):
        stop = min(start + RESIDUAL_CHUNK_ROWS, len(x))
        h, d = hidden[: stop - start], delta[: stop - start]
        np.matmul(x[start:stop], residual.in_weight, out=h)
        h += residual.in_bias
        np.maximum(h, 0.0, out=h)
        np.matmul(h, residual.out_weight, out=d)
        out[start:stop] += d
    out += residual.out_bias


def normalise_rows(out: np.ndarray) -> np.ndarray:
    """L2-normalise rows in place (a zero row stays zero instead of becoming NaN)."""
    normalise_rows_keeping_norms(out)
    return out


def normalise_rows_keeping_norms(out: np.ndarray) -> np.ndarray:
    """L2-normalise rows in place and return their norms before (the confidence predictor reads them)."""
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    np.maximum(norms, _TINY, out=norms)
    out /= norms[:, None]
    return norms


@dataclass(frozen=True)
class LoadedMap:
    meta: MapMetadata
    weight: np.ndarray  # float32 (d_source, d_target)
    bias: np.ndarray  # float32 (d_target,)
    file: str
    residual: ResidualTensors | None = None  # None: affine map
    predictor: ConfidenceTensors | None = None  # None: no per-template confidence

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def nonlinear(self) -> bool:
        return self.residual is not None

    @property
    def has_confidence(self) -> bool:
        return self.predictor is not None

    def apply(self, embeddings: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map unit-length source embeddings and return unit-length target embeddings (float32).

        Written into `out` when given (e.g. a response buffer) and in place after the matmul: on bulk
        batches extra temporaries cost as much as the product itself.
        """
        return normalise_rows(apply_map_tensors(embeddings, self.weight, self.bias, self.residual, out))

    def apply_with_confidence(
        self, embeddings: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`apply`, plus each row's expected cosine with the target model's own embedding (None without
        a predictor); the predictor reads the raw norms `apply` computes anyway, so it adds two
        matrix-vector products."""
        result = apply_map_tensors(embeddings, self.weight, self.bias, self.residual, out)
        norms = normalise_rows_keeping_norms(result)
        if self.predictor is None:
            return result, None
        return result, expected_cosine(self.predictor, embeddings, result, norms)

    def confidence(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Expected cosine per row between the translated template and the true target embedding."""
        return self.apply_with_confidence(embeddings)[1] if self.predictor is not None else None


@dataclass(frozen=True)
class MapPath:
    """One or more maps applied in turn; `quality` is the product of the hops' held-out mean cosines."""

    maps: tuple[LoadedMap, ...]

    @property
    def source(self) -> str:
        return self.maps[0].meta.source.model

    @property
    def target(self) -> str:
        return self.maps[-1].meta.target.model

    @property
    def composed(self) -> bool:
        return len(self.maps) > 1

    @property
    def quality(self) -> float:
        return float(np.prod([m.meta.quality.mean_cosine or 0.0 for m in self.maps]))

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.maps]

    def apply(self, embeddings: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Apply every hop in turn (each re-normalises, as each map was fitted on unit vectors)."""
        current = embeddings
        for index, hop in enumerate(self.maps):
            current = hop.apply(current, out if index == len(self.maps) - 1 else None)
        return current

    @property
    def has_confidence(self) -> bool:
        return all(m.has_confidence for m in self.maps)

    def apply_with_confidence(
        self, embeddings: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`apply` and each row's expected cosine with the target model's own embedding; None when any
        hop lacks a predictor.

        A chain multiplies its hops' expected cosines (each clipped at 0), every hop's predictor read
        on the rows that hop really receives: a hop's error is carried on by the next map roughly
        orthogonally to the next target, so cosines compose about multiplicatively (as `quality` does).
        """
        if not self.has_confidence:
            return self.apply(embeddings, out), None
        current, confidence = embeddings, None
        for index, hop in enumerate(self.maps):
            current, hop_confidence = hop.apply_with_confidence(
                current, out if index == len(self.maps) - 1 else None
            )
            assert hop_confidence is not None  # has_confidence
            if len(self.maps) == 1:
                return current, hop_confidence
            hop_confidence = np.clip(hop_confidence, 0.0, 1.0)
            confidence = hop_confidence if confidence is None else confidence * hop_confidence
        return current, confidence

    def confidence(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Expected cosine per row of the translated template with the target model's own embedding."""
        return self.apply_with_confidence(embeddings)[1] if self.has_confidence else None

    @property
    def cross_calibration(self) -> Calibration | None:
        """Direct maps carry their own cross calibration; a composed path borrows its last hop's."""
        calibration = self.maps[-1].meta.calibration
        return calibration.cross if calibration is not None else None


@dataclass
class RefusedFile:
    file: str
    reason: str


@dataclass
class MappingBank:
    maps: dict[tuple[str, str], LoadedMap] = field(default_factory=dict)
    spaces: dict[str, SpaceRef] = field(default_factory=dict)
    space_calibrations: dict[str, SpaceCalibration] = field(default_factory=dict)
    refused: list[RefusedFile] = field(default_factory=list)
    scoring: Scoring = field(default_factory=Scoring)  # cohorts and calibration sets

    @classmethod
    def load(
        cls,
        directory: Path,
        manifest: Manifest | None = None,
        cohort_dir: Path | None = None,
        calibration_file: Path | None = None,
    ) -> MappingBank:
        """Load every map, space and calibration file under `directory`, the cohorts in `cohort_dir`
        and a deployment calibration, refusing the files that fail their checks."""
        bank = cls()
        if calibration_file is not None:
            bank._load_calibration_set(calibration_file, calibration_file.parent, "deployment")
        if not directory.is_dir():
            log.warning("mappings folder %s does not exist: no maps loaded", directory)
            bank._load_cohorts(cohort_dir, manifest)
            return bank
        for path in sorted(directory.rglob("*" + SPACE_SUFFIX)):
            try:
                space = load_space(path)
                bank._check_pin(space.space, manifest)
                bank._add_space(space.space)
                bank.space_calibrations[space.space.model] = space
            except MapFileError as exc:
                bank._refuse(path, directory, str(exc))
        for path in sorted(directory.rglob("*" + MAP_SUFFIX)):
            try:
                loaded = load_map(path)
                meta = loaded.meta
                for ref in (meta.source, meta.target):
                    bank._check_pin(ref, manifest)
                    bank._add_space(ref)
                key = (meta.source.model, meta.target.model)
                if key in bank.maps:
                    raise MapFileError(f"{path.name}: a second map {meta.id} (first: {bank.maps[key].file})")
                relative = str(path.relative_to(directory))
                bank.maps[key] = LoadedMap(
                    meta, loaded.weight, loaded.bias, relative, loaded.residual, loaded.confidence
                )
            except MapFileError as exc:
                bank._refuse(path, directory, str(exc))
        for path in sorted(directory.rglob("*" + CALIBRATION_SUFFIX)):
            bank._load_calibration_set(path, directory, "shipped")
        bank._load_cohorts(cohort_dir, manifest)
        log.info(
            "mappings: %d map(s), %d space calibration(s), %d calibration set(s), %d cohort(s), %d refused",
            len(bank.maps),
            len(bank.space_calibrations),
            len(bank.scoring.sets),
            len(bank.scoring.cohorts),
            len(bank.refused),
        )
        return bank

    @classmethod
    def from_settings(cls, settings: Settings) -> MappingBank:
        """What the service serves: the mappings folder, the cohorts and a deployment calibration."""
        return cls.load(
            settings.mappings_dir, settings.load_manifest(), settings.cohort_dir, settings.calibration_file
        )

    def _load_calibration_set(self, path: Path, directory: Path, kind: str) -> None:
        """A calibration set of the expected kind (a deployment file never poses as shipped)."""
        try:
            loaded = load_calibration_set(path)
            if loaded.kind != kind:
                raise CalibrationSetError(f"{path.name}: a {loaded.kind} set where a {kind} one belongs")
            self.scoring.sets[str(path.relative_to(directory))] = loaded
        except CalibrationSetError as exc:
            self._refuse(path, directory, str(exc))

    def _load_cohorts(self, directory: Path | None, manifest: Manifest | None) -> None:
        """Every cohort file in `directory`; one per space, made by the weights the manifest pins."""
        if directory is None:
            return
        if not directory.is_dir():
            log.warning("cohort folder %s does not exist: no cohorts loaded", directory)
            return
        for path in sorted(directory.rglob("*" + COHORT_SUFFIX)):
            try:
                cohort = load_cohort(path)
                model = cohort.meta.space.model
                self._check_pin(cohort.meta.space, manifest)
                known = self.spaces.get(model)
                if known is None and (manifest is None or manifest.get(model) is None):
                    raise CohortError(f"{path.name}: no model or map knows space {model}")
                if known is not None and known != cohort.meta.space:
                    raise CohortError(
                        f"{path.name}: made with weights {cohort.meta.space.sha256[:12]}… (dim "
                        f"{cohort.meta.space.dim}), the maps' {model} is {known.sha256[:12]}… "
                        f"(dim {known.dim})"
                    )
                if model in self.scoring.cohorts:
                    first = self.scoring.cohorts[model].file
                    raise CohortError(f"{path.name}: a second cohort for {model} (first: {first})")
                # kept in the layout every scoring rule reads it in, so no rule needs a copy of its own
                self.scoring.cohorts[model] = replace(cohort, templates=scoring_layout(cohort.templates))
                if len(cohort) < RECOMMENDED_COHORT:
                    log.warning("cohort %s holds %d templates: %s", path.name, len(cohort), SMALL_COHORT_NOTE)
            except (CohortError, MapFileError) as exc:
                self._refuse(path, directory, str(exc), "cohort")

    def _refuse(self, path: Path, directory: Path, reason: str, what: str = "mapping") -> None:
        self.refused.append(RefusedFile(str(path.relative_to(directory)), reason))
        log.error("%s file refused: %s", what, reason)

    def _check_pin(self, ref: SpaceRef, manifest: Manifest | None) -> None:
        """A map fitted for other weights than the manifest pins under that id must not be applied."""
        entry = manifest.get(ref.model) if manifest is not None else None
        if entry is not None and entry.sha256 is not None and entry.sha256 != ref.sha256:
            raise MapFileError(
                f"space {ref.model}: fitted for weights {ref.sha256[:12]}…, "
                f"the manifest pins {entry.sha256[:12]}…"
            )
        if entry is not None and entry.dim is not None and entry.dim != ref.dim:
            raise MapFileError(f"space {ref.model}: dim {ref.dim}, the manifest says {entry.dim}")

    def _add_space(self, ref: SpaceRef) -> None:
        known = self.spaces.get(ref.model)
        if known is not None and known != ref:
            raise MapFileError(
                f"space {ref.model}: conflicting definitions ({known.sha256[:12]}… vs {ref.sha256[:12]}…)"
            )
        self.spaces[ref.model] = ref

    def find_path(self, source: str, target: str) -> MapPath | None:
        """The direct map, or the composition of up to MAX_HOPS maps with the best recorded quality."""
        if (source, target) in self.maps:
            return MapPath((self.maps[(source, target)],))
        best: MapPath | None = None
        frontier: list[tuple[str, tuple[LoadedMap, ...]]] = [(source, ())]
        for _ in range(MAX_HOPS):
            next_frontier = []
            for node, hops in frontier:
                visited = {source, *(h.meta.target.model for h in hops)}
                for (a, b), loaded in self.maps.items():
                    if a != node or b in visited:
                        continue
                    path = (*hops, loaded)
                    if b == target:
                        candidate = MapPath(path)
                        if best is None or candidate.quality > best.quality:
                            best = candidate
                    else:
                        next_frontier.append((b, path))
            if best is not None:
                return best  # fewest hops first; best quality among those
            frontier = next_frontier
        return None
