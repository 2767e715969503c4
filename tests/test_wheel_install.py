"""The wheel as a user gets it: built, installed into a fresh virtual environment outside the checkout,
models fetched into the per-user folder, the service started, and called through facebridge.client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, SHARED_MODELS, free_port

KEY = "wheel-test-key"
CLIENT_SCRIPT = """
import sys
import numpy as np
from facebridge.client import Client, NotFoundError

url, key = sys.argv[1], sys.argv[2]
with Client(url, key) as client:
    rows = np.random.default_rng(0).normal(size=(300, 128)).astype(np.float32)
    moved = client.translate(rows, "arcface-mbf128", "sirius-mbf192")
    assert moved.embeddings.shape == (300, 192), moved.embeddings.shape
    assert np.allclose(np.linalg.norm(moved.embeddings, axis=1), 1, atol=1e-5)
    small = client.translate(rows[:3], "arcface-mbf128", "sirius-mbf192")
    assert np.allclose(small.embeddings, moved.embeddings[:3], atol=1e-6)
    answer = client.verify(rows[0], "arcface-mbf128", moved.embeddings[0], "sirius-mbf192", far=1e-3)
    result = answer.results[0]
    # no cohort loaded: through one map, with its map file's thresholds
    assert result.comparison == "cross" and len(result.maps) == 1, result
    assert result.far_interval is not None, result
    try:
        client.translate(rows[:1], "arcface-mbf128", "no-such-model")
    except NotFoundError as error:
        assert error.errors and error.errors[0].field == "target", error.errors
    else:
        raise AssertionError("an unknown model was accepted")
    print(f"translate ok: maps {moved.maps}; verify ok: score {result.score:.4f}")
