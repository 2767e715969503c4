"""Working out how to feed an unknown ONNX face recognizer, so that adding one needs no guesswork.

A recognizer file says what tensor it takes but not which pixels: colour order, scaling and crop are
conventions of whoever trained it, and a wrong guess still produces vectors, only worse ones. So the
probe reads what the graph does say (input and output names, layout, size, embedding width), then
*measures* every usual convention on labelled photos (a folder per person) and keeps the one under
which genuine pairs and impostor pairs separate best. Each photo is detected once and aligned once per
template, and every candidate is run through the service's own `Recognizer`, so what was measured is
exactly what will be served.

`propose_entry` is the probe; `facebridge models add` (facebridge/cli/models.py `add_model`) runs it,
installs the file and writes the entry into the user manifest (facebridge/vision/user_manifest.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import onnxruntime as ort
from scipy.stats import rankdata

from facebridge.config import Settings
from facebridge.embedding_cache import DATASET_THRESHOLDS
from facebridge.evaluation.metrics import eer
from facebridge.vision.alignment import ARCFACE_TEMPLATE, align_face
from facebridge.vision.detection import FaceDetector, YuNetDetector, select_faces
from facebridge.vision.images import decode_image
from facebridge.vision.manifest import AlignmentTemplate, ModelEntry, sha256_file
from facebridge.vision.recognizer import Recognizer
from facebridge.vision.runtime import choose_providers, create_session
from facebridge.vision.user_manifest import UserManifestError, check_entry

log = logging.getLogger(__name__)

Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR"]

# input sizes tried when the graph leaves height and width open (the common face-recognizer inputs)
DYNAMIC_SIZES = (112, 150, 160, 224)
EMBED_BATCH = 64
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# a colour-order margin below this (in separation score) is reported as a near tie
NEAR_TIE = 0.002
# a screened candidate this far (separation score) below the screening's best is not scored again on the
# full sample: on the screening photos of the shipped recognizers, wrong scalings scored 51-67% against
# 97-100% for the best, and the real rivals came within 2 points of it (docs/adding-models.md)
FINAL_MARGIN = 0.10


class ProbeError(UserManifestError):
    """The file or the photos cannot be probed into a manifest entry; the message says why and what to do."""


# --- the graph ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphInfo:
    """What the ONNX graph itself says about its input and output, and what that suggests."""

    input_name: str
    input_shape: tuple[int | str | None, ...]
    outputs: tuple[tuple[str, tuple[int | str | None, ...]], ...]
    layouts: tuple[Layout, ...]  # one when the channel axis is clear, both when the graph does not say
    sizes: tuple[int, ...]  # one when height and width are fixed, DYNAMIC_SIZES otherwise
    accepted: tuple[tuple[Layout, int], ...]  # the (layout, size) pairs the graph ran on
    output_name: str
    output_index: int
    dim: int
    batch: Literal["dynamic", "fixed"]

    @property
    def layout(self) -> Layout:
        return self.layouts[0]

    @property
    def size(self) -> int:
        return self.sizes[0]


def open_session(path: Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> ort.InferenceSession:
    """An onnxruntime session, with a clear error when the file is missing or not a loadable ONNX graph."""
    if not path.is_file():
        raise ProbeError(f"{path}: no such file")
    try:
        return create_session(path, list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProbeError(f"{path} is not an ONNX model onnxruntime can load: {first_line}") from exc


def _layouts(shape: Sequence[int | str | None]) -> tuple[Layout, ...]:
    """NCHW when axis 1 holds 3 channels, NHWC when the last axis does; both when neither is fixed."""
    if shape[1] == 3:
        return ("NCHW",)
    if shape[3] == 3:
        return ("NHWC",)
    if isinstance(shape[1], int) and isinstance(shape[3], int):
        raise ProbeError(f"input shape {list(shape)} has no axis of 3 colour channels")
    return ("NCHW", "NHWC")


def _sizes(shape: Sequence[int | str | None], layout: Layout) -> tuple[int, ...]:
    """The square input size the graph fixes, or the usual candidates when it leaves it open."""
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if isinstance(height, int) and isinstance(width, int):
        if height != width:
            raise ProbeError(f"input is {height}x{width}; the manifest describes square crops only")
        return (height,)
    fixed = height if isinstance(height, int) else width if isinstance(width, int) else None
    return (fixed,) if fixed is not None else DYNAMIC_SIZES


def _dummy_outputs(session: ort.InferenceSession, layout: Layout, size: int) -> list[np.ndarray] | None:
    """Run one grey image through the graph to learn output shapes the file leaves symbolic."""
    shape = (1, 3, size, size) if layout == "NCHW" else (1, size, size, 3)
    try:
        outputs = session.run(None, {session.get_inputs()[0].name: np.full(shape, 0.5, np.float32)})
    except Exception:  # a layout/size the graph refuses: the caller tries the next one
        return None
    return [np.asarray(o) for o in outputs]


def _embedding_output(outputs: Sequence[np.ndarray]) -> int | None:
    """The embedding: the widest 2-D output (heads such as gender or age are narrower), else the first
    output if it is a vector in disguise (batch x 1 x 1 x dim); None when no output looks like one."""
    two_d = [i for i, o in enumerate(outputs) if o.ndim == 2]
    if two_d:
        return max(two_d, key=lambda i: (outputs[i].shape[1], -i))
    first = outputs[0]
    return 0 if first.ndim >= 2 and first.shape[-1] == int(np.prod(first.shape[1:])) else None


def inspect_graph(path: Path, session: ort.InferenceSession | None = None) -> GraphInfo:
    """Names, shapes and the proposed layout / size / embedding output of a recognizer file."""
    session = session or open_session(path)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ProbeError(f"{path.name}: {len(inputs)} graph inputs; a recognizer takes one image tensor")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ProbeError(f"{path.name}: input {inputs[0].name!r} has shape {list(shape)}, not a 4-D image")
    layouts = _layouts(shape)
    runs = [(lay, size, _dummy_outputs(session, lay, size)) for lay in layouts for size in _sizes(shape, lay)]
    working = [(lay, size, out) for lay, size, out in runs if out is not None]
    if not working:
        raise ProbeError(f"{path.name}: the graph refuses every input tried ({len(runs)} layouts/sizes)")
    outputs = working[0][2]
    index = _embedding_output(outputs)
    if index is None:
        shapes = ", ".join(str(list(o.shape)) for o in outputs)
        raise ProbeError(f"{path.name}: no output is a batch of vectors ({shapes}); is it a recognizer?")
    return GraphInfo(
        input_name=inputs[0].name,
        input_shape=shape,
        outputs=tuple((o.name, tuple(o.shape)) for o in session.get_outputs()),
        layouts=tuple(dict.fromkeys(lay for lay, _, _ in working)),
        sizes=tuple(dict.fromkeys(size for _, size, _ in working)),
        accepted=tuple((lay, size) for lay, size, _ in working),
        output_name=session.get_outputs()[index].name,
        output_index=index,
        dim=int(np.prod(outputs[index].shape[1:])),
        batch="fixed" if isinstance(shape[0], int) else "dynamic",
    )


# --- candidates -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalisation:
    """Pixel scaling as the manifest states it: (pixel - mean) / std, one value for all channels."""

    name: str
    mean: float
    std: float


# (x/255 - 0.5)/0.5 is (x - 127.5)/127.5 exactly, so it is one candidate. The manifest holds one mean and
# one std for all channels, so ImageNet's per-channel values enter as their channel averages.
NORMALISATIONS = (
    Normalisation("(x-127.5)/128", 127.5, 128.0),
    Normalisation("(x-127.5)/127.5 = (x/255-0.5)/0.5", 127.5, 127.5),
    Normalisation("x/255", 0.0, 255.0),
    Normalisation("imagenet (x/255-0.449)/0.226", 0.449 * 255.0, 0.226 * 255.0),
    Normalisation("raw 0..255", 0.0, 1.0),
)
COLORS: tuple[Color, ...] = ("RGB", "BGR")


@dataclass(frozen=True)
class Candidate:
    """One complete way of feeding the graph: crop template, layout, colour order and scaling."""

    template: str
    size: int
    layout: Layout
    color: Color
    normalisation: Normalisation

    @property
    def label(self) -> str:
        return f"{self.template} {self.layout} {self.color} {self.normalisation.name}"


def scaled_arcface(size: int) -> AlignmentTemplate:
    """The ArcFace template scaled to `size` pixels: the crop a resized 112 ArcFace crop would give."""
    points = [(float(x) * size / 112.0, float(y) * size / 112.0) for x, y in ARCFACE_TEMPLATE]
    return AlignmentTemplate(size=size, points=points, note=f"ArcFace 112 template scaled to {size}")


def templates_for(
    sizes: Iterable[int], known: Mapping[str, AlignmentTemplate]
) -> dict[str, AlignmentTemplate]:
    """Per size, the known templates of that size, or the ArcFace template scaled to it if none is."""
    chosen: dict[str, AlignmentTemplate] = {}
    for size in sizes:
        matching = {name: t for name, t in known.items() if t.size == size}
        chosen |= matching or {f"arcface{size}": scaled_arcface(size)}
    return chosen


def candidates_for(info: GraphInfo, templates: Mapping[str, AlignmentTemplate]) -> list[Candidate]:
    """Every template x layout x colour order x normalisation the graph could plausibly want."""
    return [
        Candidate(name, template.size, layout, color, norm)
        for name, template in templates.items()
        for layout in info.layouts
        if (layout, template.size) in info.accepted
        for color in COLORS
        for norm in NORMALISATIONS
    ]


# --- labelled photos, detected once and aligned once per template ----------------------------------------


def central_landmarks(detector: FaceDetector, image_bgr: np.ndarray) -> np.ndarray | None:
    """The central face's five landmarks, with the dataset thresholds the LFW caches use; None if none."""
    for threshold in DATASET_THRESHOLDS:
        faces = select_faces(detector.detect(image_bgr, threshold), image_bgr.shape, "center", 1)
        if faces:
            return np.asarray(faces[0].landmarks, np.float64).reshape(5, 2)
    return None


