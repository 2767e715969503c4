"""Cohort sources and `facebridge cohort build|show`: the same templates give the same cohort whatever
the source (.npy, Parquet, a real PostgreSQL table, the pair store), bad rows are skipped and counted,
a folder of real photos becomes a loadable cohort, and errors are one line with exit status 2.

PostgreSQL tests use the throw-away server of tests/postgres_server.py (skipped without PostgreSQL
binaries or psycopg, a failure when FACEBRIDGE_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facebridge.cohort.cohortfile import CohortError, load_cohort, make_cohort, save_cohort
from facebridge.cohort.sources import from_npy, from_pair_store, from_parquet, from_postgres
from facebridge.config import Settings
from facebridge.mapping.mapfile import SpaceRef
from facebridge.migration.pg_table import TableError
from facebridge.pairs.rows import PairRow
from facebridge.pairs.store import PairStore
from facebridge.vision.manifest import load_manifest

from .conftest import MODELS_DIR, ROOT, SHARED
from .postgres_server import PostgresCluster

MODEL = "arcface-mbf128"
PHOTO_MODEL = "dlib-r29-128"
RMFD = SHARED / "datasets" / "rmfd-dev"
ENTRY = load_manifest(MODELS_DIR / "manifest.toml").get(MODEL)
assert ENTRY is not None and ENTRY.dim == 128 and ENTRY.sha256 is not None
SPACE = SpaceRef(model=MODEL, dim=ENTRY.dim, sha256=ENTRY.sha256)
ENV = {**os.environ, "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR), "FACEBRIDGE_PROVIDERS": "cpu"}


def templates(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Raw (unnormalised) float32 templates, as a gallery would hold them."""
    return (np.random.default_rng(seed).standard_normal((n, dim)) * 3).astype(np.float32)