"""
# 100 people x 4 photos: embeddings near a per-person centre in A (128-d), and a fixed map of them into B
NPY_SCRIPT = """
import numpy as np
rng = np.random.default_rng(0)
ids = np.arange(400) // 4
a = rng.normal(size=(100, 128))[ids] + 0.5 * rng.normal(size=(400, 128))
np.save("a.npy", a.astype(np.float32))
np.save("b.npy", (np.tanh(a @ rng.normal(size=(128, 192)) / 8)).astype(np.float32))
np.save("ids.npy", ids)
"""


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, once for the module."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)])
    wheels = list(dist.glob("facebridge-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _fresh_install(root: Path, requirement: str) -> tuple[Path, dict[str, str], Path]:
    """(venv bin folder, environment, working folder) of `pip install requirement` into a new venv."""
    _run([sys.executable, "-m", "venv", str(root / "venv")])
    bin_dir = root / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", requirement])
    work = root / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEBRIDGE_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(XDG_DATA_HOME=str(root / "data"), XDG_CACHE_HOME=str(root / "cache"), FACEBRIDGE_API_KEYS=KEY)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return bin_dir, env, work


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """A fresh install of the wheel with its CPU runtime: `pip install facebridge[cpu]`."""
    return _fresh_install(tmp_path_factory.mktemp("wheel"), f"{wheel}[cpu]")


@pytest.fixture(scope="module")
def installed_bare(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], Path]:
    """A fresh install of the wheel without extras, so without any ONNX Runtime: `pip install facebridge`."""
    return _fresh_install(tmp_path_factory.mktemp("bare"), str(wheel))


def test_the_wheel_ships_the_console_and_the_map_evaluations(wheel: Path) -> None:
    """The operator console is served from package data, and its map curves come from the shipped
    evaluation files: both must be in the wheel (the tests' vendored axe-core must not)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    console = ROOT / "facebridge" / "console"
    shipped = [p for p in console.rglob("*") if p.is_file() and p.suffix in (".html", ".css", ".svg", ".js")]
    assert shipped
    for path in shipped:
        assert str(path.relative_to(ROOT)) in names, path
    evaluations = sorted((ROOT / "mappings" / "evaluations").glob("*.evaluation.json"))
    assert evaluations
    for path in evaluations:
        assert f"facebridge/data/mappings/evaluations/{path.name}" in names, path
    assert not any("axe" in name for name in names)


def test_one_opencv_and_one_onnxruntime_and_no_top_level_app(
    installed: tuple[Path, dict[str, str], Path],
) -> None:
    bin_dir, env, work = installed
    listed = json.loads(_run([str(bin_dir / "python"), "-m", "pip", "list", "--format=json"], env=env).stdout)
    names = sorted(d["name"].lower() for d in listed)
    assert [n for n in names if n.startswith("opencv")] == ["opencv-python-headless"], names
    assert [n for n in names if n.startswith("onnxruntime")] == ["onnxruntime"], names
    assert "insightface" not in names
    probe = (
        "import importlib.util as u; print(u.find_spec('app') is None, u.find_spec('facebridge') is not None)"
    )
    assert _run([str(bin_dir / "python"), "-c", probe], env=env, cwd=work).stdout.split() == ["True", "True"]


def test_installed_wheel_fetches_serves_and_answers_through_the_client(
    installed: tuple[Path, dict[str, str], Path],
) -> None:
    bin_dir, env, work = installed
    fetched = _run(
        [str(bin_dir / "facebridge"), "models", "fetch", "--all", "--from", str(SHARED_MODELS)],
        env=env,
        cwd=work,
    )
    models_dir = Path(env["XDG_DATA_HOME"]) / "facebridge" / "models"
    assert (models_dir / "insightface_mobilefacenet_y1_arcface_128.onnx").is_file(), fetched.stdout
    doctor = subprocess.run(
        [str(bin_dir / "facebridge"), "doctor"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert doctor.returncode == 0 and "no problems found" in doctor.stdout, doctor.stdout + doctor.stderr
    port = free_port()
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(
        [str(bin_dir / "facebridge"), "serve", "--port", str(port)],
        env={**env, "FACEBRIDGE_LOAD_MODELS": '["arcface-mbf128","sirius-mbf192","yunet"]'},
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the installed service did not become ready:\n" + (work / "serve.log").read_text())
        result = _run([str(bin_dir / "python"), "-c", CLIENT_SCRIPT, url, KEY], env=env, cwd=work)
        assert "translate ok" in result.stdout and "verify ok" in result.stdout
        models = httpx.get(url + "/models", headers={"X-API-Key": KEY}).json()["models"]
        arcface = next(m for m in models if m["id"] == "arcface-mbf128")
        assert arcface["state"] == "loaded" and arcface["file_sha256"] == arcface["sha256"]
        # the wheel carries the shipped normalised thresholds
        report = httpx.get(url + "/calibration", headers={"X-API-Key": KEY}).json()
        assert [s["kind"] for s in report["calibration_sets"]] == ["shipped"], report
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_without_an_onnx_runtime_commands_say_what_to_install(
    installed_bare: tuple[Path, dict[str, str], Path],
) -> None:
    """`pip install facebridge` with neither [cpu] nor [gpu]: what needs no runtime works, what runs models
    says in one line what to install and exits 2, and doctor names the fix; never a traceback."""
    bin_dir, env, work = installed_bare
    fix = 'pip install "facebridge[cpu]"'
    facebridge = str(bin_dir / "facebridge")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [facebridge, *args], env=env, cwd=work, capture_output=True, text=True, timeout=120
        )
        assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
        return result

    no_runtime = subprocess.run(
        [str(bin_dir / "python"), "-c", "import onnxruntime"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert no_runtime.returncode != 0 and "No module named 'onnxruntime'" in no_runtime.stderr

    for args in (["--help"], ["models", "--help"], ["serve", "--help"], ["embed", "--help"]):
        helped = run(*args)
        assert helped.returncode == 0 and "usage: facebridge" in helped.stdout, (args, helped.stderr)

    listed = run("models", "list")
    assert listed.returncode == 0, listed.stderr
    assert "arcface-mbf128" in listed.stdout and "unavailable" in listed.stdout
    assert fix in listed.stderr

    doctor = run("doctor")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "no ONNX Runtime installed" in doctor.stdout and f"fix: {fix}" in doctor.stdout, doctor.stdout
    assert "models in " in doctor.stdout and "maps in " in doctor.stdout  # the rest is still checked

    photos = work / "photos" / "someone"
    photos.mkdir(parents=True)
    for args in (["embed", str(photos.parent), "--model", "arcface-mbf128"], ["serve"]):
        refused = run(*args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        lines = refused.stderr.splitlines()
        assert len(lines) == 1 and fix in lines[0] and "ONNX Runtime" in lines[0], (args, refused.stderr)
        assert refused.stdout == ""

    # fitting a map from .npy files runs no model: it works without a runtime (the default method, the
    # bank's selection between ridge and the residual MLP, included) and writes exactly the --out file
    python = str(bin_dir / "python")
    _run([python, "-c", NPY_SCRIPT], env=env, cwd=work)
    fitted = run(
        "fit", "--source-npy", "a.npy", "--target-npy", "b.npy", "--labels", "ids.npy",
        "--source-model", "arcface-mbf128", "--target-model", "sirius-mbf192", "--out", "f.safetensors",
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    assert (work / "f.safetensors").is_file() and "<- chosen" in fitted.stdout, fitted.stdout
    check = "from pathlib import Path; from facebridge.mapping.mapfile import load_map; "
    check += "print(load_map(Path('f.safetensors')).meta.id)"
    assert _run([python, "-c", check], env=env, cwd=work).stdout.strip() == "arcface-mbf128->sirius-mbf192"
