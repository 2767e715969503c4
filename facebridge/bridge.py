"""The library API: embed faces, translate templates between spaces, verify across models.

`Bridge` is what the service's routes call, so a Python program gets the same numbers in-process as
over HTTP:

    from facebridge import Bridge
    bridge = Bridge.from_defaults()
    moved = bridge.translate(templates, "arcface-mbf128", "sirius-mbf192")
    result = bridge.verify(("arcface-mbf128", template), ("sirius-mbf192", probe), far=1e-3)

Results are the pydantic models of facebridge.schemas (the fields of the HTTP answers). Errors are the
exceptions of facebridge.exceptions, each naming the input field at fault.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from facebridge.cohort.asnorm import top_k_for
from facebridge.cohort.scoring import ScoreRule, Units, comparison_key
from facebridge.config import Settings
from facebridge.exceptions import (
    FacebridgeError,
    ImageTooLarge,
    InvalidBase64,
    NoFaceFound,
    NoMapPath,
    NotReady,
    SameSpace,
    UnknownModel,
)
from facebridge.mapping.bank import MapPath, MappingBank
from facebridge.mapping.calibration import DEFAULT_OPERATING_POINT, Calibration
from facebridge.mapping.compare import ComparisonPlan, both_maps_plan, plan_comparison, resolve_threshold
from facebridge.schemas.calibration import (
    CalibrationReport,
    CalibrationSetInfo,
    CohortSummary,
    ComparisonInForce,
    DriftInfo,
)
from facebridge.schemas.embed import (
    AlignedCrop,
    DetectorInfo,
    Embedding,
    EmbedOptions,
    EmbedResponse,
    Face,
    ImageResult,
)
from facebridge.schemas.translate import MapUsed, TranslateResponse
from facebridge.schemas.verify import (
    FAR_POINTS,
    CalibrationData,
    CalibrationInForce,
    CohortInfo,
    Pair,
    ScoreNormalization,
    Side,
    ThresholdAnswer,
    VerifyResult,
)
from facebridge.vectors import check_matrix, parse_matrix

if TYPE_CHECKING:  # the vision stack (OpenCV, onnxruntime) loads only when faces are embedded
    from facebridge.vision.pipeline import DetectionOptions, FacePipeline, FaceResult

FaceInput = Side | tuple[str, Any]
"""One side of a comparison: a Side, or (model, embedding) / (model, photo bytes or Path)."""


@dataclass(frozen=True)
class Translation:
    """Translated rows (float32, L2-normalised) and the maps that produced them.

    `confidence` (float32, one per row, or None when a map of the path has no predictor or it was not
    asked for): the expected cosine between each translated template and the target model's own
    embedding of the same photo (facebridge/mapping/confidence.py; a chain multiplies its hops').
    """

    source: str
    target: str
    composed: bool
    maps: list[MapUsed]
    embeddings: np.ndarray = field(repr=False)
    confidence: np.ndarray | None = field(default=None, repr=False)

    def to_response(self) -> TranslateResponse:
        return TranslateResponse(
            source=self.source,
            target=self.target,
            composed=self.composed,
            maps=self.maps,
            embeddings=self.embeddings.tolist(),
            confidence=self.confidence.tolist() if self.confidence is not None else None,
        )


def maps_used(path: MapPath) -> list[MapUsed]:
    return [
        MapUsed(
            id=m.id,
            method=m.meta.method,
            file=m.file,
            mean_cosine=m.meta.quality.mean_cosine,
            accuracy_cross=m.meta.quality.accuracy_cross,
            accuracy_target_native=m.meta.quality.accuracy_target_native,
        )
        for m in path.maps
    ]


def threshold_answer(threshold: float, point: str, calibration: Calibration | None) -> ThresholdAnswer:
    """What a result states about its threshold: the rates measured at `point` of `calibration`, how
    sure they are and the data behind them; a raw threshold (no calibration) claims none of it."""
    if calibration is None:
        return ThresholdAnswer(threshold=threshold, operating_point=point)
    measured = calibration.thresholds[point]
    return ThresholdAnswer(
        threshold=threshold,
        operating_point=point,
        far_at_threshold=measured.far,
        tar_at_threshold=measured.tar,
        far_interval=measured.far_interval,
        far_range=measured.far_range,
        far_range_note=measured.far_range_note,
        calibration_data=CalibrationData.model_validate(calibration, from_attributes=True),
    )


def resolve_operating_point(far: float | None = None, point: str | None = None) -> str:
    """The operating point named by a FAR (0.01, 0.001, 0.0001) or by name; the default otherwise."""
    if far is not None:
        if far not in FAR_POINTS:
            raise ValueError(f"far must be one of {sorted(FAR_POINTS)} (the calibrated operating points)")
        return FAR_POINTS[far]
    return point or DEFAULT_OPERATING_POINT


def serves_both_maps(rule: ScoreRule) -> bool:
    """Whether a both-maps rule may judge answers: with AS-norm thresholds (a cohort of each model
    loaded), or with a deployment's own raw calibration. A shipped set's raw thresholds for both maps
    are pooled over its four populations: on LFW and CelebA people they reached FAR 5e-7 to 1.3e-5 at a
    nominal 1e-3, with a TAR of 0.27 to 0.89 where the one map's own thresholds kept 0.78 to 0.98
    (docs/thresholds.md). Without a cohort the one map answers, as its map file calibrates it."""
    if rule.calibration is None:
        return False
    return rule.units == "as-norm" or rule.source == "deployment"


class Bridge:
    """Maps (and, when loaded, recognizers) behind one object; every method is thread-safe."""

    def __init__(
        self,
        bank: MappingBank,
        pipeline: FacePipeline | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.bank = bank
        self.pipeline = pipeline
        self.settings = settings or Settings()

    @classmethod
    def from_defaults(
        cls, models: list[str] | None = None, settings: Settings | None = None, load_models: bool = True
    ) -> Bridge:
        """The installed maps and models (as `facebridge serve` would load them).

        `models` limits which recognizers/detectors load; `load_models=False` loads maps only, for
        programs that translate or verify templates and never see a photo.
        """
        settings = settings or Settings()
        bank = MappingBank.from_settings(settings)
        if not load_models:
            return cls(bank, None, settings)
        from facebridge.vision.loading import open_registry
        from facebridge.vision.pipeline import FacePipeline

        registry = open_registry(settings, model_ids=models if models is not None else settings.load_models)
        pipeline = FacePipeline(
            registry,
            settings.micro_batch_ms,
            settings.micro_batch_max,
            full_network_dir=settings.mappings_dir,
        )
        return cls(bank, pipeline, settings)

    # ---------------------------------------------------------------- what is known
    def known_models(self) -> set[str]:
        """Model ids the manifest knows (loaded or not) and spaces the maps name."""
        registry = self.pipeline.registry if self.pipeline is not None else None
        return set(self.bank.spaces) | (set(registry.status) if registry is not None else set())

    def _check_model(self, model: str, field: str) -> None:
        registry = self.pipeline.registry if self.pipeline is not None else None
        if model not in self.bank.spaces and (registry is None or model not in registry.status):
            raise UnknownModel(f"{field}: no model or space {model!r}", field)

    def _space_dim(self, model: str) -> int | None:
        space = self.bank.spaces.get(model)
        if space is not None:
            return space.dim
        registry = self.pipeline.registry if self.pipeline is not None else None
        if registry is None or model not in registry.status:
            return None
        return registry.status[model].entry.dim

    # ---------------------------------------------------------------- translate
    def map_path(self, source: str, target: str) -> MapPath:
        """The direct map, or the best chain of maps, from `source`'s space into `target`'s."""
        self._check_model(source, "source")
        self._check_model(target, "target")
        if source == target:
            raise SameSpace("source and target are the same space", "target")
        path = self.bank.find_path(source, target)
        if path is None:
            reachable = sorted(t for t in self.bank.spaces if t != source and self.bank.find_path(source, t))
            into = ", ".join(reachable) if reachable else "no other space"
            raise NoMapPath(
                f"no map or chain of maps from {source} to {target}; {source} maps into {into}", "target"
            )
        return path

    def translate(
        self,
        embeddings: np.ndarray | Sequence[Sequence[float]],
        source: str,
        target: str,
        out: np.ndarray | None = None,
        field: str = "embeddings",
        confidence: bool = True,
    ) -> Translation:
        """Carry (n, d_source) embeddings into `target`'s space; rows come back L2-normalised.

        `out` (float32, (n, d_target)) receives the result without a copy, as the bulk endpoint does.
        With `confidence` (and a predictor on every map of the path) each row's expected fidelity comes
        back too; it costs two matrix-vector products per hop.
        """
        path = self.map_path(source, target)
        dim = path.maps[0].meta.source.dim
        if isinstance(embeddings, np.ndarray):
            matrix = check_matrix(np.asarray(embeddings, dtype=np.float32), field, dim, len(embeddings) or 1)
        else:
            matrix = parse_matrix(list(embeddings), field, dim, max(len(embeddings), 1))
        return self.translate_along(path, matrix, out, confidence)

    def translate_along(
        self, path: MapPath, matrix: np.ndarray, out: np.ndarray | None = None, confidence: bool = True
    ) -> Translation:
        """`translate` for a path already resolved (`map_path`) and rows already checked
        (`check_matrix` / `parse_matrix`): the service's routes do both before choosing a thread."""
        if confidence and path.has_confidence:
            result, expected = path.apply_with_confidence(matrix, out)
        else:
            result, expected = path.apply(matrix, out), None
        return Translation(path.source, path.target, path.composed, maps_used(path), result, expected)

    # ---------------------------------------------------------------- verify
    def compare_plan(self, a_model: str, b_model: str, space: str | None = None) -> ComparisonPlan:
        """How a pair of models is compared: the space, the map path, the side mapped, the calibration."""
        self._check_model(a_model, "a.model")
        self._check_model(b_model, "b.model")
        if space is not None and space not in self.bank.spaces:
            raise UnknownModel(f"space: no space {space!r}", "space")
        return plan_comparison(self.bank, a_model, b_model, space)

    def verify(
        self,
        a: FaceInput,
        b: FaceInput,
        *,
        far: float | None = None,
        operating_point: str | None = None,
        threshold: float | None = None,
        space: str | None = None,
        normalization: Literal["auto", "none"] = "auto",
    ) -> VerifyResult:
        """Are `a` and `b` the same person? Each side is a template or a photo of its model."""
        return self.verify_pairs(
            [(a, b)],
            far=far,
            operating_point=operating_point,
            threshold=threshold,
            space=space,
            normalization=normalization,
        )[0]

    def verify_pairs(
        self,
        pairs: Sequence[Pair | tuple[FaceInput, FaceInput]],
        *,
        far: float | None = None,
        operating_point: str | None = None,
        threshold: float | None = None,
        space: str | None = None,
        normalization: Literal["auto", "none"] = "auto",
    ) -> list[VerifyResult]:
        """Verify a batch; pairs of the same two models are scored together in one matrix product.

        With a cohort serving a comparison (and `normalization="auto"`) scores are AS-normalised and
        judged with normalised thresholds; every result states both scores and the calibration used.
        """
        point = resolve_operating_point(far, operating_point)
        if space is not None and space not in self.bank.spaces:
            raise UnknownModel(f"space: no space {space!r}", "space")
        sides = [_as_pair(p) for p in pairs]
        vectors = self._side_vectors(sides)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, (side_a, side_b) in enumerate(sides):
            groups[(side_a.model, side_b.model)].append(index)
        results: list[VerifyResult | None] = [None] * len(sides)
        for (model_a, model_b), indices in groups.items():
            try:
                verdict = self._verdict(model_a, model_b, space, normalization, point, threshold)
            except FacebridgeError as error:
                raise error.at(f"pairs[{indices[0]}]") from None
            a, b = _in_space(verdict.plan, vectors, indices)
            raw = np.einsum("ij,ij->i", a, b)
            normalized = verdict.rule.normalize(raw, a, b)
            decided = normalized if verdict.units == "as-norm" and normalized is not None else raw
            for k, i in enumerate(indices):
                # every field is built here from checked values, so the result is not validated again
                results[i] = VerifyResult.model_construct(
                    index=i,
                    score=float(decided[k]),
                    raw_score=float(raw[k]),
                    normalized_score=None if normalized is None else float(normalized[k]),
                    match=bool(decided[k] >= verdict.threshold),
                    maps=list(verdict.maps),
                    **verdict.fields,
                )
        return [r for r in results if r is not None]

    def _verdict(
        self,
        model_a: str,
        model_b: str,
        space: str | None,
        normalization: Literal["auto", "none"],
        point: str,
        threshold: float | None,
    ) -> _Verdict:
        """How pairs of these two models are judged; kept with the bank's scoring (so a reload starts
        afresh) unless the caller gave a threshold of its own."""
        key = (model_a, model_b, space, normalization, point)
        known = self.bank.scoring.verdicts.get(key) if threshold is None else None
        if known is not None:
            return known
        plan, rule = self._plan_and_rule(model_a, model_b, space, normalization, threshold is None)
        answer, units = _judgement(plan, rule, point, threshold)
        fields: dict[str, Any] = {
            "calibrated": plan.calibrated or threshold is not None,
            "comparison": plan.kind,
            "space": plan.space,
            "translated": plan.translate_side,
            **_stated(rule, threshold is not None, units),
            **{name: getattr(answer, name) for name in ThresholdAnswer.model_fields},
        }
        maps = tuple(m.id for p in (plan.path, plan.reverse) if p is not None for m in maps_used(p))
        verdict = _Verdict(plan, rule, units, answer.threshold, maps, fields)
        if threshold is None:
            self.bank.scoring.verdicts[key] = verdict
        return verdict

    def _plan_and_rule(
        self,
        model_a: str,
        model_b: str,
        space: str | None,
        normalization: Literal["auto", "none"],
        calibrated: bool,
    ) -> tuple[ComparisonPlan, ScoreRule]:
        """Across models, through both maps where that is calibrated for the deployment's people (and
        the caller named neither a space nor a threshold of its own): it measured closer to the
        natives on people no map saw (docs/maps-across-populations.md); else through the one map. A
        deployment's own calibration of the one map still wins over shipped both-maps thresholds."""
        plan = plan_comparison(self.bank, model_a, model_b, space)
        rule = self.bank.scoring.rule(self.bank, plan, normalization)
        both = both_maps_plan(self.bank, model_a, model_b) if space is None and calibrated else None
        if both is not None:
            both_rule = self.bank.scoring.rule(self.bank, both, normalization)
            overridden = rule.source == "deployment" and both_rule.source != "deployment"
            if serves_both_maps(both_rule) and not overridden:
                return both, both_rule
        return plan, rule

    def _side_vectors(self, pairs: list[tuple[_Side, _Side]]) -> dict[tuple[int, str], np.ndarray]:
        """A unit vector for every side; photos are embedded, templates checked against their space."""
        vectors: dict[tuple[int, str], np.ndarray] = {}
        for index, pair in enumerate(pairs):
            for name, side in zip(("a", "b"), pair, strict=True):
                where = f"pairs[{index}].{name}"
                self._check_model(side.model, f"{where}.model")
                if side.embedding is not None:
                    vectors[(index, name)] = self._template(side, f"{where}.embedding")
                else:
                    vectors[(index, name)] = self._embed_side(side, where)
        return vectors

    def _template(self, side: _Side, where: str) -> np.ndarray:
        """A side's template as a unit float32 vector, checked against its space like `check_matrix`.

        The common case (one row of the right dim, finite, not zero) is decided from its dot product
        alone; anything else goes through `check_matrix` for its exact error (or, for huge finite
        values whose square overflows, its approval).
        """
        dim = self._space_dim(side.model)
        vector = np.asarray(side.embedding, np.float32)
        square = vector.dot(vector) if vector.ndim == 1 else None
        if (
            square is None
            or (dim is not None and len(vector) != dim)
            or not (np.isfinite(square) and square > 0)
        ):
            row = vector[None] if vector.ndim == 1 else np.asarray([side.embedding], np.float32)
            vector = check_matrix(row, where, dim, 1)[0]
            square = vector.dot(vector)
        normalized: np.ndarray = vector / np.sqrt(square)  # np.linalg.norm's own formula for a vector
        return normalized

    def _embed_side(self, side: _Side, where: str) -> np.ndarray:
        pipeline = self._require_pipeline("image sides need the recognizers")
        from facebridge.vision.pipeline import DetectionOptions

        try:
            recognizer = pipeline.registry.recognizer(side.model)
        except FacebridgeError as error:
            raise error.at(f"{where}.model") from None
        options = DetectionOptions(
            detector=self.settings.default_detector,
            score_threshold=self.settings.detection_threshold,
            max_faces=1,
        )
        try:
            face = pipeline.embed_image(self._decode(side.image or b""), [recognizer.model_id], options)[0]
        except FacebridgeError as error:
            raise error.at(f"{where}.image") from None
        vector: np.ndarray = face.embeddings[0].vector
        return vector

    def judgement(self, a_model: str, b_model: str, point: str = DEFAULT_OPERATING_POINT) -> str:
        """One line on how a comparison of the two models is judged now: units, threshold, calibration
        and cohorts (what `migrate` and `refit` say of the templates they leave behind)."""
        plan = self.compare_plan(a_model, b_model, b_model if a_model != b_model else None)
        rule = self.bank.scoring.rule(self.bank, plan)
        calibration = rule.calibration or plan.calibration
        if calibration is None:
            return f"{a_model} vs {b_model}: not calibrated ({rule.note})"
        threshold = calibration.thresholds[point].threshold
        cohorts = ", ".join(sorted({u.cohort.id for u in rule.cohorts})) or "none"
        return (
            f"{a_model} vs {b_model} at {point}: {rule.units} threshold {threshold:.4f} from the "
            f"{rule.source} calibration{f' {rule.calibration_file}' if rule.calibration_file else ''} "
            f"(cohorts: {cohorts}); {rule.note}"
        )

    def comparisons_in_force(self) -> list[ComparisonInForce]:
        """What judges each same-space, direct-map and both-maps comparison now: units, calibration,
        cohorts (a both-maps comparison is listed where it is served: `serves_both_maps`)."""
        plans = [plan_comparison(self.bank, s, s) for s in sorted(self.bank.space_calibrations)]
        plans += [plan_comparison(self.bank, a, b, b) for (a, b) in sorted(self.bank.maps)]
        both = [both_maps_plan(self.bank, a, b) for (a, b) in sorted(self.bank.maps) if a < b]
        plans += [p for p in both if p is not None and serves_both_maps(self.bank.scoring.rule(self.bank, p))]
        comparisons = []
        for plan in plans:
            rule = self.bank.scoring.rule(self.bank, plan)
            comparisons.append(
                ComparisonInForce(
                    comparison=comparison_key(plan) or plan.space,
                    units=rule.units,
                    source=rule.source,
                    file=rule.calibration_file,
                    cohorts=sorted({use.cohort.id for use in rule.cohorts}),
                    note=rule.note,
                )
            )
        return comparisons

    def calibration_report(self) -> CalibrationReport:
        """The calibrations and cohorts in force, what judges each comparison, and the drift watch."""
        from facebridge.cohort.drift import drift_of

        scoring = self.bank.scoring
        comparisons = self.comparisons_in_force()
        cohort_files = {c.file for c in scoring.cohorts.values()} | set(scoring.sets)
        return CalibrationReport(
            calibration_sets=[
                CalibrationSetInfo(
                    file=file,
                    kind=found.kind,
                    populations=found.populations,
                    normalization=found.normalization,
                    comparisons=len(found.entries),
                    created=found.created,
                )
                for file, found in scoring.sets.items()
            ],
            cohorts=[
                CohortSummary(id=c.id, file=c.file, space=c.meta.space, provenance=c.meta.provenance)
                for _, c in sorted(scoring.cohorts.items())
            ],
            comparisons=comparisons,
            drift=[DriftInfo.model_validate(d, from_attributes=True) for d in drift_of(self.bank)],
            refused=[
                f"{r.file}: {r.reason}"
                for r in self.bank.refused
                if r.file.endswith((".cohort.safetensors", ".calibration.json")) or r.file in cohort_files
            ],
        )

    # ---------------------------------------------------------------- embed
    def embed(
        self, image: bytes | Path | np.ndarray, models: list[str] | None = None, **options: Any
    ) -> ImageResult:
        """Detect, align and embed the faces of one photo (bytes, a path, or a BGR uint8 array)."""
        response = self.embed_images([image], EmbedOptions(models=models, **options))
        return response.results[0]

    def embed_images(
        self, images: Sequence[bytes | Path | np.ndarray], options: EmbedOptions | None = None
    ) -> EmbedResponse:
        """Embed a batch of photos with the same options; models are checked before any photo."""
        options = options or EmbedOptions()
        pipeline = self._require_pipeline("embedding needs the recognizers")
        model_ids = options.models or [self.settings.default_recognizer]
        detector = options.detector or self.settings.default_detector
        self._check_embed_models(pipeline, options, model_ids, detector)
        arrays = self._decode_all(images)
        from facebridge.vision.pipeline import DetectionOptions

        limit = min(options.max_faces or self.settings.max_faces_per_image, self.settings.max_faces_per_image)
        detection = DetectionOptions(
            detector=detector,
            score_threshold=options.detection_threshold
            if options.detection_threshold is not None
            else self.settings.detection_threshold,
            max_faces=1 if options.largest_only else limit,
            policy="largest",
        )
        faces = self._embed_faces(pipeline, arrays, options, model_ids, detection)
        results = [
            ImageResult(
                index=index,
                width=image.shape[1],
                height=image.shape[0],
                faces=[_face(f, pipeline if options.crops else None) for f in found],
            )
            for index, (image, found) in enumerate(zip(arrays, faces, strict=True))
        ]
        detector_info = None
        if not options.aligned:
            detector_info = DetectorInfo(id=detector, sha256=pipeline.registry.status[detector].sha256)
        return EmbedResponse(detector=detector_info, results=results)

    @staticmethod
    def _embed_faces(
        pipeline: FacePipeline,
        images: list[np.ndarray],
        options: EmbedOptions,
        model_ids: list[str],
        detection: DetectionOptions,
    ) -> list[list[FaceResult]]:
        """The faces of every image, each model running on the faces of all images together (a
        batch of 16 aligned crops is one run per model, not 16)."""
        normalize, mode, crops = options.normalize, options.mode, options.crops
        if options.aligned:
            return [[face] for face in pipeline.embed_aligned_many(images, model_ids, normalize, mode, crops)]
        found = []
        for index, image in enumerate(images):
            try:
                found.append((image, pipeline.detect_faces(image, detection)))
            except NoFaceFound as error:
                raise NoFaceFound(f"images[{index}]: {error}", f"images[{index}]") from None
        return pipeline.embed_faces_many(found, model_ids, normalize, mode, crops)

    @staticmethod
    def _check_embed_models(
        pipeline: FacePipeline, options: EmbedOptions, model_ids: list[str], detector: str
    ) -> None:
        """Every named model must exist and be loaded before any image is touched."""
        from facebridge.vision.pipeline import FULL_NETWORK

        checks: list[tuple[str, str, Callable[[str], object]]] = [
            (f"models[{i}]", m, pipeline.registry.recognizer) for i, m in enumerate(model_ids)
        ]
        if not options.aligned:
            checks.append(("detector", detector, pipeline.registry.detector))
        if options.mode == FULL_NETWORK:
            checks += [(f"models[{i}]", m, pipeline.full_network) for i, m in enumerate(model_ids)]
        for where, model_id, get in checks:
            try:
                get(model_id)
            except FacebridgeError as error:
                raise type(error)(f"{where}: {error}", where) from None

    def _decode_all(self, images: Sequence[bytes | Path | np.ndarray]) -> list[np.ndarray]:
        """Every image decoded, in order; a batch decodes on every core (Pillow releases the GIL while
        it inflates a PNG or a JPEG: 16 aligned 150-px PNGs took 9.2 ms one by one, as long as a sixth
        of dlib's batch run). The first undecodable image in order is the error, as one by one."""

        def one(indexed: tuple[int, bytes | Path | np.ndarray]) -> np.ndarray:
            index, image = indexed
            try:
                return image if isinstance(image, np.ndarray) else self._decode(image)
            except FacebridgeError as error:
                raise error.at(f"images[{index}]") from None

        if len(images) < 2:
            return [one(indexed) for indexed in enumerate(images)]
        return list(_decode_pool().map(one, enumerate(images)))

    def _decode(self, image: bytes | str | Path) -> np.ndarray:
        from facebridge.vision.images import decode_image

        if isinstance(image, Path):
            data = image.read_bytes()
        elif isinstance(image, str):
            data = decode_base64(image, self.settings.max_image_bytes)
        else:
            data = image
        return decode_image(data, self.settings.max_image_bytes, self.settings.max_image_pixels)

    def _require_pipeline(self, why: str) -> FacePipeline:
        if self.pipeline is None:
            raise NotReady(f"models are not loaded: {why}")
        return self.pipeline


_DECODE_POOL: ThreadPoolExecutor | None = None
_DECODE_POOL_LOCK = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    """The threads batches of photos are decoded on, one per core, started on first use."""
    global _DECODE_POOL
    with _DECODE_POOL_LOCK:
        if _DECODE_POOL is None:
            _DECODE_POOL = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="facebridge-decode")
        return _DECODE_POOL


