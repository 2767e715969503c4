"""`facebridge migrate` on a real PostgreSQL server (started by the test): a gallery column translated,
staged in a side table (the default design) and swapped in, or updated in place (`--design in-place`).

Checked against the shipped arcface→sirius map applied in numpy: 200k rows with every id present once;
a migration SIGKILLed half-way and rerun; one of two worker processes SIGKILLed and the run resumed;
several workers (processes, Dask tasks) against one, row for row; inserts and updates from another
connection while it runs; NULL, wrongly sized and non-finite values reported per id; the table's rows
left unwritten until the swap, which is one transaction; `real[]`, `bytea` and pgvector's `vector`
columns (the last where the extension is installed: scripts/install_pgvector.sh; required when
FACEBRIDGE_REQUIRE_PGVECTOR=1); wrong DSN, table or column as one-line errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facebridge.mapping.bank import MapPath, MappingBank
from facebridge.migration.pg_table import TableError, TableRef
from facebridge.migration.postgres import (
    BATCHES,
    DESIGNS,
    JOBS,
    PARTS,
    PROBLEMS,
    MigrationError,
    PostgresMigration,
    open_migration,
)
from facebridge.vision.manifest import load_manifest
from tests.factories import unit_rows

from .conftest import MODELS_DIR, ROOT
from .postgres_server import PostgresCluster

psycopg = pytest.importorskip("psycopg")

SOURCE, TARGET = "arcface-mbf128", "sirius-mbf192"
FACEBRIDGE = [sys.executable, "-m", "facebridge"]


@pytest.fixture(scope="module")
def path() -> MapPath:
    bank = MappingBank.load(ROOT / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))
    found = bank.find_path(SOURCE, TARGET)
    assert found is not None and len(found.maps) == 1 and found.has_confidence
    return found


@pytest.fixture
def dsn(postgres: PostgresCluster) -> str:
    """A fresh schema of its own; pgvector, where installed, lives in public (on the search path), so
    real[] columns go through its casts (test_real_arrays_without_pgvector covers the arrays' own)."""
    has_pgvector(postgres)
    return new_schema(postgres)


def has_pgvector(postgres: PostgresCluster) -> bool:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            return True
        except psycopg.Error:
            return False


def create_gallery(dsn: str, x: np.ndarray, kind: str = "real[]", key: str = "bigint") -> list[Any]:
    """A `faces` table of `x` through psycopg's own adapters (independent of the migration's codec)."""
    ids: list[Any] = [uuid.UUID(int=i + 1) for i in range(len(x))] if key == "uuid" else list(range(len(x)))
    column = {"vector": f"vector({x.shape[1]})"}.get(kind, kind)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE faces (user_id {key} PRIMARY KEY, name text, template {column})")
        cursor = conn.cursor()
        if kind == "vector":
            statement = "COPY faces (user_id, template) FROM STDIN"
            with cursor.copy(statement) as copy:
                for key_value, row in zip(ids, x, strict=True):
                    copy.write_row((key_value, "[" + ",".join(repr(float(v)) for v in row) + "]"))
        else:
            statement = "COPY faces (user_id, template) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(statement) as copy:
                copy.set_types([key, "bytea" if kind == "bytea" else "float4[]"])
                for key_value, row in zip(ids, x, strict=True):
                    value = row.astype("<f4").tobytes() if kind == "bytea" else row.tolist()
                    copy.write_row((key_value, value))
    return ids


def read_column(
    dsn: str, column: str, kind: str = "real[]", table: str = "faces", key: str = "user_id"
) -> dict[Any, Any]:
    """Every row's value of `column`, decoded by psycopg (text for vector, floats for arrays)."""
    with psycopg.connect(dsn) as conn:
        if kind == "vector":
            rows = conn.execute(f"SELECT {key}, {column}::text FROM {table}").fetchall()
            return {k: None if v is None else np.array(v.strip("[]").split(","), np.float32) for k, v in rows}
        rows = conn.execute(f"SELECT {key}, {column} FROM {table}").fetchall()
    if kind == "bytea":
        return {k: None if v is None else np.frombuffer(v, "<f4") for k, v in rows}
    return {k: None if v is None else np.asarray(v, dtype=np.float32) for k, v in rows}


def side_table(dsn: str, to: str = "template_b") -> str:
    """The side table the staged migration into `to` keeps its translations in until the swap."""
    rows = fetch(
        dsn, f"SELECT description->>'side_table' FROM {JOBS} WHERE job = %s", (f"faces.template->{to}",)
    )
    assert rows and rows[0][0], f"no staged job into {to}"
    return str(rows[0][0])


def read_translated(dsn: str, to: str = "template_b", kind: str = "real[]") -> dict[Any, Any]:
    """The staged translations, by key (read from the side table: the table is written at the swap).
    A real[] target is staged as pgvector's vector where the server has it."""
    column = "value::real[]" if kind == "real[]" else "value"
    return read_column(dsn, column, kind, table=side_table(dsn, to), key="id")


def row_versions(dsn: str) -> list[tuple[Any, ...]]:
    """Every row's key, version (xmin) and place (ctid): equal before and after only if no row was written."""
    return fetch(dsn, "SELECT user_id, xmin::text, ctid::text FROM faces ORDER BY user_id")


def url(dsn: str) -> str:
    return f"{dsn}&table=faces&id=user_id&column=template"


def new_schema(postgres: PostgresCluster) -> str:
    name = f"gallery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return postgres.dsn(options=f"-c search_path={name},public")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [*FACEBRIDGE, "migrate", "--source", SOURCE, "--target", TARGET, "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def expected_by_id(path: MapPath, ids: list[Any], x: np.ndarray) -> dict[Any, np.ndarray]:
    return dict(zip(ids, path.apply(x), strict=True))


def assert_translated(got: dict[Any, Any], expected: dict[Any, np.ndarray]) -> None:
    assert set(got) >= set(expected)
    keys = list(expected)
    missing = [k for k in keys if got[k] is None]
    assert not missing, f"{len(missing)} rows not translated, e.g. {missing[:5]}"
    np.testing.assert_allclose(
        np.stack([got[k] for k in keys]), np.stack([expected[k] for k in keys]), rtol=0, atol=2e-6
    )


COLUMN_TYPE = (
    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
    "WHERE attrelid = 'faces'::regclass AND attname = 'template_b'"
)
COLUMNS = (
    "SELECT column_name FROM information_schema.columns "
    "WHERE table_name = 'faces' AND table_schema = current_schema()"
)


def fetch(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


# ---------------------------------------------------------------------------------------------- scale
def test_200k_templates_migrate_exactly_and_the_source_is_untouched(dsn: str, path: MapPath) -> None:
    n = 200_000
    x = unit_rows(n, 128, seed=1)
    ids = create_gallery(dsn, x)
    source_digest = "SELECT md5(string_agg(array_send(template), '' ORDER BY user_id)) FROM faces"
    before, versions = fetch(dsn, source_digest), row_versions(dsn)
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "20000", timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{n} rows translated" in done.stdout and f"checked: {n} rows, {n} translated" in done.stdout
    assert fetch(dsn, source_digest) == before  # the source column is never written
    assert row_versions(dsn) == versions  # nor any row, until the swap
    counts = fetch(dsn, "SELECT count(*), count(DISTINCT user_id), count(template_b) FROM faces")
    assert counts == [(n, n, 0)]
    side = side_table(dsn)
    assert fetch(dsn, f"SELECT count(*), count(DISTINCT id), count(value) FROM {side}") == [(n, n, n)]
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))
    # the confidence column is the map's own predictor, row for row
    _, confidence = path.apply_with_confidence(x)
    assert confidence is not None
    stored = dict(fetch(dsn, f"SELECT id, confidence FROM {side}"))
    np.testing.assert_allclose([stored[k] for k in ids], confidence, atol=1e-6)
    # what was recorded: the map's id and tensor hash, every batch with its checksum
    (description,) = fetch(dsn, f"SELECT description FROM {JOBS}")[0]
    assert [(m["id"], m["tensor_sha256"]) for m in description["maps"]] == [
        (m.id, m.meta.tensor_sha256) for m in path.maps
    ]
    assert fetch(dsn, f"SELECT count(*), sum(rows) FROM {BATCHES}") == [(10, n)]
    rerun = cli(url(dsn), "--to-column", "template_b")
    assert rerun.returncode == 0 and "0 rows translated" in rerun.stdout  # idempotent


