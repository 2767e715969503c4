"""Read-only views of a roll-out from one model to another (included by facebridge/api/admin.py):

- GET /migrations: the in-place PostgreSQL migrations' job tables (facebridge migrate postgresql://...):
  jobs, rows done, passes, problems and batch checksums. The database is FACEBRIDGE_MIGRATIONS_DSN, else
  the pair store's FACEBRIDGE_PAIRS_DSN; with neither the answer says nothing is configured.
- GET /refits: the refit history (facebridge refit), before/after on held-out deployment subjects.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from facebridge.pairs.backends import redact_dsn
from facebridge.refit_history import HISTORY_FILE, read_records
from facebridge.schemas.rollout import MigrationJob, MigrationsReport, RefitHistory
from facebridge.service.errors import PROBLEM_RESPONSES, Problem
from facebridge.service.security import needs
from facebridge.service.state import ServiceState, get_state

router = APIRouter()


class MigrationsSettings(BaseSettings):
    """Where GET /migrations reads the job tables (kept apart from Settings: only this route uses it)."""

    model_config = SettingsConfigDict(env_prefix="FACEBRIDGE_", env_file=".env", extra="ignore")

    migrations_dsn: str | None = Field(
        default=None,
        description="PostgreSQL DSN of the database whose galleries `facebridge migrate` works on "
        "(default: FACEBRIDGE_PAIRS_DSN)",
        repr=False,
    )


def migrations_dsn(state: ServiceState) -> str | None:
    return MigrationsSettings().migrations_dsn or state.settings.pairs_dsn


def _read(dsn: str) -> tuple[bool, list[MigrationJob]]:
    try:
        from facebridge.migration.jobs import read_jobs
    except ImportError as error:  # psycopg is the `postgres` extra
        raise Problem.of(
            "migrations-unavailable",
            f"cannot read PostgreSQL ({error.name or error}): install facebridge[postgres]",
        ) from error
    try:
        return read_jobs(dsn)
    except Exception as error:
        first = next(iter(str(error).strip().splitlines()), "")
        raise Problem.of(
            "migrations-unavailable",
            f"the job tables could not be read ({type(error).__name__}: {redact_dsn(first)[:200]})",
        ) from error


@router.get(
    "/migrations",
    response_model=MigrationsReport,
    summary="In-place gallery migrations: jobs, rows done, passes, problems, batch checksums",
    description="Read from the PostgreSQL job tables `facebridge migrate` keeps (facebridge_migrations, "
    "_batches, _problems) in FACEBRIDGE_MIGRATIONS_DSN (default: FACEBRIDGE_PAIRS_DSN); `configured` is "
    "false when neither is set. Read-only. 503 `migrations-unavailable` when the database cannot be read. "
    "Needs the `admin` scope: it names the database and the keys of rows that could not be translated.",
    responses={k: v for k, v in PROBLEM_RESPONSES.items() if k in (401, 503)},
    dependencies=[needs("admin")],
)
async def migrations(state: ServiceState = Depends(get_state)) -> MigrationsReport:
    dsn = migrations_dsn(state)
    if dsn is None:
        return MigrationsReport(
            configured=False,
            database=None,
            tables=False,
            jobs=[],
            note="no database configured: set FACEBRIDGE_MIGRATIONS_DSN (or FACEBRIDGE_PAIRS_DSN) to the "
            "database `facebridge migrate` works in",
        )
    tables, jobs = await run_in_threadpool(_read, dsn)
    note = (
        f"{len(jobs)} job(s), newest first"
        if tables
        else "no migration has run in this database yet (no facebridge_migrations table)"
    )
    return MigrationsReport(configured=True, database=redact_dsn(dsn), tables=tables, jobs=jobs, note=note)


@router.get(
    "/refits",
    response_model=RefitHistory,
    summary="Refit history: before/after on held-out deployment subjects, and whether the map was written",
    description=f"Read from MAPPINGS_DIR/{HISTORY_FILE} (one line per `facebridge refit` that reached a "
    "decision), newest first; empty when no refit has been recorded.",
    responses={k: v for k, v in PROBLEM_RESPONSES.items() if k in (401,)},
)
async def refits(state: ServiceState = Depends(get_state)) -> RefitHistory:
    records = await run_in_threadpool(read_records, state.settings.mappings_dir)
    return RefitHistory(file=HISTORY_FILE, refits=records)