def read_photo(root: Path, rel: str) -> np.ndarray:
    return decode_image((root / rel).read_bytes(), max_bytes=1 << 26, max_pixels=1 << 26)


class AlignedPhotos:
    """Photos with their central face's landmarks; aligned crops are made once per template and kept.

    A photo without a detected face is resized whole (as dataset embedding does), so a pair list keeps
    every pair; `found` says which had a face.
    """

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        identities: Sequence[str],
        landmarks: Sequence[np.ndarray | None],
    ):
        self.root = root
        self.paths = list(paths)
        self.identities = np.asarray(identities, dtype=str)
        self.landmarks = list(landmarks)
        self.found = np.array([lm is not None for lm in self.landmarks], dtype=bool)
        self._crops: dict[tuple[int, tuple[tuple[float, float], ...]], np.ndarray] = {}

    @classmethod
    def detect(
        cls, root: Path, paths: Sequence[str], identities: Sequence[str], detector: FaceDetector
    ) -> AlignedPhotos:
        """Photos whose central face is found by `detector` (each photo is read and detected once)."""
        return cls(root, paths, identities, [central_landmarks(detector, read_photo(root, p)) for p in paths])

    def __len__(self) -> int:
        return len(self.paths)

    def clear(self) -> None:
        """Drop the cached crops (a few hundred MB for thousands of photos at 224 pixels)."""
        self._crops.clear()

    def crops(self, template: AlignmentTemplate) -> np.ndarray:
        """(n, size, size, 3) BGR uint8 crops aligned to `template` (computed on first use)."""
        key = (template.size, tuple(template.points))
        if key not in self._crops:
            self._crops[key] = np.stack([self._crop(i, template) for i in range(len(self))])
        return self._crops[key]

    def _crop(self, index: int, template: AlignmentTemplate) -> np.ndarray:
        image = read_photo(self.root, self.paths[index])
        landmarks = self.landmarks[index]
        if landmarks is None:
            return cv2.resize(image, (template.size, template.size), interpolation=cv2.INTER_AREA)
        return align_face(image, landmarks, template)

    def subset(self, keep: np.ndarray) -> AlignedPhotos:
        """The photos selected by a boolean mask, sharing landmarks and cached crops (no re-detection)."""
        keep = np.asarray(keep, dtype=bool)
        other = AlignedPhotos(
            self.root,
            [p for p, k in zip(self.paths, keep, strict=True) if k],
            self.identities[keep].tolist(),
            [lm for lm, k in zip(self.landmarks, keep, strict=True) if k],
        )
        other._crops = {key: crops[keep] for key, crops in self._crops.items()}
        return other


