"""/translate and /verify speed over loopback, next to a bare FastAPI echo endpoint and in-process numpy.

All in one run, against real uvicorn servers: `facebridge serve` with the maps in `mappings/` (or
--mappings DIR) and an echo app (benchmarks/echo_app.py) that parses and returns the same JSON payload.
A second `facebridge serve` holds a nonlinear map of the same pair, built here from the shipped affine
map plus a random residual MLP of width --hidden (scaled small, so outputs stay close to the affine
map's), so its cost is measured against the affine map in the same run. When the shipped map of the
pair is itself nonlinear (a fitted residual MLP), that map is measured against its own affine part.

    python benchmarks/translate_throughput.py [--source arcface-mbf128] [--target faceplugin-mbf512]
    python benchmarks/translate_throughput.py --requests 20 --batches 1000   # a quick smoke run
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebridge.api.translate import read_npy  # noqa: E402
from facebridge.mapping.bank import LoadedMap, MapPath, MappingBank  # noqa: E402
from facebridge.mapping.mapfile import ResidualTensors, map_filename, save_map  # noqa: E402
from facebridge.vision.manifest import load_manifest  # noqa: E402
from tests.conftest import MODELS_DIR, LiveServer, free_port  # noqa: E402

BENCH_KEY = "benchmark-key"


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    for _ in range(max(3, repeats // 20)):
        call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass
class Served:
    """One running server and the same map loaded in-process (for the numpy column)."""

    api: httpx.Client
    path: MapPath


def nonlinear_copy(affine: LoadedMap, hidden: int, directory: Path, seed: int = 0) -> Path:
    """Write the affine map plus a random residual MLP of width `hidden` into `directory`.

    The residual is scaled to add about 1% to the output, so the translation stays meaningful; only
    its cost matters here, and that depends on the shapes, not on the values.
    """
    rng = np.random.default_rng(seed)
    d_in, d_out = affine.weight.shape
    residual = ResidualTensors(
        rng.normal(0.0, 1.0, (d_in, hidden)),  # unit-length inputs: pre-activations of order 1
        rng.normal(0.0, 0.1, hidden),
        rng.normal(0.0, 0.01 / np.sqrt(hidden), (hidden, d_out)),
        np.zeros(d_out),
    )
    meta = affine.meta.model_copy(update={"method": f"{affine.meta.method}+random-residual"})
    path = directory / map_filename(affine.meta.source.model, affine.meta.target.model)
    save_map(path, meta, affine.weight, affine.bias, residual)
    return directory


def bulk_rates(served: Served, source: str, target: str, batch: np.ndarray, repeats: int) -> dict[str, float]:
    """Embeddings/s for JSON (up to 10k rows), binary .npy and in-process numpy on one server's map."""
    n = len(batch)
    rates = {"json": float("nan")}
    if n <= 10_000:  # JSON bodies of 100k x 128 floats are not what JSON is for; use the binary form
        body = {"source": source, "target": target, "embeddings": batch.tolist()}
        rates["json"] = n / statistics.mean(
            timed(lambda: served.api.post("/translate", json=body).raise_for_status(), repeats)
        )
    data = npy(batch)
    url = f"/translate?source={source}&target={target}"
    # the standard library client reads a large body in one go; parsing is the same zero-copy reader
    connection = http.client.HTTPConnection(served.api.base_url.host, served.api.base_url.port)

    def binary() -> None:
        connection.request(
            "POST", url, body=data, headers={"content-type": "application/x-npy", "X-API-Key": BENCH_KEY}
        )
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"/translate answered {response.status}: {answer[:200]!r}")
        read_npy(answer)

    rates["binary"] = n / statistics.mean(timed(binary, repeats))
    rates["numpy"] = n / statistics.mean(timed(lambda: served.path.apply(batch), max(20, repeats)))
    connection.close()
    return rates