# ---------------------------------------------------------------------------------------------- crash
def test_sigkill_half_way_then_rerun_redoes_at_most_one_batch(dsn: str, path: MapPath) -> None:
    n, batch = 60_000, 1_000
    x = unit_rows(n, 128, seed=2)
    ids = create_gallery(dsn, x)
    args = [*FACEBRIDGE, "migrate", "--source", SOURCE, "--target", TARGET, "--quiet", url(dsn)]
    args += ["--to-column", "template_b", "--batch-rows", str(batch)]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            committed = fetch(dsn, f"SELECT count(*) FROM {BATCHES}")[0][0]
        except psycopg.Error:  # the progress table is not there yet
            committed = 0
        if committed >= 15:
            break
        time.sleep(0.02)
    assert process.poll() is None, (
        f"the migration ended before it could be killed: {process.communicate()[1]!r}"
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    rows_before = fetch(dsn, f"SELECT coalesce(sum(rows), 0) FROM {BATCHES}")[0][0]
    assert 15 * batch <= rows_before < n
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", str(batch))
    assert done.returncode == 0, done.stderr
    written_after = int(done.stdout.split(" rows translated")[0])
    assert written_after + rows_before == n  # every row written once: only the killed batch is redone
    assert "resumed after" in done.stdout
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))
    assert fetch(dsn, f"SELECT sum(rows) FROM {BATCHES}") == [(n,)]


