"""`facebridge migrate` on a real PostgreSQL server (started by the test): a new column filled in place.

Checked against the shipped arcface→sirius map applied in numpy: 200k rows with every id present once;
a migration SIGKILLed half-way and rerun; inserts and updates from another connection while it runs;
NULL, wrongly sized and non-finite values reported per id; the swap; `real[]`, `bytea` and pgvector's
`vector` columns (the last where the extension is installed: scripts/install_pgvector.sh; required when
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
from typing import Any

import numpy as np
import pytest

from facebridge.mapping.bank import MapPath, MappingBank
from facebridge.migration.pg_table import TableError, TableRef
from facebridge.migration.postgres import BATCHES, JOBS, PROBLEMS, MigrationError, PostgresMigration
from facebridge.vision.manifest import load_manifest

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
    """A fresh schema of its own (pgvector, where installed, lives in public)."""
    name = f"gallery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return postgres.dsn(options=f"-c search_path={name},public")


def has_pgvector(postgres: PostgresCluster) -> bool:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            return True
        except psycopg.Error:
            return False


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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


def read_column(dsn: str, column: str, kind: str = "real[]") -> dict[Any, Any]:
    """Every row's value of `column`, decoded by psycopg (text for vector, floats for arrays)."""
    with psycopg.connect(dsn) as conn:
        if kind == "vector":
            rows = conn.execute(f"SELECT user_id, {column}::text FROM faces").fetchall()
            return {k: None if v is None else np.array(v.strip("[]").split(","), np.float32) for k, v in rows}
        rows = conn.execute(f"SELECT user_id, {column} FROM faces").fetchall()
    if kind == "bytea":
        return {k: None if v is None else np.frombuffer(v, "<f4") for k, v in rows}
    return {k: None if v is None else np.asarray(v, dtype=np.float32) for k, v in rows}


def url(dsn: str) -> str:
    return f"{dsn}&table=faces&id=user_id&column=template"


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
    before = fetch(dsn, source_digest)
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "20000", timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{n} rows translated" in done.stdout and f"checked: {n} rows, {n} translated" in done.stdout
    assert fetch(dsn, source_digest) == before  # the source column is never written
    counts = fetch(dsn, "SELECT count(*), count(DISTINCT user_id), count(template_b) FROM faces")
    assert counts == [(n, n, n)]
    assert_translated(read_column(dsn, "template_b"), expected_by_id(path, ids, x))
    # the confidence column is the map's own predictor, row for row
    _, confidence = path.apply_with_confidence(x)
    assert confidence is not None
    stored = dict(fetch(dsn, "SELECT user_id, template_b_confidence FROM faces"))
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
    assert_translated(read_column(dsn, "template_b"), expected_by_id(path, ids, x))
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
    assert_translated(read_column(dsn, "template_b"), dict(zip(keys, path.apply(matrix), strict=True)))


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
    assert_translated(read_column(dsn, "template_b"), expected_by_id(path, ids, x))


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
    strict = cli(url(dsn), "--to-column", "template_b", "--strict", "--batch-rows", "100")
    assert strict.returncode == 1 and "cannot be translated" in strict.stderr
    assert fetch(dsn, "SELECT count(template_b) FROM faces") == [(0,)]  # the batch was rolled back

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
    assert_translated(read_column(dsn, "template_b"), expected_by_id(path, good, x[good]))


# ---------------------------------------------------------------------------------------------- kinds
def test_bytea_gallery_with_uuid_keys(dsn: str, path: MapPath) -> None:
    x = unit_rows(3_000, 128, seed=7)
    ids = create_gallery(dsn, x, kind="bytea", key="uuid")
    done = cli(url(dsn), "--to-column", "template_b", "--batch-rows", "700")
    assert done.returncode == 0, done.stderr
    assert fetch(dsn, COLUMN_TYPE) == [("bytea",)]
    assert_translated(read_column(dsn, "template_b", "bytea"), expected_by_id(path, ids, x))


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
    assert_translated(read_column(dsn, "template_b", "vector"), expected_by_id(path, ids, x))
    # pgvector's own operator agrees: the translated rows are unit length
    norms = fetch(dsn, "SELECT min(vector_norm(template_b)), max(vector_norm(template_b)) FROM faces")[0]
    assert 0.9999 < norms[0] <= norms[1] < 1.0001
    # another kind for the new column: vector source, bytea target (a second, separate job)
    done = cli(url(dsn), "--to-column", "template_c", "--to-type", "bytea")
    assert done.returncode == 0, done.stderr
    assert_translated(read_column(dsn, "template_c", "bytea"), expected_by_id(path, ids, x))


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
