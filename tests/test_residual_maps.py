"""Maps with a residual MLP: stored and verified like affine maps, applied by the bank, served by
/translate (direct and composed) and used by the migration engine, all equal to the documented formula."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from facebridge.mapping import bank as bank_module
from facebridge.mapping.bank import LoadedMap, MapPath, MappingBank, apply_map_tensors
from facebridge.mapping.mapfile import (
    METADATA_KEY,
    MapFileError,
    MapMetadata,
    ResidualTensors,
    load_map,
    map_filename,
    save_map,
    tensor_digest,
)
from facebridge.migration.galleries import NpyGallery, embeddings_from_arrow
from facebridge.migration.job import migrate

from .conftest import MODELS_DIR, ROOT, LiveServer
from .factories import SHIPPED_MANIFEST, synthetic_map, unit_rows, write_synthetic_map

ARC, SIR, DLIB = "arcface-mbf128", "sirius-mbf192", "dlib-r29-128"
KEY = "residual-key"


def make_residual(d_source: int, d_target: int, hidden: int = 32, seed: int = 0) -> ResidualTensors:
    rng = np.random.default_rng(seed)
    return ResidualTensors(
        rng.normal(size=(d_source, hidden)).astype(np.float32),
        rng.normal(size=hidden).astype(np.float32),
        rng.normal(size=(hidden, d_target)).astype(np.float32),
        rng.normal(size=d_target).astype(np.float32),
    )


def formula(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, r: ResidualTensors) -> np.ndarray:
    """The map's documented formula in float64, written independently of the bank's code."""
    x = x.astype(np.float64)
    hidden = np.maximum(x @ r.in_weight.astype(np.float64) + r.in_bias, 0.0)
    return x @ weight.astype(np.float64) + bias + hidden @ r.out_weight.astype(np.float64) + r.out_bias


def normalised(y: np.ndarray) -> np.ndarray:
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def write_residual(
    directory: Path, source: str, target: str, hidden: int = 32, seed: int = 0
) -> tuple[Path, MapMetadata, np.ndarray, np.ndarray, ResidualTensors]:
    meta, weight, bias = synthetic_map(source, target, seed=seed)
    residual = make_residual(meta.source.dim, meta.target.dim, hidden, seed)
    path = directory / map_filename(source, target)
    saved = save_map(path, meta, weight, bias, residual)
    return path, saved, weight, bias, residual


def test_residual_map_round_trips_and_applies_the_formula(tmp_path: Path) -> None:
    path, saved, weight, bias, residual = write_residual(tmp_path, ARC, SIR, hidden=48)
    loaded = load_map(path)
    assert loaded.meta == saved and saved.hidden == 48 and loaded.residual is not None
    for name, array in residual.named().items():
        np.testing.assert_array_equal(loaded.residual.named()[name], array, err_msg=name)
    # the digest covers the residual tensors; without them it is exactly the affine digest of old
    assert saved.tensor_sha256 == tensor_digest(weight, bias, residual) != tensor_digest(weight, bias)

    bank = MappingBank.load(tmp_path, SHIPPED_MANIFEST)
    mapped = bank.maps[(ARC, SIR)]
    assert mapped.nonlinear and bank.refused == []
    x = unit_rows(200, 128, 1)
    expected = formula(x, weight, bias, residual)
    np.testing.assert_allclose(apply_map_tensors(x, weight, bias, residual), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(mapped.apply(x), normalised(expected), atol=1e-5)
    out = np.empty((len(x), 192), dtype=np.float32)
    assert mapped.apply(x, out) is out
    np.testing.assert_allclose(out, normalised(expected), atol=1e-5)


def test_hidden_layer_in_row_chunks_gives_the_same_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, weight, bias, residual = write_residual(tmp_path, ARC, DLIB, hidden=16)
    x = unit_rows(103, 128, 2)
    whole = apply_map_tensors(x, weight, bias, residual)
    monkeypatch.setattr(bank_module, "RESIDUAL_CHUNK_ROWS", 10)  # 11 blocks, the last one partial
    np.testing.assert_allclose(apply_map_tensors(x, weight, bias, residual), whole, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(whole, formula(x, weight, bias, residual), rtol=1e-4, atol=1e-3)


def test_affine_maps_keep_their_file_and_digest(tmp_path: Path) -> None:
    path = write_synthetic_map(tmp_path, ARC, SIR)
    loaded = load_map(path)
    assert loaded.residual is None and loaded.meta.hidden is None
    assert loaded.meta.tensor_sha256 == tensor_digest(loaded.weight, loaded.bias)
    assert '"hidden"' not in json.dumps(load_file_metadata(path))  # affine headers read as before
    # the shipped bank mixes both kinds; each file says which it is and loads as that
    shipped = [load_map(p) for p in sorted((ROOT / "mappings").glob("*.safetensors"))]
    affine = [m for m in shipped if m.residual is None]
    nonlinear = [m for m in shipped if m.residual is not None]
    assert affine and nonlinear
    for m in affine:
        assert m.meta.hidden is None and not LoadedMap(m.meta, m.weight, m.bias, "f").nonlinear
    for m in nonlinear:
        assert m.residual is not None and m.meta.hidden == m.residual.hidden
        assert LoadedMap(m.meta, m.weight, m.bias, "f", m.residual).nonlinear


Edit = Callable[[dict[str, np.ndarray], dict[str, object]], object]  # edits a file's tensors/metadata


def load_file_metadata(path: Path) -> dict[str, object]:
    size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + size])
    return dict(json.loads(header["__metadata__"][METADATA_KEY]))


def rewrite(source: Path, target: Path, edit: Edit) -> None:
    """Copy a map file with its tensors and/or metadata edited (the recorded digest is left as it was)."""
    tensors = dict(load_file(str(source)))
    meta = load_file_metadata(source)
    edit(tensors, meta)
    save_file(tensors, str(target), metadata={METADATA_KEY: json.dumps(meta)})


def _set(tensors: dict[str, np.ndarray], name: str, value: np.ndarray) -> None:
    tensors[name] = value


BAD_FILES: dict[str, tuple[Edit, str]] = {
    "tampered.safetensors": (
        lambda t, m: _set(t, "residual.out_weight", t["residual.out_weight"] * np.float32(1.001)),
        "tensor sha256",
    ),
    "missing.safetensors": (
        lambda t, m: t.pop("residual.out_bias"),
        "all four or none; missing ['residual.out_bias']",
    ),
    "shape.safetensors": (
        lambda t, m: _set(t, "residual.in_bias", np.zeros(33, np.float32)),
        "residual shapes",
    ),
    "swapped.safetensors": (
        lambda t, m: _set(t, "residual.out_weight", np.ascontiguousarray(t["residual.out_weight"].T)),
        "residual shapes",
    ),
    "nan.safetensors": (
        lambda t, m: t["residual.in_weight"].__setitem__((3, 4), np.nan),
        "tensor residual.in_weight contains NaN",
    ),
    "float64.safetensors": (
        lambda t, m: _set(t, "residual.in_bias", t["residual.in_bias"].astype(np.float64)),
        "tensor residual.in_bias is float64",
    ),
    "unknown.safetensors": (
        lambda t, m: _set(t, "residual.gate", np.ones(32, np.float32)),
        "unknown tensor(s) ['residual.gate']",
    ),
    "hidden.safetensors": (lambda t, m: m.update(hidden=64), "the metadata records 64"),
    "no-hidden.safetensors": (lambda t, m: m.pop("hidden"), "the metadata records None"),
}


def test_bad_residual_files_are_refused_and_the_rest_keeps_loading(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    good, *_ = write_residual(scratch, ARC, DLIB)
    bank_dir = tmp_path / "bank"
    bank_dir.mkdir()
    write_synthetic_map(bank_dir, ARC, SIR)
    write_residual(bank_dir, SIR, ARC, seed=1)
    for name, (edit, says) in BAD_FILES.items():
        rewrite(good, bank_dir / name, edit)
        with pytest.raises(MapFileError, match=f"^{re.escape(name)}: .*{re.escape(says)}"):
            load_map(bank_dir / name)
    bank = MappingBank.load(bank_dir, SHIPPED_MANIFEST)
    assert set(bank.maps) == {(ARC, SIR), (SIR, ARC)} and bank.maps[(SIR, ARC)].nonlinear
    reasons = {r.file: r.reason for r in bank.refused}
    assert set(reasons) == set(BAD_FILES)
    for name, (_, says) in BAD_FILES.items():
        assert says in reasons[name], reasons[name]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def residual_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arcface→sirius with a residual MLP and an affine sirius→dlib, so arcface→dlib is composed."""
    directory = tmp_path_factory.mktemp("residual-bank")
    write_residual(directory, ARC, SIR, hidden=24, seed=3)
    write_synthetic_map(directory, SIR, DLIB, seed=4)
    return directory