# ---------------------------------------------------------------------------------------------- concurrency
def test_inserts_and_updates_during_the_migration_are_picked_up(dsn: str, path: MapPath) -> None:
    n = 40_000
    x = unit_rows(n, 128, seed=3)
    create_gallery(dsn, x)
    fresh = unit_rows(800, 128, seed=4)
    started, finished = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        """Updates rows ahead of and behind the cursor and inserts keys below and above every
        existing one, from its own connection, while the first pass runs."""
        try:
            started.wait(60)
            rng = np.random.default_rng(5)
            with psycopg.connect(dsn, autocommit=True) as conn:
                for i in range(400):
                    conn.execute(
                        "UPDATE faces SET template = %s WHERE user_id = %s",
                        (fresh[i].tolist(), int(rng.integers(0, n))),
                    )
                    key = -1 - i if i % 2 else n + i  # behind and ahead of the cursor
                    conn.execute(
                        "INSERT INTO faces (user_id, template) VALUES (%s, %s)",
                        (key, fresh[400 + i].tolist()),
                    )
        except BaseException as exc:
            errors.append(exc)
        finally:
            finished.set()

    def pace(batch: int) -> None:
        """Let the writer start with the first batch and slow the first pass while it writes."""
        started.set()
        if not finished.is_set():
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    job = PostgresMigration(
        TableRef.parse(url(dsn)), path, "template_b", batch_rows=500, progress=False, on_batch=pace
    )
    result = job.run()
    thread.join(60)
    assert not errors, errors
    assert finished.is_set()
    assert result.verification.ok, result.verification.describe()
    assert result.passes >= 2
    # every row, old or new, translated from the value it holds now
    current = read_column(dsn, "template")
    keys = list(current)
    matrix = np.stack([current[k] for k in keys])
    assert len(keys) == n + 400
    assert_translated(read_translated(dsn), dict(zip(keys, path.apply(matrix), strict=True)))


def test_a_rerun_translates_only_rows_whose_template_changed(dsn: str, path: MapPath) -> None:
    """Writes to other columns move a row's version but not its source: not translated again."""
    x = unit_rows(2_000, 128, seed=13)
    ids = create_gallery(dsn, x)
    assert cli(url(dsn), "--to-column", "template_b").returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE faces SET name = 'renamed' WHERE user_id < 500")
        conn.execute("UPDATE faces SET template = %s WHERE user_id = 7", (x[8].tolist(),))
    again = cli(url(dsn), "--to-column", "template_b")
    assert again.returncode == 0 and again.stdout.startswith("1 rows translated"), again.stdout
    x[7] = x[8]
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))