def save_npy(path: Path, x: np.ndarray) -> Path:
    np.save(path, x)
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "facebridge", "cohort", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("facebridge cohort "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------------- .npy
@pytest.mark.fast
def test_npy_cohort_round_trips_exactly(tmp_path: Path) -> None:
    x = templates(300, seed=1)
    cohort = from_npy(save_npy(tmp_path / "gallery.npy", x), SPACE, max_size=200, seed=5)
    # make_cohort's own sample of the same matrix: the source reads in batches, the result is the same
    reference = make_cohort(x, SPACE, "npy", "x", max_size=200, seed=5)
    np.testing.assert_array_equal(cohort.templates, reference.templates)
    assert cohort.meta.tensor_sha256 == reference.meta.tensor_sha256
    p = cohort.meta.provenance
    assert (p.kind, p.rows_read, p.count, p.sampled) == ("npy", 300, 200, True)
    assert p.source == str((tmp_path / "gallery.npy").resolve())

    written = save_cohort(tmp_path / "site", cohort)
    assert written.name == "site.cohort.safetensors"
    loaded = load_cohort(written)
    np.testing.assert_array_equal(loaded.templates, cohort.templates)
    assert loaded.templates.dtype == np.float32
    assert loaded.meta == cohort.meta
    assert loaded.id == "site" and loaded.model == MODEL and len(loaded) == 200


@pytest.mark.fast
def test_npy_sample_across_batches_equals_make_cohort(tmp_path: Path) -> None:
    """25 000 rows are read in three batches, twice (count, then pick the sample)."""
    x = templates(25_000, seed=2)
    cohort = from_npy(save_npy(tmp_path / "big.npy", x), SPACE, max_size=1000, seed=9)
    reference = make_cohort(x, SPACE, "npy", "x", max_size=1000, seed=9)
    np.testing.assert_array_equal(cohort.templates, reference.templates)
    unsampled = from_npy(tmp_path / "big.npy", SPACE, max_size=None)
    np.testing.assert_array_equal(unsampled.templates, make_cohort(x, SPACE, "npy", "x").templates)
    assert not unsampled.meta.provenance.sampled


@pytest.mark.fast
def test_npy_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    good = templates(80, seed=3)
    x = np.insert(good, [5, 20, 20], np.stack([np.full(128, np.nan), np.zeros(128), np.full(128, np.inf)]), 0)
    cohort = from_npy(save_npy(tmp_path / "dirty.npy", x.astype(np.float32)), SPACE, max_size=60, seed=1)
    clean = from_npy(save_npy(tmp_path / "clean.npy", good), SPACE, max_size=60, seed=1)
    assert cohort.meta.tensor_sha256 == clean.meta.tensor_sha256
    note = cohort.meta.provenance.note or ""
    assert "skipped 3 of 83 rows" in note and "2 NaN or infinity" in note and "1 all zeros" in note
    assert cohort.meta.provenance.rows_read == 83


@pytest.mark.fast
def test_npy_refusals(tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="dim 64"):
        from_npy(save_npy(tmp_path / "narrow.npy", templates(100, dim=64)), SPACE)
    with pytest.raises(CohortError, match="at least 50"):
        from_npy(save_npy(tmp_path / "few.npy", templates(10)), SPACE)
    with pytest.raises(CohortError, match="shape"):
        from_npy(save_npy(tmp_path / "flat.npy", templates(10).ravel()), SPACE)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(CohortError, match=r"not a readable \.npy"):
        from_npy(tmp_path / "junk.npy", SPACE)


# ---------------------------------------------------------------------------------------------- Parquet
@pytest.mark.fast
def test_parquet_equals_npy(tmp_path: Path) -> None:
    x = templates(150, seed=4)
    flat = pa.array(x.reshape(-1))
    table = pa.table(
        {
            "id": pa.array(np.arange(150)),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, 128),
            "blob": pa.FixedSizeBinaryArray.from_buffers(pa.binary(512), 150, [None, pa.py_buffer(x)]),
            "as_list": pa.array([row.astype(np.float64).tolist() for row in x], pa.list_(pa.float64())),
        }
    )
    path = tmp_path / "gallery.parquet"
    pq.write_table(table, path, row_group_size=40)  # several row groups
    npy = from_npy(save_npy(tmp_path / "gallery.npy", x), SPACE, max_size=100, seed=2)
    for column in (None, "blob", "as_list"):
        cohort = from_parquet(path, SPACE, column, max_size=100, seed=2)
        assert cohort.meta.tensor_sha256 == npy.meta.tensor_sha256, column
        np.testing.assert_array_equal(cohort.templates, npy.templates)
        p = cohort.meta.provenance
        assert (p.kind, p.rows_read, p.count, p.sampled) == ("parquet", 150, 100, True)
        assert p.source.endswith(f"gallery.parquet column {column or 'embedding'}")

    # NULL and wrongly sized rows of a list column are skipped and counted
    rows: list[Any] = [row.tolist() for row in x[:60]]
    rows[3], rows[10] = None, rows[10][:100]
    dirty = tmp_path / "dirty.parquet"
    pq.write_table(pa.table({"vec": pa.array(rows, pa.list_(pa.float32()))}), dirty)
    cohort = from_parquet(dirty, SPACE)  # no "embedding" column: the only list column
    expected = make_cohort(np.delete(x[:60], [3, 10], axis=0), SPACE, "parquet", "x")
    assert cohort.meta.tensor_sha256 == expected.meta.tensor_sha256
    assert "1 NULL" in (cohort.meta.provenance.note or "")
    assert "1 wrong dimension" in (cohort.meta.provenance.note or "")
    with pytest.raises(CohortError, match="no column 'nope'"):
        from_parquet(path, SPACE, "nope")
    with pytest.raises(CohortError, match="is int64"):
        from_parquet(path, SPACE, "id")


