"""The fast tier (`make test-fast`, marker `fast`): the HTTP contract, the library, the error table and
the CLI's start-up, on an in-process app with a small synthetic bank and no model files."""

from __future__ import annotations

import inspect
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facebridge import exceptions
from facebridge.bridge import Bridge
from facebridge.cli.doctor import Report, check_twins
from facebridge.config import Settings
from facebridge.mapping.bank import MappingBank
from facebridge.paths import in_checkout
from facebridge.problems import DOMAIN_PROBLEMS
from facebridge.service.app import create_app
from facebridge.service.errors import problem_from

from .factories import synthetic_bank_settings

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def synthetic_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return synthetic_bank_settings(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def app_client(synthetic_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(synthetic_settings)) as client:
        state = client.app.state.service  # type: ignore[attr-defined]
        assert state.ready.wait(30)
        yield client


@pytest.fixture(scope="module")
def bridge(synthetic_settings: Settings) -> Bridge:
    return Bridge.from_defaults(settings=synthetic_settings, load_models=False)


def test_synthetic_bank_loads_both_maps(bridge: Bridge) -> None:
    assert sorted(bridge.bank.maps) == [("net-a", "net-b"), ("net-b", "net-c")]


def test_every_post_declares_a_request_body(app_client: TestClient) -> None:
    document = app_client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    posts = {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}
    assert {"/embed", "/translate", "/verify", "/admin/reload-mappings"} <= set(posts)
    for path, operation in posts.items():
        content = operation.get("requestBody", {}).get("content", {})
        assert content, f"POST {path} declares no request body"
        for media_type, media in content.items():
            schema = media.get("schema")
            assert schema, f"POST {path} {media_type}: no schema"
            ref = schema.get("$ref") or (schema.get("anyOf") or [{}])[0].get("$ref")
            if ref:
                assert ref.rsplit("/", 1)[1] in components, f"POST {path}: {ref} does not resolve"
    verify_body = posts["/verify"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert components[verify_body.rsplit("/", 1)[1]]["properties"].keys() >= {"pair", "pairs", "far"}
    assert "application/x-npy" in posts["/translate"]["requestBody"]["content"]
    assert "multipart/form-data" in posts["/embed"]["requestBody"]["content"]


def test_the_openapi_document_names_every_problem_type_of_a_status(app_client: TestClient) -> None:
    """A client author reads from /docs which problem types each error status of a route can carry."""
    responses = app_client.get("/openapi.json").json()["paths"]["/embed"]["post"]["responses"]
    too_large = responses["413"]["description"]
    assert all(
        f"`{code}`" in too_large for code in ("request-too-large", "batch-too-large", "image-too-large")
    )
    assert "`not-ready`" in responses["503"]["description"]
    assert "`unknown-model`" in responses["404"]["description"]


def test_library_and_service_translate_identically(app_client: TestClient, bridge: Bridge) -> None:
    rows = np.random.default_rng(5).normal(size=(40, 8)).astype(np.float32)
    library = bridge.translate(rows, "net-a", "net-c")
    answer = app_client.post(
        "/translate", json={"source": "net-a", "target": "net-c", "embeddings": rows.tolist()}
    ).json()
    assert answer["composed"] is True and [m["id"] for m in answer["maps"]] == [m.id for m in library.maps]
    np.testing.assert_array_equal(np.asarray(answer["embeddings"], np.float32), library.embeddings)
    body = io.BytesIO()
    np.save(body, rows)
    binary = app_client.post(
        "/translate?source=net-a&target=net-c",
        content=body.getvalue(),
        headers={"content-type": "application/x-npy"},
    )
    np.testing.assert_array_equal(np.load(io.BytesIO(binary.content)), library.embeddings)


def test_library_and_service_verify_identically(app_client: TestClient, bridge: Bridge) -> None:
    rng = np.random.default_rng(6)
    pairs = [
        {"a": {"model": "net-a", "embedding": rng.normal(size=8).tolist()},
         "b": {"model": "net-b", "embedding": rng.normal(size=12).tolist()}}
        for _ in range(5)
    ]  # fmt: skip
    answer = app_client.post("/verify", json={"pairs": pairs, "far": 0.001}).json()["results"]
    library = bridge.verify_pairs(
        [((p["a"]["model"], p["a"]["embedding"]), (p["b"]["model"], p["b"]["embedding"])) for p in pairs],
        far=0.001,
    )
    assert [r.model_dump(mode="json") for r in library] == answer
    one = bridge.verify(
        ("net-a", pairs[0]["a"]["embedding"]), ("net-b", pairs[0]["b"]["embedding"]), far=0.001
    )
    assert one.score == answer[0]["score"] and one.threshold == answer[0]["threshold"]


def test_domain_errors_become_the_same_problems_in_library_and_service(
    app_client: TestClient, bridge: Bridge
) -> None:
    with pytest.raises(exceptions.UnknownModel) as raised:
        bridge.translate([[0.1] * 8], "net-x", "net-b")
    answer = app_client.post(
        "/translate", json={"source": "net-x", "target": "net-b", "embeddings": [[0.1] * 8]}
    )
    problem = problem_from(raised.value)
    assert answer.status_code == problem.status == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["type"].endswith(problem.code) and body["errors"][0]["field"] == "source"
    with pytest.raises(exceptions.WrongDimension):
        bridge.translate([[0.1] * 7], "net-a", "net-b")
    with pytest.raises(exceptions.NoMapPath, match="net-c maps into"):  # what it can reach instead
        bridge.translate([[0.1] * 6], "net-c", "net-a")
    with pytest.raises(exceptions.NotReady):
        bridge.embed(b"not a photo")


def test_every_domain_exception_has_a_problem_type() -> None:
    domain = [
        cls
        for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, exceptions.FacebridgeError)
    ]
    assert set(domain) == set(DOMAIN_PROBLEMS), set(domain) ^ set(DOMAIN_PROBLEMS)
    statuses = {cls: problem_from(cls("x", "field")).status for cls in domain}
    assert all(400 <= s < 600 for s in statuses.values())


def test_reload_dry_run_changes_nothing(app_client: TestClient) -> None:
    answer = app_client.post("/admin/reload-mappings", json={"dry_run": True}).json()
    assert answer == {"maps": ["net-a->net-b", "net-b->net-c"], "refused": [], "applied": False}
    assert app_client.post("/admin/reload-mappings", json={"dry_run": "x"}).status_code == 422


def test_help_imports_no_vision_stack() -> None:
    probe = (
        "import sys\nfrom facebridge.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('cv2', 'onnxruntime', 'insightface', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_doctor_names_twin_packages_and_the_fix() -> None:
    report = Report()
    check_twins(
        report,
        {"opencv-python": "4.10.0", "opencv-python-headless": "4.10.0", "onnxruntime": "1.20.0"},
    )
    assert len(report.problems) == 1
    problem, fix = report.problems[0]
    assert "opencv-python, opencv-python-headless" in problem
    assert fix.startswith("pip uninstall -y opencv-python opencv-python-headless")
    assert "opencv-python-headless==4.10.0" in fix
    empty = Report()
    check_twins(empty, {"opencv-python-headless": "4.10.0"})
    assert empty.problems and "facebridge[cpu]" in empty.problems[0][1]


def test_outside_a_checkout_folders_default_to_user_folders_and_packaged_data(tmp_path: Path) -> None:
    probe = (
        "from facebridge.config import Settings; s = Settings(); "
        "print(s.models_dir); print(s.mappings_dir); print(s.manifest_path)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEBRIDGE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    models_dir, mappings_dir, manifest = result.stdout.split()
    assert models_dir == str(tmp_path / "data" / "facebridge" / "models")
    assert Path(mappings_dir, "spaces").is_dir() and Path(manifest).is_file()
    assert not in_checkout(tmp_path)


def test_user_manifest_overlays_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "user-manifest.toml").write_text(
        '[[models]]\nid = "my-net"\nkind = "recognizer"\nfile = "my.onnx"\ndim = 256\nsize = 112\n'
        'alignment = "arcface112"\noutput_index = 0\narchitecture = "test"\nlicense = "test"\n'
    )
    settings = Settings(models_dir=tmp_path)
    manifest = settings.load_manifest()
    entry = manifest.get("my-net")
    assert entry is not None and entry.dim == 256
    assert manifest.get("arcface-mbf128") is not None  # the shipped entries stay
    (tmp_path / "user-manifest.toml").write_text('[[models]]\nid = "bad"\nkind = "recognizer"\nfile = "x"\n')
    with pytest.raises(ValueError, match=r"user-manifest\.toml"):
        Settings(models_dir=tmp_path).load_manifest()


def test_bank_files_written_here_load_in_a_fresh_bank(synthetic_settings: Settings) -> None:
    bank = MappingBank.load(synthetic_settings.mappings_dir)
    assert not bank.refused and len(bank.maps) == 2