# ---------------------------------------------------------------------------------------------- bad values
def test_bad_values_are_reported_per_id_and_fatal_only_when_strict(dsn: str, path: MapPath) -> None:
    x = unit_rows(300, 128, seed=6)
    ids = create_gallery(dsn, x)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE faces SET template = NULL WHERE user_id = 10")
        conn.execute("UPDATE faces SET template = template[1:127] WHERE user_id = 11")
        conn.execute("UPDATE faces SET template[5] = 'NaN' WHERE user_id = 12")
        conn.execute("UPDATE faces SET template[6] = 'Infinity' WHERE user_id = 13")
        conn.execute("UPDATE faces SET template = ARRAY[[1,2],[3,4]]::real[] WHERE user_id = 14")
        conn.execute("UPDATE faces SET template[2] = NULL WHERE user_id = 15")
    # (pgvector's cast refuses the windows holding these values: they are read again as arrays)
    strict = cli(url(dsn), "--to-column", "template_b", "--strict", "--batch-rows", "100")
    assert strict.returncode == 1 and "cannot be translated" in strict.stderr
    assert fetch(dsn, f"SELECT count(*) FROM {side_table(dsn)}") == [(0,)]  # the batch was rolled back

    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "100")
    assert done.returncode == 0, done.stderr
    reasons = dict(fetch(dsn, f"SELECT id, reason FROM {PROBLEMS}"))
    assert reasons == {
        "10": "NULL",
        "11": "dimension 127, expected 128",
        "12": "non-finite values (NaN or infinity)",
        "13": "non-finite values (NaN or infinity)",
        "14": "2-dimensional array, expected a 1-dimensional one",
        "15": "array holds NULL elements",
    }
    for key, reason in reasons.items():
        assert f"user_id={key}: {reason}" in done.stdout
    assert "294 translated, 6 with problems, 0 stale" in done.stdout
    # a repaired row is translated on the next run and leaves the problem list
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE faces SET template = %s WHERE user_id = 11", (x[11].tolist(),))
    again = cli(url(dsn), "--to-column", "template_b")
    assert again.returncode == 0 and again.stdout.startswith("1 rows translated")
    assert "11" not in dict(fetch(dsn, f"SELECT id, reason FROM {PROBLEMS}"))
    good = [k for k in ids if k not in (10, 12, 13, 14, 15)]
    assert_translated(read_translated(dsn), expected_by_id(path, good, x[good]))
    # these batches went row by row (their rows are not all of one width): confidence in its byte order
    _, confidence = path.apply_with_confidence(x[good])
    assert confidence is not None
    stored = dict(fetch(dsn, f"SELECT id, confidence FROM {side_table(dsn)}"))
    np.testing.assert_allclose([stored[k] for k in good], confidence, atol=1e-6)


# ---------------------------------------------------------------------------------------------- kinds
def test_bytea_gallery_with_uuid_keys(dsn: str, path: MapPath) -> None:
    x = unit_rows(3_000, 128, seed=7)
    ids = create_gallery(dsn, x, kind="bytea", key="uuid")
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "700")
    assert done.returncode == 0, done.stderr
    assert fetch(dsn, COLUMN_TYPE) == [("bytea",)]
    assert_translated(read_translated(dsn, kind="bytea"), expected_by_id(path, ids, x))


def test_real_arrays_without_pgvector(postgres: PostgresCluster, path: MapPath) -> None:
    """Where the vector type is not at hand, real[] is read and staged as arrays."""
    name = f"gallery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    dsn = postgres.dsn(options=f"-c search_path={name}")  # public, where pgvector lives, left out
    x = unit_rows(2_000, 128, seed=15)
    ids = create_gallery(dsn, x)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE faces SET template[3] = 'NaN' WHERE user_id = 5")
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "700")
    assert done.returncode == 0, done.stderr
    assert "1999 translated, 1 with problems, 0 stale" in done.stdout
    (kind,) = fetch(dsn, f"SELECT description->>'side_type' FROM {JOBS}")[0]
    assert kind == "real[]"
    good = [k for k in ids if k != 5]
    assert_translated(read_translated(dsn), expected_by_id(path, good, x[good]))
    assert cli(url(dsn), "--to-column", "template_b", "--swap").returncode == 0
    assert_translated(read_column(dsn, "template"), expected_by_id(path, good, x[good]))