@pytest.fixture(scope="module")
def residual_server(residual_bank: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_MAPPINGS_DIR": str(residual_bank),
            "FACEBRIDGE_LOAD_MODELS": "[]",
            "FACEBRIDGE_API_KEYS": KEY,
        },
        tmp_path_factory.mktemp("residual-server") / "server.log",
    )
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


def test_translate_serves_the_residual_formula(residual_server: LiveServer, residual_bank: Path) -> None:
    first, second = (
        load_map(residual_bank / map_filename(ARC, SIR)),
        load_map(residual_bank / map_filename(SIR, DLIB)),
    )
    assert first.residual is not None and second.residual is None
    x = unit_rows(300, 128, 5)
    direct = normalised(formula(x, first.weight, first.bias, first.residual))
    with httpx.Client(base_url=residual_server.url, headers={"X-API-Key": KEY}, timeout=60) as http:
        listing = {m["id"]: m["metadata"] for m in http.get("/mappings").json()["maps"]}
        assert listing[f"{ARC}->{SIR}"]["hidden"] == 24 and listing[f"{SIR}->{DLIB}"]["hidden"] is None

        answer = http.post("/translate", json={"source": ARC, "target": SIR, "embeddings": x.tolist()})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["composed"] is False and body["maps"][0]["id"] == f"{ARC}->{SIR}"
        np.testing.assert_allclose(np.array(body["embeddings"]), direct, atol=1e-5)

        binary = http.post(
            f"/translate?source={ARC}&target={DLIB}",
            content=_npy(x),
            headers={"content-type": "application/x-npy"},
        )
        assert binary.status_code == 200, binary.text
        assert binary.headers["x-facebridge-maps"] == f"{ARC}->{SIR},{SIR}->{DLIB}"
        # each hop re-normalises: the affine hop is applied to the residual hop's unit-length output
        expected = normalised(direct @ second.weight.astype(np.float64) + second.bias)
        np.testing.assert_allclose(np.load(io.BytesIO(binary.content)), expected, atol=1e-5)


def test_migration_applies_the_residual_map_and_records_its_digest(tmp_path: Path) -> None:
    _, saved, weight, bias, residual = write_residual(tmp_path, ARC, SIR, hidden=20, seed=6)
    path = MappingBank.load(tmp_path, SHIPPED_MANIFEST).find_path(ARC, SIR)
    assert isinstance(path, MapPath) and path.maps[0].nonlinear
    x = unit_rows(777, 128, 7)
    np.save(tmp_path / "g.npy", x)
    migrate(
        NpyGallery(tmp_path / "g.npy"),
        tmp_path / "g.npy",
        path,
        tmp_path / "out",
        chunk_rows=300,
        progress=False,
    )
    table = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    out = embeddings_from_arrow(table.column("embedding"))
    np.testing.assert_allclose(out, normalised(formula(x, weight, bias, residual)), atol=1e-5)
    meta = json.loads(pq.read_schema(tmp_path / "out" / "part-000000.parquet").metadata[b"facebridge"])
    assert meta["maps"][0]["tensor_sha256"] == saved.tensor_sha256
