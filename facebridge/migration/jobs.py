"""Reading the progress tables of in-place PostgreSQL migrations (facebridge/migration/postgres.py) for
GET /migrations: jobs, batches with their checksums, passes and problems. Read-only: one read-only
connection with a statement timeout, nothing written."""

from __future__ import annotations

from typing import Any

from facebridge.migration.postgres import BATCHES, JOBS, PROBLEMS
from facebridge.schemas.rollout import MigrationBatch, MigrationJob, MigrationProblem

MAX_JOBS = 50
RECENT_BATCHES = 20
PROBLEM_SAMPLE = 20


def read_jobs(dsn: str, timeout_s: float = 5.0) -> tuple[bool, list[MigrationJob]]:
    """(whether the job tables exist, the latest jobs newest first)."""
    import psycopg

    # the statement timeout is set after connecting: an `options` argument would replace the DSN's own
    # (a search_path, say)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s))) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
        conn.execute("SET default_transaction_read_only = on")  # each autocommit statement: read-only
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)", (JOBS, BATCHES, PROBLEMS)
            )
            found = cursor.fetchone()
            if found is None or not all(found):
                return False, []
            cursor.execute(
                f"SELECT job, state, cursor, started_at, updated_at, finished_at, description FROM {JOBS} "
                "ORDER BY started_at DESC LIMIT %s",
                (MAX_JOBS,),
            )
            jobs = cursor.fetchall()
            cursor.execute(
                f"SELECT job, count(*), coalesce(sum(rows), 0), coalesce(max(pass), 0), "
                f"coalesce(sum(hash_sum), 0)::text FROM {BATCHES} GROUP BY job"
            )
            totals = {row[0]: row[1:] for row in cursor.fetchall()}
            cursor.execute(f"SELECT job, count(*) FROM {PROBLEMS} GROUP BY job")
            problems: dict[str, int] = {job: int(count) for job, count in cursor.fetchall()}
            return True, [_job(cursor, row, totals, problems) for row in jobs]


def _job(
    cursor: Any, row: tuple[Any, ...], totals: dict[str, tuple[Any, ...]], problems: dict[str, int]
) -> MigrationJob:
    job, state, position, started, updated, finished, description = row
    batches, rows, passes, checksum = totals.get(job, (0, 0, 0, "0"))
    cursor.execute(
        f"SELECT batch, pass, first_id, last_id, rows, hash_sum::text, written_at FROM {BATCHES} "
        "WHERE job = %s ORDER BY batch DESC LIMIT %s",
        (job, RECENT_BATCHES),
    )
    recent = [
        MigrationBatch(
            batch=b, pass_number=p, first_id=first, last_id=last, rows=n, checksum=total, written_at=at
        )
        for b, p, first, last, n, total, at in cursor.fetchall()
    ]
    cursor.execute(
        f"SELECT id, reason, found_at FROM {PROBLEMS} WHERE job = %s ORDER BY found_at, id LIMIT %s",
        (job, PROBLEM_SAMPLE),
    )
    sample = [MigrationProblem(id=i, reason=reason, found_at=at) for i, reason, at in cursor.fetchall()]
    return MigrationJob(
        job=job,
        state=state,
        cursor=position,
        started_at=started,
        updated_at=updated,
        finished_at=finished,
        description=description if isinstance(description, dict) else {},
        batches=int(batches),
        rows_written=int(rows),
        passes=int(passes),
        checksum=str(checksum),
        problems=int(problems.get(job, 0)),
        recent_batches=recent,
        problem_sample=sample,
    )