def test_text_keys(dsn: str, path: MapPath) -> None:
    """Keys without one binary width go row by row, their text read alongside."""
    x = unit_rows(1_500, 128, seed=14)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE faces (user_id text PRIMARY KEY, name text, template real[])")
        with conn.cursor().copy("COPY faces (user_id, template) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "float4[]"])
            for i, row in enumerate(x):
                copy.write_row((f"person-{i:05d}", row.tolist()))
    ids = [f"person-{i:05d}" for i in range(len(x))]
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "400", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "checked: 1500 rows, 1500 translated" in done.stdout
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))
    _, confidence = path.apply_with_confidence(x)
    assert confidence is not None
    stored = dict(fetch(dsn, f"SELECT id, confidence FROM {side_table(dsn)}"))
    np.testing.assert_allclose([stored[k] for k in ids], confidence, atol=1e-6)


def test_pgvector_gallery(postgres: PostgresCluster, dsn: str, path: MapPath) -> None:
    if not has_pgvector(postgres):
        reason = "the pgvector extension is not installed (scripts/install_pgvector.sh)"
        if os.environ.get("FACEBRIDGE_REQUIRE_PGVECTOR") == "1":
            pytest.fail(f"FACEBRIDGE_REQUIRE_PGVECTOR=1 but {reason}")
        pytest.skip(reason)
    x = unit_rows(2_000, 128, seed=8)
    ids = create_gallery(dsn, x, kind="vector")
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "600")
    assert done.returncode == 0, done.stderr
    assert fetch(dsn, COLUMN_TYPE) == [("vector(192)",)]
    assert_translated(read_translated(dsn, kind="vector"), expected_by_id(path, ids, x))
    # pgvector's own operator agrees: the translated rows are unit length
    norms = fetch(dsn, f"SELECT min(vector_norm(value)), max(vector_norm(value)) FROM {side_table(dsn)}")[0]
    assert 0.9999 < norms[0] <= norms[1] < 1.0001
    # another kind for the new column: vector source, bytea target (a second, separate job)
    done = cli(url(dsn), "--to-column", "template_c", "--to-type", "bytea")
    assert done.returncode == 0, done.stderr
    assert_translated(read_translated(dsn, "template_c", "bytea"), expected_by_id(path, ids, x))
    swapped = cli(url(dsn), "--to-column", "template_b", "--swap")
    assert swapped.returncode == 0, swapped.stderr
    assert_translated(read_column(dsn, "template", "vector"), expected_by_id(path, ids, x))


# ---------------------------------------------------------------------------------------------- swap
def test_swap_switches_over_in_one_transaction(dsn: str, path: MapPath) -> None:
    x = unit_rows(1_000, 128, seed=9)
    ids = create_gallery(dsn, x)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE faces ALTER COLUMN template SET NOT NULL")
        conn.execute("CREATE TABLE settings (name text PRIMARY KEY, value text)")
        conn.execute("INSERT INTO settings VALUES ('model', %s)", (SOURCE,))
    early = cli(url(dsn), "--to-column", "template_b", "--swap")
    assert early.returncode == 1 and "never run" in early.stderr
    assert cli(url(dsn), "--to-column", "template_b").returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:  # enrolled after the migration, before the swap
        conn.execute("INSERT INTO faces (user_id, template) VALUES (5000, %s)", (x[0].tolist(),))
    also = f"UPDATE settings SET value = '{TARGET}' WHERE name = 'model'"
    swapped = cli(url(dsn), "--to-column", "template_b", "--swap", "--swap-also", also)
    assert swapped.returncode == 0, swapped.stderr
    assert "template_arcface_mbf128" in swapped.stdout
    columns = {r[0] for r in fetch(dsn, COLUMNS)}
    assert {"template", "template_arcface_mbf128"} <= columns and "template_b" not in columns
    assert fetch(dsn, "SELECT value FROM settings") == [(TARGET,)]
    got = read_column(dsn, "template")
    assert_translated(got, {**expected_by_id(path, ids, x), 5000: path.apply(x[:1])[0]})
    retired = read_column(dsn, "template_arcface_mbf128")
    np.testing.assert_array_equal(retired[3], x[3])
    # the identity system enrols with the new model alone: the retired column now accepts NULL, the
    # new one keeps the NOT NULL the old one had
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO faces (user_id, template) VALUES (6000, %s)", (path.apply(x[:1])[0].tolist(),)
        )
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("INSERT INTO faces (user_id) VALUES (6001)")
    refused = cli(url(dsn), "--to-column", "template_b")
    assert refused.returncode == 1 and "already swapped" in refused.stderr