def bulk_row(
    affine: Served,
    nonlinear: Served,
    echo_client: httpx.Client,
    source: str,
    target: str,
    n: int,
    dim_in: int,
) -> str:
    """One table row at batch size n: the affine map with the echo floor, then the nonlinear map."""
    batch = unit_rows(n, dim_in, 2)
    repeats = max(3, 30_000 // n)
    echo_rate = float("nan")
    if n <= 10_000:
        body = {"source": source, "target": target, "embeddings": batch.tolist()}
        echo_rate = n / statistics.mean(
            timed(lambda: echo_client.post("/echo", json=body).raise_for_status(), repeats)
        )
    a = bulk_rates(affine, source, target, batch, repeats)
    b = bulk_rates(nonlinear, source, target, batch, repeats)
    return (
        f"| {n:,} | {a['json']:,.0f} | {echo_rate:,.0f} | {a['binary']:,.0f} | {a['numpy']:,.0f} "
        f"| {a['binary'] / a['numpy']:.2f}x | {b['json']:,.0f} | {b['binary']:,.0f} | {b['numpy']:,.0f} "
        f"| {b['binary'] / a['binary']:.2f}x | {b['numpy'] / a['numpy']:.2f}x |"
    )


def start_server(mappings: Path, log: Path) -> LiveServer:
    env = {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_MAPPINGS_DIR": str(mappings),
        "FACEBRIDGE_LOAD_MODELS": "[]",
        "FACEBRIDGE_MAX_EMBEDDINGS_PER_REQUEST": "200000",
        "FACEBRIDGE_API_KEYS": BENCH_KEY,
    }
    return LiveServer(env, log)


def check_serves(served: Served, source: str, target: str, dim_in: int) -> None:
    """The server answers with the in-process map's output: the right map file is being measured."""
    x = unit_rows(5, dim_in, 3)
    body = {"source": source, "target": target, "embeddings": x.tolist()}
    answer = np.array(served.api.post("/translate", json=body).raise_for_status().json()["embeddings"])
    if not np.allclose(answer, served.path.apply(x), atol=1e-5):
        raise SystemExit(f"the server for {served.path.ids} does not serve the map loaded in-process")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="arcface-mbf128")
    parser.add_argument(
        "--target",
        default="dlib-r29-128",
        help="default: same dim as the source, so the echo endpoint returns as many bytes as /translate",
    )
    parser.add_argument("--mappings", type=Path, default=ROOT / "mappings")
    parser.add_argument("--requests", type=int, default=400, help="single requests per measurement")
    parser.add_argument(
        "--batches",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[1_000, 10_000, 100_000],
        help="comma-separated bulk batch sizes (default 1000,10000,100000)",
    )
    parser.add_argument("--hidden", type=int, default=256, help="residual width of the nonlinear map")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    manifest = load_manifest(MODELS_DIR / "manifest.toml")
    bank = MappingBank.load(args.mappings, manifest)
    direct = bank.maps.get((args.source, args.target))
    if direct is None:
        raise SystemExit(f"no direct map {args.source}->{args.target} in {args.mappings}")
    scratch = tempfile.TemporaryDirectory(prefix="facebridge-bench-")
    if direct.nonlinear:
        # the shipped map is nonlinear: measure it against its own affine part, served alone
        assert direct.residual is not None
        args.hidden = direct.residual.hidden
        affine_dir = Path(scratch.name) / "affine"
        (affine_dir / "spaces").mkdir(parents=True)
        for space in (args.mappings / "spaces").glob("*"):
            shutil.copy(space, affine_dir / "spaces" / space.name)
        meta = direct.meta.model_copy(
            update={"method": f"{direct.meta.method} (affine part)", "hidden": None}
        )
        save_map(affine_dir / map_filename(args.source, args.target), meta, direct.weight, direct.bias)
        nonlinear_dir = args.mappings
    else:
        affine_dir = args.mappings
        nonlinear_dir = Path(scratch.name) / "nonlinear"
        nonlinear_dir.mkdir()
        nonlinear_copy(direct, args.hidden, nonlinear_dir)
    affine_map = MappingBank.load(affine_dir, manifest).maps[(args.source, args.target)]
    path = MapPath((affine_map,))
    dim_in = path.maps[0].meta.source.dim
    dim_out = path.maps[-1].meta.target.dim
    nonlinear_path = MappingBank.load(nonlinear_dir, manifest).find_path(args.source, args.target)
    assert nonlinear_path is not None and nonlinear_path.maps[0].nonlinear
    server = start_server(affine_dir, Path("/tmp/facebridge-translate-bench.log"))
    nonlinear_server = start_server(nonlinear_dir, Path("/tmp/facebridge-translate-bench-nonlinear.log"))
    echo_port = free_port()
    echo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.echo_app:app",
            "--port",
            str(echo_port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.wait_ready()
        nonlinear_server.wait_ready()
        headers = {"X-API-Key": BENCH_KEY}
        api = httpx.Client(base_url=server.url, timeout=300, headers=headers)
        affine = Served(api, path)
        nonlinear = Served(
            httpx.Client(base_url=nonlinear_server.url, timeout=300, headers=headers), nonlinear_path
        )
        for served in (affine, nonlinear):
            check_serves(served, args.source, args.target, dim_in)
        echo_client = httpx.Client(base_url=f"http://127.0.0.1:{echo_port}", timeout=300)
        for _ in range(100):
            try:
                echo_client.get("/docs")
                break
            except httpx.TransportError:
                time.sleep(0.1)

        one = unit_rows(1, dim_in)
        translate_body = {"source": args.source, "target": args.target, "embeddings": one.tolist()}
        other = unit_rows(1, dim_out, 1)
        verify_body = {
            "pair": {
                "a": {"model": args.source, "embedding": one[0].tolist()},
                "b": {"model": args.target, "embedding": other[0].tolist()},
            }
        }
        nonlinear_single = f"/translate (1 embedding), nonlinear h={args.hidden}"
        singles = {
            "/translate (1 embedding)": lambda: api.post(
                "/translate", json=translate_body
            ).raise_for_status(),
            nonlinear_single: lambda: nonlinear.api.post(
                "/translate", json=translate_body
            ).raise_for_status(),
            "echo of the /translate body": lambda: echo_client.post(
                "/echo", json=translate_body
            ).raise_for_status(),
            "/verify (1 pair)": lambda: api.post("/verify", json=verify_body).raise_for_status(),
            "echo of the /verify body": lambda: echo_client.post(
                "/echo", json=verify_body
            ).raise_for_status(),
        }
        # every endpoint is called before any is timed: the first one measured otherwise pays for the
        # servers settling (seen as a 15-20% lower rate for whichever endpoint comes first)
        for call in singles.values():
            for _ in range(200):
                call()
        single_rates = {}
        print(f"\nSingle requests, sequential, {args.requests} each ({args.source} -> {args.target})\n")
        print("| endpoint | requests/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|")
        for name, call in singles.items():
            times = timed(call, args.requests)
            single_rates[name] = 1.0 / statistics.mean(times)
            print(
                f"| {name} | {single_rates[name]:.0f} | {np.percentile(times, 50) * 1e3:.2f} "
                f"| {np.percentile(times, 99) * 1e3:.2f} |"
            )
        translate_ratio = (
            single_rates["/translate (1 embedding)"] / single_rates["echo of the /translate body"]
        )
        verify_ratio = single_rates["/verify (1 pair)"] / single_rates["echo of the /verify body"]
        nonlinear_ratio = single_rates[nonlinear_single] / single_rates["/translate (1 embedding)"]
        print(f"\nratio /translate / echo: {translate_ratio:.2f}x; /verify / echo: {verify_ratio:.2f}x")
        print(f"ratio nonlinear (h={args.hidden}) / affine /translate: {nonlinear_ratio:.2f}x")

        print("\nBulk translation (embeddings/s)\n")
        print(
            "| batch | JSON /translate | echo of that JSON | binary .npy /translate | in-process numpy "
            f"| binary / numpy | JSON nonlinear h={args.hidden} | binary nonlinear | numpy nonlinear "
            "| nonlinear / affine binary | nonlinear / affine numpy |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in args.batches:
            print(bulk_row(affine, nonlinear, echo_client, args.source, args.target, n, dim_in))
    finally:
        server.stop()
        nonlinear_server.stop()
        echo.terminate()
        echo.wait(10)
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