# ---------------------------------------------------------------------------------------------- pair store
@pytest.mark.fast
def test_pair_store_source(tmp_path: Path) -> None:
    """Every arcface template recorded with either other model, in either orientation, deduplicated;
    rows of other arcface weights left out."""
    rng = np.random.default_rng(7)
    captures = templates(90, seed=8)
    other_sha = {"faceplugin-mbf512": "a" * 64, "sirius-mbf192": "b" * 64}
    dims = {"faceplugin-mbf512": 512, "sirius-mbf192": 192}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows: list[PairRow] = []

    def pair(i: int, other: str, minute: int, arc_sha: str = SPACE.sha256, flip: bool = False) -> PairRow:
        mine: tuple[str, str, np.ndarray] = (MODEL, arc_sha, captures[i])
        theirs = (other, other_sha[other], rng.standard_normal(dims[other]).astype(np.float32))
        (a_model, a_sha, a_vec), (b_model, b_sha, b_vec) = (theirs, mine) if flip else (mine, theirs)
        moment = start + timedelta(minutes=minute)
        return PairRow(f"subject-{i % 30}", a_model, a_sha, a_vec, b_model, b_sha, b_vec, moment)

    # captures 0..59 with faceplugin (every third recorded the other way round), 40..89 with sirius:
    # 40..59 appear twice; capture 0 is recorded twice more by stale weights, which are left out
    rows += [pair(i, "faceplugin-mbf512", 200 - i, flip=i % 3 == 0) for i in range(60)]
    rows += [pair(i, "sirius-mbf192", i) for i in range(40, 90)]
    rows += [pair(0, "sirius-mbf192", 500, arc_sha="c" * 64), pair(1, "faceplugin-mbf512", 1, "c" * 64)]
    path = tmp_path / "pairs.db"
    store = PairStore.open(path)
    store.record(rows)
    store.close()

    cohort = from_pair_store(path, MODEL, SPACE, max_size=80, seed=3)
    # model pairs in id order, each oldest first: faceplugin's 59..0, then sirius's new ones 60..89
    order = [*range(59, -1, -1), *range(60, 90)]
    expected = make_cohort(captures[order], SPACE, "pair-store", "x", max_size=80, seed=3)
    np.testing.assert_array_equal(cohort.templates, expected.templates)
    p = cohort.meta.provenance
    assert (p.kind, p.rows_read, p.count, p.sampled) == ("pair-store", 112, 80, True)
    assert p.source == str(path.resolve())
    assert "2 templates made by other weights" in (p.note or "")
    assert "20 duplicate templates" in (p.note or "")

    with pytest.raises(CohortError, match="no pairs recorded with hse-mobilenet1024"):
        from_pair_store(
            path, "hse-mobilenet1024", SpaceRef(model="hse-mobilenet1024", dim=1024, sha256="d" * 64)
        )
    with pytest.raises(CohortError, match="no pair store"):
        from_pair_store(tmp_path / "missing.db", MODEL, SPACE)

    # the CLI form pairs:PATH writes the same templates
    result = cli(
        "build", "--model", MODEL, f"pairs:{path}", "--out", str(tmp_path / "p"), "--max", "80", "--seed", "3"
    )
    assert result.returncode == 0, result.stderr
    loaded = load_cohort(tmp_path / "p.cohort.safetensors")
    assert loaded.meta.tensor_sha256 == expected.meta.tensor_sha256


def test_pair_store_on_postgres(postgres: PostgresCluster) -> None:
    """`pairs:postgresql://...`: the same reader on the PostgreSQL back-end; no password kept."""
    captures = templates(70, seed=16)
    dsn = postgres.store_dsn()
    store = PairStore.open(dsn=dsn)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    other = np.random.default_rng(17).standard_normal((70, 192)).astype(np.float32)
    store.record(
        [
            PairRow(
                f"s{i}",
                "sirius-mbf192",
                "b" * 64,
                other[i],
                MODEL,
                SPACE.sha256,
                captures[i],
                start + timedelta(seconds=i),
            )
            for i in range(70)
        ]
    )
    store.close()
    cohort = from_pair_store(with_password(dsn), MODEL, SPACE, max_size=60, seed=1)
    expected = make_cohort(captures, SPACE, "pair-store", "x", max_size=60, seed=1)
    assert cohort.meta.tensor_sha256 == expected.meta.tensor_sha256
    assert "s3cret" not in cohort.meta.provenance.source
    assert cohort.meta.provenance.source.startswith("postgresql://postgres:***@127.0.0.1:")


# ---------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture
def dsn(postgres: PostgresCluster) -> str:
    """A fresh schema of its own on the session's throw-away server."""
    import psycopg

    name = f"cohort_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return postgres.dsn(options=f"-c search_path={name},public")  # pgvector, where installed, is in public