def test_two_translations_swapped_in_the_side_table_are_caught_at_the_swap(dsn: str, path: MapPath) -> None:
    """A batch's checksum covers its values in key order: the same values under other keys differ."""
    x = unit_rows(1_000, 128, seed=12)
    ids = create_gallery(dsn, x)
    assert cli(url(dsn), "--to-column", "template_b", "--batch-rows", "500").returncode == 0
    side = side_table(dsn)
    first, second = sorted(ids)[10], sorted(ids)[20]  # one batch
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {side} s SET value = o.value FROM {side} o WHERE (s.id, o.id) IN ((%s, %s), (%s, %s))",
            (first, second, second, first),
        )
    refused = cli(url(dsn), "--to-column", "template_b", "--swap")
    assert refused.returncode == 1 and "not swapped" in refused.stderr and "checksum" in refused.stderr
    assert "template_b" in {r[0] for r in fetch(dsn, COLUMNS)}  # nothing renamed


# ---------------------------------------------------------------------------------------------- staged design
def test_the_table_is_not_written_until_the_swap_which_is_one_transaction(dsn: str, path: MapPath) -> None:
    x = unit_rows(2_000, 128, seed=20)
    ids = create_gallery(dsn, x)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE faces ALTER COLUMN template SET NOT NULL")
    source = "SELECT md5(string_agg(array_send(template), '' ORDER BY user_id)) FROM faces"
    before, versions = fetch(dsn, source), row_versions(dsn)
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "300")
    assert done.returncode == 0, done.stderr
    # every row as it was (same source, same row version and place); the new columns empty
    assert fetch(dsn, source) == before and row_versions(dsn) == versions
    assert fetch(dsn, "SELECT count(template_b), count(template_b_confidence) FROM faces") == [(0, 0)]
    side = side_table(dsn)
    assert fetch(dsn, f"SELECT relpersistence FROM pg_class WHERE oid = '{side}'::regclass") == [("u",)]
    staged_as = fetch(dsn, f"SELECT description->>'side_type' FROM {JOBS}")[0][0]
    assert staged_as == ("vector(192)" if fetch(dsn, "SELECT to_regtype('vector')")[0][0] else "real[]")
    assert fetch(dsn, f"SELECT count(value) FROM {side}") == [(2_000,)]
    # a swap whose last statement fails leaves nothing of itself: no row written, no column renamed
    failed = cli(url(dsn), "--to-column", "template_b", "--swap", "--swap-also", "SELECT 1/0")
    assert failed.returncode == 1 and "division by zero" in failed.stderr, failed.stderr
    assert fetch(dsn, source) == before and row_versions(dsn) == versions
    columns = {r[0] for r in fetch(dsn, COLUMNS)}
    assert columns == {"user_id", "name", "template", "template_b", "template_b_confidence"}
    assert fetch(dsn, "SELECT count(template_b) FROM faces") == [(0,)]
    assert fetch(dsn, f"SELECT state FROM {JOBS}") == [("complete",)]
    assert fetch(dsn, f"SELECT count(*) FROM {side}") == [(2_000,)]
    # the swap, whole: every row written by its one transaction (one row version on every row)
    swapped = cli(url(dsn), "--to-column", "template_b", "--swap")
    assert swapped.returncode == 0, swapped.stderr
    assert fetch(dsn, "SELECT count(DISTINCT xmin::text), count(*) FROM faces") == [(1, 2_000)]
    assert fetch(dsn, f"SELECT to_regclass('{side}')") == [(None,)]
    assert_translated(read_column(dsn, "template"), expected_by_id(path, ids, x))