@dataclass(frozen=True)
class _Verdict:
    """A comparison's plan, score rule and units, its threshold, and the fields of every result."""

    plan: ComparisonPlan
    rule: ScoreRule
    units: Units
    threshold: float
    maps: tuple[str, ...]
    fields: dict[str, Any]


@dataclass(frozen=True)
class _Side:
    model: str
    embedding: Any = None
    image: bytes | str | Path | None = None


def _as_side(value: FaceInput) -> _Side:
    if isinstance(value, Side):
        return _Side(value.model, value.embedding, value.image)
    model, data = value
    if isinstance(data, bytes | Path):
        return _Side(model, None, data)
    return _Side(model, data, None)


def _as_pair(pair: Pair | tuple[FaceInput, FaceInput]) -> tuple[_Side, _Side]:
    if isinstance(pair, Pair):
        return _as_side(pair.a), _as_side(pair.b)
    return _as_side(pair[0]), _as_side(pair[1])


def _in_space(
    plan: ComparisonPlan, vectors: dict[tuple[int, str], np.ndarray], indices: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of a group as unit rows in the comparison space (the translated side mapped)."""
    if len(indices) == 1:  # a single pair: its two rows as views, not stacked copies
        a, b = vectors[(indices[0], "a")][None], vectors[(indices[0], "b")][None]
    else:
        a = np.stack([vectors[(i, "a")] for i in indices])
        b = np.stack([vectors[(i, "b")] for i in indices])
    return plan.sides(a, b)


def _judgement(
    plan: ComparisonPlan, rule: ScoreRule, point: str, raw_threshold: float | None
) -> tuple[ThresholdAnswer, Units]:
    """The threshold answer and the units it is in: a caller's raw threshold, the rule's calibration,
    or the plan's shipped raw one."""
    if raw_threshold is not None:
        return threshold_answer(raw_threshold, "custom", None), "cosine"
    if rule.calibration is None:
        return threshold_answer(*resolve_threshold(plan, point, None)), "cosine"
    return threshold_answer(rule.calibration.thresholds[point].threshold, point, rule.calibration), rule.units


def _stated(rule: ScoreRule, custom: bool, units: Units) -> dict[str, Any]:
    """What a result says about the normalisation and calibration behind its decision (built once
    per rule: the same objects serve every later request of the same comparison)."""
    known = rule.stated.get((custom, units))
    if known is None:
        known = rule.stated[(custom, units)] = _describe(rule, custom, units)
    return known


def _describe(rule: ScoreRule, custom: bool, units: Units) -> dict[str, Any]:
    normalization = None
    if rule.can_normalize:
        normalization = ScoreNormalization(
            top_k=rule.top_k,
            top_k_share=rule.top_k_share,
            deviation_power=rule.deviation_power,
            blend=rule.blend,
            level_mean=None if rule.scale is None else rule.scale.mean,
            level_std=None if rule.scale is None else rule.scale.std,
            cohorts=[
                CohortInfo(
                    id=use.cohort.id,
                    model=use.cohort.model,
                    size=len(use.cohort),
                    kind=use.cohort.meta.provenance.kind,
                    source=use.cohort.meta.provenance.source,
                    side=use.side,
                    via=list(use.via),
                    top_k=top_k_for(len(use.cohort), rule.top_k, rule.top_k_share),
                )
                for use in rule.cohorts
            ],
        )
    if custom:
        calibration = CalibrationInForce(
            source="custom", file=None, units="cosine", note="a raw cosine threshold given by the caller"
        )
    else:
        calibration = CalibrationInForce(
            source=rule.source,
            file=rule.calibration_file,
            units=units,
            note=rule.note,
        )
    return {"normalization": normalization, "calibration": calibration}


def decode_base64(text: str, max_bytes: int, where: str = "image") -> bytes:
    """Base64 (a data: URL prefix accepted) to bytes, refusing oversize input before decoding it."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise ImageTooLarge(f"{where} exceeds {max_bytes} bytes", where)
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidBase64(f"{where}: invalid base64: {error}", where) from None


def _crops(result: FaceResult, pipeline: FacePipeline) -> list[AlignedCrop]:
    """The aligned crops a face was embedded from, as base64 PNG (what `crops: true` asks for)."""
    import cv2

    crops = []
    for model_id, crop in result.crops.items():
        ok, png = cv2.imencode(".png", crop)
        if not ok:  # pragma: no cover (a uint8 BGR array always encodes)
            continue
        crops.append(
            AlignedCrop(
                model=model_id,
                alignment=pipeline.registry.recognizer(model_id).entry.alignment,
                size=int(crop.shape[0]),
                png=base64.b64encode(png.tobytes()).decode("ascii"),
            )
        )
    return crops


def _face(result: FaceResult, pipeline: FacePipeline | None = None) -> Face:
    """The answer's face; with `pipeline` (crops asked for), its aligned crops too."""
    det = result.detection
    return Face(
        box=None if det is None else [round(float(v), 2) for v in det.box],
        landmarks=None
        if det is None
        else [[round(float(x), 2), round(float(y), 2)] for x, y in det.landmarks],
        detection_score=None if det is None else round(det.score, 5),
        embeddings=[
            Embedding(
                model=e.model_id,
                sha256=e.sha256,
                dim=len(e.vector),
                normalized=e.normalized,
                mode=e.mode,
                embedding=e.vector.astype(float).tolist(),
            )
            for e in result.embeddings
        ],
        crops=_crops(result, pipeline) if pipeline is not None else None,
    )