def create_faces(dsn: str, keys: list[int], values: list[np.ndarray | None]) -> None:
    """A `faces` table holding each template as real[], double precision[] and bytea, written through
    psycopg's own adapters (independent of the cohort reader's codec), in the given (key) order."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE faces (user_id bigint PRIMARY KEY, name text, "
            "template real[], template_f8 double precision[], blob bytea)"
        )
        with conn.cursor().copy(
            "COPY faces (user_id, template, template_f8, blob) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["bigint", "float4[]", "float8[]", "bytea"])
            for key, row in zip(keys, values, strict=True):
                if row is None:
                    copy.write_row((key, None, None, None))
                else:
                    copy.write_row(
                        (key, row.tolist(), row.astype(np.float64).tolist(), row.astype("<f4").tobytes())
                    )


def with_password(dsn: str) -> str:
    """The DSN with a password (trust authentication ignores it; provenance must not keep it)."""
    return dsn.replace("postgres@", "postgres:s3cret-pw@", 1)


def test_postgres_equals_npy(dsn: str, tmp_path: Path) -> None:
    """120 rows, one of them NULL, inserted out of key order: the cohort is the npy of the 119 others in
    key order, from every column type, sampled or not, in process and through the CLI."""
    x = templates(120, seed=11)
    keys = np.random.default_rng(12).permutation(np.arange(1000, 1120)).tolist()
    null_key = 1042
    values: list[np.ndarray | None] = [None if k == null_key else x[k - 1000] for k in keys]
    create_faces(dsn, keys, values)
    in_key_order = np.delete(x, null_key - 1000, axis=0)
    npy_path = save_npy(tmp_path / "gallery.npy", in_key_order)

    for max_size, seed in ((1000, 0), (60, 4)):
        npy = from_npy(npy_path, SPACE, max_size, seed)
        for column in ("template", "blob", "template_f8"):
            url = f"{with_password(dsn)}&table=faces&id=user_id&column={column}"
            cohort = from_postgres(url, SPACE, max_size, seed)
            assert cohort.meta.tensor_sha256 == npy.meta.tensor_sha256, (column, max_size)
            np.testing.assert_array_equal(cohort.templates, npy.templates)
            p = cohort.meta.provenance
            assert (p.kind, p.rows_read, p.count) == ("postgres", 120, min(119, max_size))
            assert p.sampled == (max_size < 119)
            assert "skipped 1 of 120 rows (1 NULL)" in (p.note or "")
            assert "s3cret" not in p.source and p.source.startswith("postgresql://postgres@127.0.0.1:")
            assert f"table=faces&id=user_id&column={column}" in p.source
    # --column / --id given apart from the URL
    cohort = from_postgres(f"{dsn}&table=faces", SPACE, id_column="user_id", column="blob")
    assert cohort.meta.tensor_sha256 == from_npy(npy_path, SPACE, 1000).meta.tensor_sha256

    result = cli(
        "build", "--model", MODEL, f"{with_password(dsn)}&table=faces&id=user_id", "--column", "template",
        "--out", str(tmp_path / "pg"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and "s3cret" not in result.stdout
    assert f"{MODEL}, 119 templates from postgres postgresql://" in result.stdout
    loaded = load_cohort(tmp_path / "pg.cohort.safetensors")
    assert loaded.meta.tensor_sha256 == from_npy(npy_path, SPACE, 1000).meta.tensor_sha256
    assert "s3cret" not in (tmp_path / "pg.cohort.safetensors").read_bytes().decode("latin-1")


def test_postgres_bad_rows_and_errors(dsn: str) -> None:
    import psycopg

    x = templates(70, seed=13)
    create_faces(dsn, list(range(70)), list(x))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE faces SET template = template[1:64] WHERE user_id = 3")
        conn.execute("UPDATE faces SET template[5] = 'NaN' WHERE user_id = 8")
        conn.execute("UPDATE faces SET template = NULL WHERE user_id = 9")
        conn.execute("INSERT INTO faces (user_id, name) VALUES (70, 'no template')")
        conn.execute("CREATE TABLE loose (k bigint, template real[])")
        conn.execute("CREATE TABLE typed (k bigint PRIMARY KEY, template text)")
    cohort = from_postgres(f"{dsn}&table=faces&id=user_id&column=template", SPACE)
    expected = make_cohort(np.delete(x, [3, 8, 9], axis=0), SPACE, "postgres", "x")
    assert cohort.meta.tensor_sha256 == expected.meta.tensor_sha256
    note = cohort.meta.provenance.note or ""
    assert "skipped 4 of 71 rows" in note and "2 NULL" in note and "1 NaN or infinity" in note
    assert "1 wrong dimension or malformed" in note and "column type real[]" in note

    with pytest.raises(TableError, match="no table nowhere"):
        from_postgres(f"{dsn}&table=nowhere&id=user_id&column=template", SPACE)
    with pytest.raises(TableError, match="no column nope"):
        from_postgres(f"{dsn}&table=faces&id=user_id&column=nope", SPACE)
    with pytest.raises(TableError, match="no unique index"):
        from_postgres(f"{dsn}&table=loose&id=k&column=template", SPACE)
    with pytest.raises(TableError, match="this one is text"):
        from_postgres(f"{dsn}&table=typed&id=k&column=template", SPACE)
    with pytest.raises(TableError, match="names no id"):
        from_postgres(f"{dsn}&table=faces&column=template", SPACE)
    with pytest.raises(CohortError, match="at least 50"):
        from_postgres(f"{dsn}&table=faces&id=user_id&column=template", SPACE, max_size=20)

    result = cli(
        "build", "--model", MODEL, f"{dsn}&table=nowhere&id=user_id&column=template", "--out", "/tmp/x"
    )
    assert_one_line_error(result, "no table nowhere")
    port = dsn.split("@127.0.0.1:", 1)[1].split("/", 1)[0]
    unreachable = dsn.replace(f":{port}/", ":1/") + "&table=faces&id=user_id&column=template"
    result = cli("build", "--model", MODEL, unreachable, "--out", "/tmp/x")
    assert_one_line_error(result, "cannot connect")


def test_postgres_vector_column_equals_npy(postgres: PostgresCluster, dsn: str, tmp_path: Path) -> None:
    """pgvector's `vector(128)` (where the extension is installed: scripts/install_pgvector.sh; required
    when FACEBRIDGE_REQUIRE_PGVECTOR=1, as in tests/test_migrate_postgres.py)."""
    import psycopg

    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        except psycopg.Error:
            reason = "the pgvector extension is not installed (scripts/install_pgvector.sh)"
            if os.environ.get("FACEBRIDGE_REQUIRE_PGVECTOR") == "1":
                pytest.fail(f"FACEBRIDGE_REQUIRE_PGVECTOR=1 but {reason}")
            pytest.skip(reason)
    x = templates(80, seed=14)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE faces (user_id bigint PRIMARY KEY, template vector(128))")
        with conn.cursor().copy("COPY faces (user_id, template) FROM STDIN") as copy:
            for key in np.random.default_rng(15).permutation(80).tolist():
                copy.write_row((key, "[" + ",".join(repr(float(v)) for v in x[key]) + "]"))
            copy.write_row((80, None))
    cohort = from_postgres(f"{dsn}&table=faces&id=user_id&column=template", SPACE, max_size=60, seed=2)
    npy = from_npy(save_npy(tmp_path / "gallery.npy", x), SPACE, max_size=60, seed=2)
    assert cohort.meta.tensor_sha256 == npy.meta.tensor_sha256
    assert "1 NULL" in (cohort.meta.provenance.note or "")


# ---------------------------------------------------------------------------------------------- photos
def test_cli_builds_a_cohort_from_real_photos(settings: Settings, tmp_path: Path) -> None:
    """60 real photos (3 each of 20 people, folders nested at two depths) plus a photo without a face
    and a broken file: `facebridge cohort build` embeds the 60, counts the 2, writes a loadable file."""
    if not RMFD.is_dir():
        pytest.exit(f"rmfd-dev not found at {RMFD}: the tests need ../shared beside the project", 2)
    people = sorted(p for p in RMFD.iterdir() if p.is_dir())[:20]
    assert len(people) == 20
    folder = tmp_path / "photos"
    for i, person in enumerate(people):
        target = folder / ("site-b" if i % 2 else "site-a") / person.name
        target.mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(photo, target / photo.name)
    assert len(list(folder.rglob("*.jpg"))) == 60
    from PIL import Image

    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "wall.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")

    out = tmp_path / "cohorts" / "site"
    result = cli("build", "--model", PHOTO_MODEL, str(folder), "--out", str(out), "--providers", "cpu")
    assert result.returncode == 0, result.stderr
    written = out.with_name("site.cohort.safetensors")
    assert result.stdout.strip() == f"{written}: {PHOTO_MODEL}, 60 templates from photos {folder.resolve()}"
    assert "note: 60 templates: below 500, normalised FARs" in result.stderr  # too few to trust, said
    cohort = load_cohort(written)
    assert cohort.model == PHOTO_MODEL and cohort.templates.shape == (60, 128)
    p = cohort.meta.provenance
    assert (p.kind, p.rows_read, p.count, p.sampled) == ("photos", 62, 60, False)
    assert "1 unreadable" in (p.note or "") and "1 without a face" in (p.note or "")
    # each template's person is its photo's folder, three photos each, for the cohort's own level
    folders = sorted(f"{'site-b' if i % 2 else 'site-a'}/{person.name}" for i, person in enumerate(people))
    assert cohort.meta.groups == [f for f in folders for _ in range(3)]
    pinned = settings.load_manifest().get(PHOTO_MODEL)
    assert pinned is not None and cohort.meta.space.sha256 == pinned.sha256

    shown = cli("show", str(written))
    assert shown.returncode == 0, shown.stderr
    meta = json.loads(shown.stdout)
    assert meta["tensor_sha256"] == cohort.meta.tensor_sha256 and meta["provenance"]["count"] == 60
    assert meta["people"] == 20 and "groups" not in meta  # the count of persons, not every name


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_npy_and_errors(tmp_path: Path) -> None:
    x = templates(120, seed=21)
    npy = save_npy(tmp_path / "gallery.npy", x)
    result = cli(
        "build", "--model", MODEL, str(npy), "--out", str(tmp_path / "a.cohort.safetensors"), "--max", "100"
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "a.cohort.safetensors"
    assert result.stdout.strip() == (
        f"{written}: {MODEL}, 100 templates (a seeded sample; 120 rows read) from npy {npy.resolve()}"
    )
    assert load_cohort(written).meta.tensor_sha256 == from_npy(npy, SPACE, 100).meta.tensor_sha256
    shown = cli("show", str(written))
    assert shown.returncode == 0 and json.loads(shown.stdout)["space"]["model"] == MODEL

    out = ["--out", str(tmp_path / "never")]
    assert_one_line_error(cli("build", "--model", MODEL, str(tmp_path / "missing.npy"), *out), "no such file")
    assert_one_line_error(
        cli("build", "--model", MODEL, str(tmp_path / "nothing-here"), *out), "not a folder"
    )
    few = save_npy(tmp_path / "few.npy", templates(12))
    assert_one_line_error(cli("build", "--model", MODEL, str(few), *out), "12 templates", "at least 50")
    assert_one_line_error(
        cli("build", "--model", "no-such-model", str(npy), *out), "unknown model no-such-model"
    )
    assert_one_line_error(cli("build", "--model", "yunet", str(npy), *out), "not a recognizer")
    narrow = save_npy(tmp_path / "narrow.npy", templates(60, dim=512))
    assert_one_line_error(cli("build", "--model", MODEL, str(narrow), *out), "dim 512")
    assert_one_line_error(
        cli("build", "--model", MODEL, f"pairs:{tmp_path / 'none.db'}", *out), "no pair store"
    )
    assert_one_line_error(cli("build", "--model", MODEL, f"{tmp_path}/x.parquet", *out), "no such file")
    assert not list(tmp_path.glob("never*"))

    broken = tmp_path / "broken.cohort.safetensors"
    broken.write_bytes(written.read_bytes()[:-100])
    assert_one_line_error(cli("show", str(broken)), "broken.cohort.safetensors")
    odd = tmp_path / "odd.cohort.safetensors"  # a header that is JSON but not an object
    odd.write_bytes((2).to_bytes(8, "little") + b"[]")
    assert_one_line_error(cli("show", str(odd)), "odd.cohort.safetensors: unreadable")


def test_cohort_help_imports_no_vision_stack() -> None:
    probe = (
        "import sys\nfrom facebridge.cli import main\n"
        "try:\n    main(['cohort', 'build', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('cv2', 'onnxruntime', 'psycopg', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pairs:PATH_OR_DSN" in result.stdout and "postgresql://" in result.stdout