def test_workers_over_key_ranges_equal_one_worker_row_for_row(
    postgres: PostgresCluster, path: MapPath
) -> None:
    x = unit_rows(6_000, 128, seed=21)
    one, many = new_schema(postgres), new_schema(postgres)
    ids = create_gallery(one, x)
    create_gallery(many, x)
    alone = cli(url(one), "--to-column", "template_b", "--batch-rows", "700")
    assert alone.returncode == 0, alone.stderr
    shared = cli(url(many), "--to-column", "template_b", "--batch-rows", "700", "--workers", "3")
    assert shared.returncode == 0, shared.stderr
    assert "checked: 6000 rows, 6000 translated, 0 with problems, 0 stale" in shared.stdout
    # three disjoint key ranges covering every key, each walked to its end
    parts = fetch(many, f"SELECT after_key, upto_key, done FROM {PARTS} ORDER BY part")
    assert len(parts) == 3 and all(done for _, _, done in parts)
    assert parts[0][0] is None and parts[-1][1] is None
    assert [upto for _, upto, _ in parts[:-1]] == [after for after, _, _ in parts[1:]]
    # the same bits, row for row
    query = "SELECT id, value, confidence FROM {} ORDER BY id"
    assert fetch(one, query.format(side_table(one))) == fetch(many, query.format(side_table(many)))
    for where in (one, many):
        assert cli(url(where), "--to-column", "template_b", "--swap").returncode == 0
    swapped = "SELECT user_id, template, template_b_confidence FROM faces ORDER BY user_id"
    assert fetch(one, swapped) == fetch(many, swapped)
    assert_translated(read_column(many, "template"), expected_by_id(path, ids, x))


