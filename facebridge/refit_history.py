"""The refit history: one JSON line per `facebridge refit` that ran to a decision, appended to
MAPPINGS_DIR/refits/history.jsonl (the folder the refitted map is written into), read by GET /refits.

The mapping bank loads only map, space and calibration files, so the history beside them is never taken
for a map. A line holds the before/after scores on the held-out deployment subjects, whether the map was
written, and its tensors' digest: no template and no subject id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.schemas.rollout import RefitRecord, RefitScores

if TYPE_CHECKING:
    from facebridge.evaluation.population import PopulationMetrics
    from facebridge.mapping.refit import RefitResult

HISTORY_FILE = "refits/history.jsonl"
MAX_RECORDS = 500  # the newest lines GET /refits reads


def history_path(mappings_dir: Path) -> Path:
    return mappings_dir / HISTORY_FILE


def _scores(metrics: PopulationMetrics | None) -> RefitScores | None:
    if metrics is None:
        return None
    return RefitScores(
        accuracy=metrics.accuracy,
        tar_far_1e3=metrics.tar_far_1e3,
        tar_far_1e4=metrics.tar_far_1e4,
        genuine_pairs=metrics.genuine_pairs,
        impostor_pairs=metrics.impostor_pairs,
    )


def refit_record(
    result: RefitResult,
    source: str,
    target: str,
    mappings_dir: Path,
    written: Path | None = None,
    tensor_sha256: str | None = None,
) -> RefitRecord:
    """The history line of a refit; `written`: the map file it wrote (None: not written)."""
    after = _scores(result.after)
    assert after is not None
    split = {name: int(value) for name, value in dataclasses.asdict(result.split).items()}
    return RefitRecord(
        at=dt.datetime.now(dt.UTC),
        source=source,
        target=target,
        choice=result.choice,
        method=result.method,
        before=_scores(result.before),
        after=after,
        improved=result.improved,
        written=written is not None,
        file=str(written.relative_to(mappings_dir)) if written is not None else None,
        calibrated_on_deployment=result.calibrated_on_deployment,
        split=split,
        tensor_sha256=tensor_sha256,
    )


def append_record(mappings_dir: Path, record: RefitRecord) -> Path:
    path = history_path(mappings_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(record.model_dump_json() + "\n")
    return path


def read_records(mappings_dir: Path, limit: int = MAX_RECORDS) -> list[RefitRecord]:
    """The newest `limit` records, newest first; unreadable lines are skipped."""
    path = history_path(mappings_dir)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        lines = deque(handle, maxlen=limit)
    records = []
    for line in reversed(lines):
        try:
            records.append(RefitRecord.model_validate(json.loads(line)))
        except ValueError:
            continue
    return records
