"""Where a map's evaluation sidecar lives and how it is read and written (no numerics: the service
imports this; facebridge/evaluation/map_evaluation.py computes the contents)."""

from __future__ import annotations

import threading
from pathlib import Path

from facebridge.schemas.evaluation import EVALUATIONS_FOLDER, MapEvaluation, evaluation_filename


def evaluation_path(mappings_dir: Path, source: str, target: str) -> Path:
    return mappings_dir / EVALUATIONS_FOLDER / evaluation_filename(source, target)


def save_evaluation(path: Path, evaluation: MapEvaluation) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(evaluation.model_dump_json(exclude={"current"}, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


_CACHE: dict[Path, tuple[float, MapEvaluation]] = {}
_CACHE_LOCK = threading.Lock()


def load_evaluation(path: Path) -> MapEvaluation:
    """The parsed file, kept while its modification time is unchanged (FileNotFoundError when absent)."""
    stamp = path.stat().st_mtime
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    evaluation = MapEvaluation.model_validate_json(path.read_bytes())
    with _CACHE_LOCK:
        _CACHE[path] = (stamp, evaluation)
    return evaluation