def worker_processes(pid: int) -> list[int]:
    """The multiprocessing workers among the descendants of `pid` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    family, found = {pid}, True
    while found:
        found = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                found = True
    workers = []
    for child in sorted(family - {pid}):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            workers.append(child)
    return workers


def test_one_worker_killed_then_a_rerun_writes_every_row_once(dsn: str, path: MapPath) -> None:
    n, batch = 20_000, 250
    x = unit_rows(n, 128, seed=22)
    ids = create_gallery(dsn, x)
    options = ["--to-column", "template_b", "--batch-rows", str(batch), "--workers", "2"]
    args = [*FACEBRIDGE, "migrate", "--source", SOURCE, "--target", TARGET, "--quiet", url(dsn), *options]
    process = subprocess.Popen(
        [*args, "--pause", "0.05"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    started: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline and process.poll() is None:
        try:  # both parts under way
            started = fetch(dsn, f"SELECT part FROM {PARTS} WHERE cursor IS NOT NULL AND NOT done")
        except psycopg.Error:  # the progress tables are not there yet
            started = []
        if len(started) == 2:
            break
        time.sleep(0.02)
    workers = worker_processes(process.pid)
    assert process.poll() is None and len(started) == 2 and len(workers) == 2, process.communicate()[1]
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "a worker process died" in stderr, stderr
    rows_before = fetch(dsn, f"SELECT coalesce(sum(rows), 0) FROM {BATCHES}")[0][0]
    assert 2 * batch <= rows_before < n
    done = cli(url(dsn), *options)
    assert done.returncode == 0, done.stderr
    assert "resumed after" in done.stdout
    written_after = int(done.stdout.split(" rows translated")[0])
    assert written_after + rows_before == n  # no row written twice, none left out
    assert fetch(dsn, f"SELECT sum(rows), count(DISTINCT batch) FROM {BATCHES}")[0][0] == n
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))


def test_dask_tasks_over_key_ranges(dsn: str, path: MapPath) -> None:
    x = unit_rows(3_000, 128, seed=23)
    ids = create_gallery(dsn, x)
    options = ["--to-column", "template_b", "--batch-rows", "500", "--engine", "dask", "--workers", "2"]
    done = cli(url(dsn), *options)
    assert done.returncode == 0, done.stderr
    assert "checked: 3000 rows, 3000 translated, 0 with problems, 0 stale" in done.stdout
    assert len(fetch(dsn, f"SELECT part FROM {PARTS} WHERE done")) == 2
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))


def test_an_emptied_side_table_starts_the_job_over(dsn: str, path: MapPath) -> None:
    """Crash recovery empties unlogged tables: the next run notices and translates everything again."""
    x = unit_rows(1_000, 128, seed=25)
    ids = create_gallery(dsn, x)
    assert cli(url(dsn), "--to-column", "template_b").returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {side_table(dsn)}")
    again = cli(url(dsn), "--to-column", "template_b")
    assert again.returncode == 0, again.stderr
    assert "starting over" in again.stderr and again.stdout.startswith("1000 rows translated")
    assert_translated(read_translated(dsn), expected_by_id(path, ids, x))


def test_the_in_place_design_on_request(dsn: str, path: MapPath) -> None:
    x = unit_rows(2_000, 128, seed=24)
    ids = create_gallery(dsn, x)
    in_place = ["--to-column", "template_b", "--design", "in-place"]
    done = cli(url(dsn), *in_place, "--batch-rows", "700")
    assert done.returncode == 0, done.stderr
    assert "checked: 2000 rows, 2000 translated" in done.stdout
    assert_translated(read_column(dsn, "template_b"), expected_by_id(path, ids, x))  # in the table
    other = cli(url(dsn), "--to-column", "template_b")  # the job belongs to its design
    assert other.returncode == 1 and "started with the in-place design" in other.stderr
    several = cli(url(dsn), *in_place, "--workers", "2")
    assert several.returncode == 1 and "one worker" in several.stderr
    swapped = cli(url(dsn), *in_place, "--swap")
    assert swapped.returncode == 0, swapped.stderr
    assert_translated(read_column(dsn, "template"), expected_by_id(path, ids, x))


# ---------------------------------------------------------------------------------------------- errors
def test_dry_run_writes_nothing(dsn: str) -> None:
    create_gallery(dsn, unit_rows(50, 128, seed=10))
    shown = cli(url(dsn), "--to-column", "template_b", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "would add columns: template_b real[]" in shown.stdout and "50 rows" in shown.stdout
    assert len(fetch(dsn, COLUMNS)) == 3
    assert fetch(dsn, f"SELECT to_regclass('{JOBS}')") == [(None,)]


@pytest.mark.parametrize(
    ("make_url", "message"),
    [
        (lambda dsn, port: f"postgresql://postgres@127.0.0.1:{port}/nowhere?table=faces&id=user_id&column=template",
         "cannot connect to postgresql://postgres@127.0.0.1:"),
        (lambda dsn, port: f"{dsn}&table=missing&id=user_id&column=template", "no table missing"),
        (lambda dsn, port: f"{dsn}&table=faces&id=user_id&column=nothing", "has no column nothing"),
        (lambda dsn, port: f"{dsn}&table=faces&id=name&column=template", "has no unique index"),
        (lambda dsn, port: f"{dsn}&table=faces&id=user_id&column=name", "one of real[]"),
        (lambda dsn, port: f"{dsn}&table=faces", "names no id, column"),
    ],
)  # fmt: skip
def test_wrong_dsn_table_or_column_is_one_line(
    postgres: PostgresCluster, dsn: str, make_url: Any, message: str
) -> None:
    create_gallery(dsn, unit_rows(5, 128, seed=11))
    done = cli(make_url(dsn, postgres.port), "--to-column", "template_b")
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_run_of_the_same_job_is_refused_while_one_runs(dsn: str, path: MapPath) -> None:
    create_gallery(dsn, unit_rows(20, 128, seed=12))
    ref = TableRef.parse(url(dsn))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", ("faces.template->template_b",))
        with pytest.raises(MigrationError, match="another migration"):
            PostgresMigration(ref, path, "template_b", progress=False).run()
    with pytest.raises(TableError, match="overwrite"):
        PostgresMigration(ref, path, "template", progress=False)


def test_password_never_shows_in_messages() -> None:
    ref = TableRef.parse(
        "postgresql://app:s3cret@db.example:5433/id?sslmode=require&table=a.faces&id=k&column=t"
    )
    assert ref.where == "postgresql://app@db.example:5433/id" and "s3cret" in ref.dsn
    assert (ref.schema, ref.table, ref.id_column, ref.column) == ("a", "faces", "k", "t")
    assert "table=" not in ref.dsn and "sslmode=require" in ref.dsn


def test_either_design_refuses_to_write_over_the_key_or_the_templates(path: MapPath) -> None:
    ref = TableRef.parse("postgresql://app@db.example/id?table=faces&id=user_id&column=template")
    for design in DESIGNS:
        for column in ("template", "user_id"):
            with pytest.raises(TableError, match=f"target column {column} is the table's key or template"):
                open_migration(design, ref, path, column)