def person_photos(root: Path, person: str) -> list[str]:
    folder = root / person
    return sorted(f"{person}/{p.name}" for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def sample_people(
    root: Path, people: int, per_person: int, seed: int = 0, exclude: Collection[str] = ()
) -> tuple[list[str], list[str]]:
    """A seeded sample of people with >= 2 photos (so genuine pairs exist): (relative paths, identities)."""
    if not root.is_dir():
        raise ProbeError(f"{root}: not a folder of labelled photos")
    eligible = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude):
        photos = person_photos(root, folder.name)
        if len(photos) >= 2:
            eligible.append((folder.name, photos))
    if len(eligible) < 2:
        raise ProbeError(f"{root}: needs a folder per person, at least two people with two or more photos")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(eligible))[:people]
    paths, identities = [], []
    for i in order:
        person, photos = eligible[i]
        picked = sorted(rng.choice(len(photos), min(per_person, len(photos)), replace=False))
        paths += [photos[j] for j in picked]
        identities += [person] * len(picked)
    return paths, identities


def sample_photos(
    root: Path,
    detector: FaceDetector,
    people: int = 120,
    per_person: int = 5,
    seed: int = 0,
    exclude: Collection[str] = (),
) -> AlignedPhotos:
    """Labelled photos for fitting: a seeded sample, keeping only photos where a face was found."""
    paths, identities = sample_people(root, people, per_person, seed, exclude)
    photos = AlignedPhotos.detect(root, paths, identities, detector)
    kept = photos.subset(photos.found)
    if len(set(kept.identities.tolist())) < 2:
        raise ProbeError(f"{root}: too few photos with a detectable face to compare people")
    return kept


