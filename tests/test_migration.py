"""Gallery migration with the shipped maps: Parquet and .npy in, Parquet parts out, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facebridge.mapping.bank import MappingBank
from facebridge.migration.galleries import NpyGallery, ParquetGallery, embeddings_from_arrow
from facebridge.migration.job import MANIFEST, migrate
from facebridge.vision.manifest import load_manifest
from tests.factories import unit_rows

from .conftest import MODELS_DIR, ROOT

SOURCE, TARGET = "arcface-mbf128", "sirius-mbf192"


@pytest.fixture(scope="module")
def bank() -> MappingBank:
    return MappingBank.load(ROOT / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))


def read_output(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(sorted(folder.glob("part-*.parquet")))
    return table.column("id").to_numpy(), embeddings_from_arrow(table.column("embedding"))


@pytest.mark.parametrize("layout", ["list", "fixed_size_list", "fixed_size_binary"])
def test_parquet_gallery_is_translated_row_for_row(tmp_path: Path, bank: MappingBank, layout: str) -> None:
    x = unit_rows(2_345, 128, 0)
    ids = np.array([f"person-{i:05d}" for i in range(len(x))])
    if layout == "list":
        column = pa.array(list(x))
    elif layout == "fixed_size_list":
        column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 128)
    else:
        column = pa.array([row.tobytes() for row in x], type=pa.binary(128 * 4))
    source = tmp_path / "gallery.parquet"
    pq.write_table(pa.table({"id": ids, "embedding": column}), source, row_group_size=700)
    path = bank.find_path(SOURCE, TARGET)
    assert path is not None
    result = migrate(ParquetGallery(source), source, path, tmp_path / "out", chunk_rows=1_000, progress=False)
    assert (result.rows, result.parts) == (2_345, 3)
    out_ids, out = read_output(tmp_path / "out")
    assert list(out_ids) == list(ids)
    np.testing.assert_allclose(out, path.apply(x.copy()), atol=1e-6)
    written = pq.read_schema(tmp_path / "out" / "part-000000.parquet").field("embedding").type
    # binary in, binary out (raw float32); list layouts come out as a fixed-size list of float32
    assert pa.types.is_fixed_size_binary(written) == (layout == "fixed_size_binary")
    meta = json.loads(pq.read_schema(tmp_path / "out" / "part-000000.parquet").metadata[b"facebridge"])
    assert meta["maps"][0]["id"] == f"{SOURCE}->{TARGET}" and len(meta["maps"][0]["tensor_sha256"]) == 64
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["state"] == "complete"


def test_npy_gallery_with_ids_and_a_refused_folder(tmp_path: Path, bank: MappingBank) -> None:
    x = unit_rows(999, 128, 1)
    np.save(tmp_path / "g.npy", x)
    np.save(tmp_path / "ids.npy", np.arange(10_000, 10_999))
    path = bank.find_path(SOURCE, TARGET)
    assert path is not None
    gallery = NpyGallery(tmp_path / "g.npy", tmp_path / "ids.npy")
    migrate(gallery, tmp_path / "g.npy", path, tmp_path / "out", chunk_rows=400, progress=False)
    out_ids, out = read_output(tmp_path / "out")
    assert list(out_ids) == list(range(10_000, 10_999))
    np.testing.assert_allclose(out, path.apply(x.copy()), atol=1e-6)
    other = bank.find_path(SOURCE, "faceplugin-mbf512")
    assert other is not None
    with pytest.raises(ValueError, match="another gallery or map"):
        migrate(gallery, tmp_path / "g.npy", other, tmp_path / "out", progress=False)
    (tmp_path / "out" / "part-000001.parquet").unlink()  # a lost part is found by the final check
    with pytest.raises(RuntimeError, match="missing"):
        from facebridge.migration.job import verify

        verify(gallery, tmp_path / "out", 400, 3)


def test_a_killed_migration_resumes_to_the_same_output(tmp_path: Path) -> None:
    x = unit_rows(300_000, 128, 2)
    ids = np.arange(300_000, dtype=np.int64) * 7
    source = tmp_path / "gallery.parquet"
    pq.write_table(
        pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 128)}),
        source,
    )
    command = [sys.executable, "-m", "facebridge", "migrate", "--source", SOURCE, "--target", TARGET,
               "--quiet",
               "--chunk-rows", "5000", "--models-dir", str(MODELS_DIR), str(source)]  # fmt: skip
    env = {**os.environ, "FACEBRIDGE_MAPPINGS_DIR": str(ROOT / "mappings")}
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([*command, str(killed_dir)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while len(list(killed_dir.glob("part-*.parquet"))) < 10:
        assert process.poll() is None and time.monotonic() < deadline, (
            "migration ended before it could be killed"
        )
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(killed_dir.glob("part-*.parquet")))
    assert 10 <= written < 60, written  # killed midway
    assert json.loads((killed_dir / MANIFEST).read_text())["state"] == "running"

    resumed = subprocess.run([*command, str(killed_dir)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({written} parts kept from an earlier run" in resumed.stdout, resumed.stdout
    straight = subprocess.run([*command, str(tmp_path / "straight")], cwd=ROOT, env=env, capture_output=True)
    assert straight.returncode == 0

    resumed_ids, resumed_out = read_output(killed_dir)
    straight_ids, straight_out = read_output(tmp_path / "straight")
    assert np.array_equal(resumed_ids, ids) and np.array_equal(straight_ids, ids)
    assert np.array_equal(resumed_out, straight_out)
    assert not list(killed_dir.glob("*.tmp"))


def test_dask_engine_matches_the_streaming_job(tmp_path: Path, bank: MappingBank) -> None:
    from facebridge.migration.distributed import migrate_dask

    x = unit_rows(12_000, 128, 3)
    ids = np.array([f"t{i}" for i in range(len(x))])
    source = tmp_path / "gallery.parquet"
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 128)
    pq.write_table(pa.table({"id": ids, "embedding": column}), source, row_group_size=2_500)
    path = bank.find_path(SOURCE, TARGET)
    assert path is not None
    result = migrate_dask(source, path, tmp_path / "dask", workers=2)
    assert (result.rows, result.parts) == (12_000, 5)  # one partition per row group
    streamed = migrate(
        ParquetGallery(source), source, path, tmp_path / "stream", chunk_rows=4_000, progress=False
    )
    assert streamed.rows == result.rows
    dask_ids, dask_out = read_output(tmp_path / "dask")
    stream_ids, stream_out = read_output(tmp_path / "stream")
    assert list(dask_ids) == list(ids) == list(stream_ids)
    np.testing.assert_allclose(dask_out, stream_out, atol=1e-6)  # BLAS blocking differs with batch size
    # a second run over the finished folder writes nothing new and still checks out
    again = migrate_dask(source, path, tmp_path / "dask", workers=1)
    assert again.resumed_parts == 5


def test_allocator_settings_leave_a_users_choice_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from facebridge.migration.memory import SETTINGS, reuse_freed_buffers

    monkeypatch.delenv("JE_ARROW_MALLOC_CONF", raising=False)
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    # pyarrow is loaded in this test process, so the settings cannot apply here (children get them)
    assert reuse_freed_buffers() is False
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system"
    assert os.environ["JE_ARROW_MALLOC_CONF"] == SETTINGS["JE_ARROW_MALLOC_CONF"]


def test_allocator_is_jemalloc_when_set_before_pyarrow_loads() -> None:
    """As `facebridge migrate` does: the settings first, then pyarrow."""
    probe = (
        "import sys; from facebridge.migration.memory import reuse_freed_buffers; "
        "assert reuse_freed_buffers(); "
        "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF")
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "jemalloc"