def default_detector(settings: Settings) -> FaceDetector:
    """YuNet from the settings' models folder: the detector every dataset study in facebridge uses."""
    entry = settings.load_manifest().get("yunet")
    if entry is None:
        raise ProbeError("the manifest has no 'yunet' detector entry")
    path = settings.models_dir / entry.file
    if not path.is_file():
        raise ProbeError(f"detector file {path} is missing: run `facebridge models fetch yunet`")
    return YuNetDetector(entry, path)


# --- scoring --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Separation:
    """How well cosine similarity separates genuine from impostor pairs of a labelled photo set."""

    accuracy: float  # balanced: mean of true accept and true reject rates at the best threshold
    eer: float  # equal error rate (interpolated)
    auc: float
    genuine: int
    impostor: int

    @property
    def score(self) -> float:
        """What candidates are ranked by: the mean of balanced accuracy and 1 - EER.

        Both measure the operating point LFW-style accuracy is about; the first is a step function of
        the few pairs nearest the threshold, the second is interpolated. On random draws of CelebA
        people their mean picked the right colour order more often than either alone, and more often
        than AUC (which weighs the far tails) except on the smallest draws (docs/adding-models.md)."""
        return (self.accuracy + 1.0 - self.eer) / 2.0


def pair_similarities(embeddings: np.ndarray, identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-person label of every unordered pair (embeddings are unit length)."""
    rows, cols = np.triu_indices(len(embeddings), k=1)
    similarity = (embeddings @ embeddings.T)[rows, cols]  # not row pairs: 180k x 1024 floats is ~1 GB
    return similarity, identities[rows] == identities[cols]


def best_threshold_accuracy(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Best mean of true accept and true reject rates over all thresholds (inputs sorted).

    The threshold is chosen on the same pairs it scores: an in-sample figure that ranks candidates
    against each other, not an accuracy to report (facebridge/evaluation/verification.py
    `balanced_accuracy` chooses it on other folds). Balanced, because all pairs of a photo set hold
    ~100 impostors per genuine pair, and plain accuracy would then reward rejecting everything."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    accept = 1.0 - np.searchsorted(genuine, thresholds, side="left") / len(genuine)
    reject = np.searchsorted(impostor, thresholds, side="left") / len(impostor)
    return float(np.max((accept + reject) / 2.0))


def rank_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half)."""
    ranks = rankdata(np.concatenate([genuine, impostor]))
    n_gen, n_imp = len(genuine), len(impostor)
    return float((ranks[:n_gen].sum() - n_gen * (n_gen + 1) / 2) / (n_gen * n_imp))


def separation(embeddings: np.ndarray, identities: np.ndarray) -> Separation:
    """Balanced accuracy, EER and AUC over all pairs of the photos; a candidate whose embeddings are
    not finite (it overflows) gets chance level rather than an error."""
    scores, same = pair_similarities(embeddings, identities)
    genuine, impostor = np.sort(scores[same]), np.sort(scores[~same])
    if not np.all(np.isfinite(scores)):
        return Separation(0.5, 0.5, 0.5, len(genuine), len(impostor))
    return Separation(
        best_threshold_accuracy(genuine, impostor),
        eer(scores, same),
        rank_auc(genuine, impostor),
        len(genuine),
        len(impostor),
    )


@dataclass(frozen=True)
class CandidateScore:
    candidate: Candidate
    separation: Separation
    photos: int
    stage: Literal["screen", "full"]  # "screen": scored on the screening photos only, then dropped

    @property
    def key(self) -> tuple[float, float]:
        """Ranking: the separation score; AUC only breaks exact ties."""
        return (self.separation.score, self.separation.auc)


def best_first(scores: Iterable[CandidateScore]) -> list[CandidateScore]:
    return sorted(scores, key=lambda s: s.key, reverse=True)


def entry_for(
    candidate: Candidate, info: GraphInfo, model_id: str, file: str, sha256: str | None
) -> dict[str, Any]:
    """The manifest entry (a plain dict, TOML-ready) that feeds the graph as `candidate` says."""
    entry: dict[str, Any] = {
        "id": model_id,
        "kind": "recognizer",
        "file": file,
        "dim": info.dim,
        "input_name": info.input_name,
        "layout": candidate.layout,
        "size": candidate.size,
        "color": candidate.color,
        "mean": float(candidate.normalisation.mean),
        "std": float(candidate.normalisation.std),
        "output": info.output_name,
        "output_index": info.output_index,
        "batch": info.batch,
        "alignment": candidate.template,
    }
    if sha256 is not None:
        entry["sha256"] = sha256
    return entry


def embed_with(recognizer: Recognizer, crops: np.ndarray, batch: int = EMBED_BATCH) -> np.ndarray:
    """Unit-length embeddings of crops through the service's own preprocessing, in bounded batches."""
    parts = [recognizer.embed(list(crops[i : i + batch])) for i in range(0, len(crops), batch)]
    return np.concatenate(parts) if parts else np.empty((0, recognizer.dim), np.float32)


class CandidateScorer:
    """Scores candidates of one graph on one photo set, building a Recognizer per candidate."""

    def __init__(
        self,
        session: ort.InferenceSession,
        info: GraphInfo,
        model_id: str,
        templates: Mapping[str, AlignmentTemplate],
    ):
        self.session, self.info, self.model_id, self.templates = session, info, model_id, templates

    def recognizer(self, candidate: Candidate) -> Recognizer:
        entry = ModelEntry.model_validate(entry_for(candidate, self.info, self.model_id, "probe.onnx", None))
        return Recognizer(entry, self.session, "")

    def score(
        self, candidate: Candidate, photos: AlignedPhotos, stage: Literal["screen", "full"]
    ) -> CandidateScore:
        crops = photos.crops(self.templates[candidate.template])
        with np.errstate(all="ignore"):
            embeddings = embed_with(self.recognizer(candidate), crops)
        return CandidateScore(candidate, separation(embeddings, photos.identities), len(photos), stage)


def screening_subset(photos: AlignedPhotos, people: int) -> AlignedPhotos:
    """The photos of the first `people` identities (in sample order) for a cheap first round."""
    first = list(dict.fromkeys(photos.identities.tolist()))[:people]
    return photos.subset(np.isin(photos.identities, first))


def rank_candidates(
    scorer: CandidateScorer,
    candidates: Sequence[Candidate],
    photos: AlignedPhotos,
    screen_people: int = 30,
    keep: int = 4,
    final_margin: float = FINAL_MARGIN,
) -> list[CandidateScore]:
    """All candidates, best first. With many candidates, a screening round on a few people drops all
    but the `keep` best, and any of those more than `final_margin` below the best, before the full photo
    set is used: most conventions fail by a wide margin, so scoring them on every photo would only cost
    time."""
    n_people = len(set(photos.identities.tolist()))
    if len(candidates) <= keep or n_people <= screen_people * 1.5:
        return best_first(scorer.score(c, photos, "full") for c in candidates)
    for name in dict.fromkeys(c.template for c in candidates):
        photos.crops(scorer.templates[name])  # aligned once here, shared by the screening subset
    screen = screening_subset(photos, screen_people)
    screened = best_first(scorer.score(c, screen, "screen") for c in candidates)
    floor = screened[0].separation.score - final_margin
    finalists = [s for s in screened[:keep] if s.separation.score >= floor]
    finals = [scorer.score(s.candidate, photos, "full") for s in finalists]
    return best_first(finals) + screened[len(finalists) :]


# --- the proposal ---------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """The proposed entry, the templates it needs beyond the base manifest, and every score measured."""

    entry: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    chosen: CandidateScore
    table: list[CandidateScore]
    graph: GraphInfo
    photos_dir: Path
    people: int
    photos: int
    notes: list[str] = field(default_factory=list)

    def format_table(self, limit: int | None = None) -> str:
        """The candidate table as plain text, best first (what `facebridge models add` prints); rows
        scored only in the screening round come last, under their own heading, as their photo set is
        smaller and their figures are not comparable with the rows above."""
        header = f"{'candidate':<58} {'photos':>6} {'bal.acc':>8} {'1-EER':>8} {'score':>8} {'AUC':>7}"
        lines = [header]
        rows = self.table[:limit]
        for i, row in enumerate(rows):
            if row.stage == "screen" and (i == 0 or rows[i - 1].stage != "screen"):
                lines.append(f"-- dropped after screening on {row.photos} photos --")
            sep, mark = row.separation, " *" if row is self.chosen else ""
            lines.append(
                f"{row.candidate.label:<58} {row.photos:>6} {sep.accuracy * 100:7.2f}% "
                f"{(1 - sep.eer) * 100:7.2f}% {sep.score * 100:7.2f}% {sep.auc:7.4f}{mark}"
            )
        return "\n".join(lines)


def base_templates(settings: Settings | None) -> dict[str, AlignmentTemplate]:
    return dict((settings or Settings()).load_manifest().templates)


def propose_entry(
    path: Path,
    model_id: str,
    photos_dir: Path | None,
    *,
    settings: Settings | None = None,
    photos: AlignedPhotos | None = None,
    people: int = 120,
    per_person: int = 5,
    seed: int = 0,
    screen_people: int = 30,
    keep: int = 4,
    final_margin: float = FINAL_MARGIN,
) -> ProbeResult:
    """Probe `path` and propose its manifest entry (valid as a ModelEntry, sha256 included).

    `photos` (already detected, e.g. shared between several probes) takes the place of sampling
    `photos_dir`. The base manifest's templates are tried where their size matches the input.
    """
    settings = settings or Settings()
    session = open_session(path, choose_providers(settings.providers))
    info = inspect_graph(path, session)
    log.info(
        "%s: input %s %s, layouts %s, sizes %s, output %r dim %d",
        path.name,
        info.input_name,
        list(info.input_shape),
        info.layouts,
        info.sizes,
        info.output_name,
        info.dim,
    )
    known = base_templates(settings)
    templates = templates_for(info.sizes, known)
    candidates = candidates_for(info, templates)
    check_entry(entry_for(candidates[0], info, model_id, path.name, None))
    if photos is None:
        if photos_dir is None:
            raise ProbeError("no labelled photos given: pass a folder with a sub-folder of photos per person")
        photos = sample_photos(photos_dir, default_detector(settings), people, per_person, seed)
    scorer = CandidateScorer(session, info, model_id, templates)
    table = rank_candidates(scorer, candidates, photos, screen_people, keep, final_margin)
    chosen = table[0]
    log.info("%s: chose %s on %d photos", path.name, chosen.candidate.label, len(photos))
    entry = entry_for(chosen.candidate, info, model_id, path.name, sha256_file(path))
    entry["source"] = {"note": provenance_note(path, chosen, photos)}
    new_templates = {
        name: templates[name].model_dump(exclude_defaults=True)
        for name in [chosen.candidate.template]
        if name not in known
    }
    return ProbeResult(
        entry,
        new_templates,
        chosen,
        table,
        info,
        photos.root,
        len(set(photos.identities.tolist())),
        len(photos),
        graph_notes(info, chosen, table),
    )


def provenance_note(path: Path, chosen: CandidateScore, photos: AlignedPhotos) -> str:
    """Where the entry came from, kept in the manifest so a later reader knows it was measured."""
    sep = chosen.separation
    return (
        f"added by `facebridge models add` from {path.name}; preprocessing chosen by the probe: "
        f"{chosen.candidate.label}, balanced accuracy {sep.accuracy * 100:.2f}%, EER {sep.eer * 100:.2f}% on "
        f"{sep.genuine} genuine and {sep.impostor} impostor pairs of {len(photos)} photos "
        f"in {photos.root.name}"
    )


def graph_notes(info: GraphInfo, chosen: CandidateScore, table: Sequence[CandidateScore]) -> list[str]:
    """Warnings worth printing: a weak winner, a near tie on colour order, a guessed output."""
    notes = []
    if chosen.separation.accuracy < 0.8:
        notes.append("the best candidate separates people poorly: check the photos and the file")
    rival = next((s for s in table[1:] if s.candidate.color != chosen.candidate.color), None)
    if rival is not None and chosen.separation.score - rival.separation.score < NEAR_TIE:
        notes.append(f"colour order is a near tie ({rival.candidate.label} scores almost the same)")
    if len(info.outputs) > 1:
        notes.append(f"output {info.output_name!r} (index {info.output_index}) taken as the embedding")
    return notes
