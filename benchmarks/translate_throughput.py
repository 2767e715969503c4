"""/translate and /verify speed over loopback, next to a bare FastAPI echo of the same bodies, in one run.

Real uvicorn servers on loopback, all started by this script:

- `facebridge serve` as deployed: a scoped keys file (20 hashed entries, the benchmark's key with
  scopes translate and verify, every key with a rate and an in-flight limit set too high to refuse)
  and a cohort per model of the pair (`FACEBRIDGE_COHORT_DIR`, --cohort-size templates of LFW from
  the embedding caches in cache/, random unit rows when those are missing), so /verify AS-normalises;
- a second `facebridge serve` with a nonlinear map of the same pair (the shipped map when it is a
  residual MLP, measured against its own affine part on the first server; else the shipped affine map
  plus a random residual MLP of width --hidden);
- the echo app (benchmarks/echo_app.py): `/echo` parses and returns the same JSON body, `/echo-npy`
  returns the same .npy bytes, as a bare FastAPI endpoint does;
- with `--baseline-tree DIR` (a checkout of an earlier version), that tree's `facebridge serve` with the
  same maps, keys and cohorts, for before/after numbers from the same run. The baseline's slot has
  measured 0.03x to 0.10x slower than this tree's on /translate with the same code in both trees
  (docs/translate.md): to compare two trees, run this script from each with the other as baseline.

Every measurement interleaves the servers request by request (the order rotates each time), so the
load of a shared machine hits them alike; it is repeated in --rounds rounds and medians are reported:
latency medians per endpoint, and the median over rounds of each round's ratio of medians. Bulk
requests also report the server's peak RSS growth during the request (its VmHWM, reset before each
request through /proc/PID/clear_refs, minus its RSS before), in multiples of the .npy payload; the
servers run with MALLOC_MMAP_THRESHOLD_=131072 so that freed buffers go back to the system and the next
request's growth is seen (Linux; nan elsewhere). Bodies are encoded once; single requests go
through httpx (`--client httpx`, the default, as this benchmark's earlier runs) or the standard library's
http.client (`--client http.client`: lighter, so the servers' own cost weighs more in the ratio), bulk
ones through http.client, each over a kept-alive connection per server. The in-process numpy column
runs with the service's BLAS threads (FACEBRIDGE_BLAS_THREADS, default 1).

    python benchmarks/translate_throughput.py [--source arcface-mbf128] [--target dlib-r29-128]
    python benchmarks/translate_throughput.py --baseline-tree /tmp/facebridge-before
    python benchmarks/translate_throughput.py --requests 50 --rounds 2 --batches 1000   # a smoke run
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.kept_alive import KeptAlive  # noqa: E402
from facebridge.blas import set_blas_threads  # noqa: E402
from facebridge.cohort.cohortfile import make_cohort, save_cohort  # noqa: E402
from facebridge.config import Settings  # noqa: E402
from facebridge.keyfile import KeyLimits, create_key  # noqa: E402
from facebridge.mapping.bank import LoadedMap, MapPath, MappingBank  # noqa: E402
from facebridge.mapping.mapfile import ResidualTensors, map_filename, save_map  # noqa: E402
from facebridge.npy import NPY, read_embeddings  # noqa: E402
from facebridge.vision.manifest import load_manifest  # noqa: E402
from tests.conftest import MODELS_DIR, free_port  # noqa: E402


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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


# ---------------------------------------------------------------------------------------------- servers
@dataclass
class Server:
    """One server process and a kept-alive connection to it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    key: str = ""
    kept: KeptAlive | None = None  # single and bulk requests with --client http.client
    client: httpx.Client | None = None  # single requests with --client httpx

    def post(self, url: str, body: bytes, content_type: str, use_httpx: bool = False) -> bytes:
        headers = {"content-type": content_type}
        if self.key:
            headers["x-api-key"] = self.key
        if use_httpx:
            if self.client is None:
                self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300)
            reply = self.client.post(url, content=body, headers=headers)
            if reply.status_code != 200:
                raise RuntimeError(f"{self.name} {url}: {reply.status_code} {reply.content[:300]!r}")
            return reply.content
        if self.kept is None:
            self.kept = KeptAlive(self.port, name=self.name)
        return self.kept.post(url, body, headers)

    def wait_ready(self, probe: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", probe)
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} not ready within {timeout:.0f} s")

    def peak_reset(self) -> int | None:
        """Reset the peak RSS and return the RSS now (bytes); None where /proc cannot do it."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return _status(self.process.pid)["VmRSS"]
        except (OSError, KeyError):
            return None

    def peak(self) -> int | None:
        try:
            return _status(self.process.pid)["VmHWM"]
        except (OSError, KeyError):
            return None

    def stop(self) -> None:
        if self.kept is not None:
            self.kept.close()
        if self.client is not None:
            self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def start(name: str, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Server:
    port = free_port()
    full_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", **env}
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return Server(name, process, port)


def facebridge(name: str, tree: Path, mappings: Path, scratch: Path, key: str) -> Server:
    env = {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_MAPPINGS_DIR": str(mappings),
        "FACEBRIDGE_LOAD_MODELS": "[]",
        "FACEBRIDGE_MAX_EMBEDDINGS_PER_REQUEST": "200000",
        "FACEBRIDGE_API_KEYS_FILE": str(scratch / "keys.json"),
        "FACEBRIDGE_COHORT_DIR": str(scratch / "cohorts"),
        "FACEBRIDGE_AUDIT_LOG": str(scratch / f"{name}-audit.log"),
        "FACEBRIDGE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "facebridge", "serve", "--host", "127.0.0.1"]
    server = start(name, command, tree, env, scratch / f"{name}.log")
    server.key = key
    return server


# ---------------------------------------------------------------------------------------------- set-up
def keys_file(path: Path) -> str:
    """20 scoped, hashed entries with limits that never refuse; returns the benchmark's key."""
    limits = KeyLimits(rate_per_s=1_000_000, burst=1_000_000, max_concurrent=64)
    for i in range(19):  # other clients' entries, as a real file has
        create_key(path, f"client-{i}", ["embed"], limits=limits)
    _, key = create_key(path, "benchmark", ["translate", "verify"], limits=limits)
    return key


def cohorts(directory: Path, bank: MappingBank, models: list[str], size: int) -> str:
    """A cohort per model: LFW templates from the embedding caches, else random unit rows."""
    try:
        from facebridge.evaluation.population import load_population

        population = load_population(ROOT / "cache", "lfw", models)
        rows = {m: population.clean[m][:size] for m in models}
        origin = f"{size} LFW templates per model (embedding caches)"
    except (OSError, KeyError, ValueError):
        rows = {m: unit_rows(size, bank.spaces[m].dim, i) for i, m in enumerate(models)}
        origin = f"{size} random unit rows per model (no LFW embedding caches in cache/)"
    for model in models:
        save_cohort(directory / model, make_cohort(rows[model], bank.spaces[model], "npy", origin))
    return origin


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class Call:
    """One kind of request to one server."""

    name: str
    server: Server
    url: str
    body: bytes
    content_type: str = "application/json"
    payload: int = 0  # bytes of .npy payload, for the memory column
    check: Callable[[bytes], object] | None = None
    use_httpx: bool = False
    times: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)

    def once(self, memory: bool = False) -> float:
        before = self.server.peak_reset() if memory else None
        start = time.perf_counter()
        answer = self.server.post(self.url, self.body, self.content_type, self.use_httpx)
        elapsed = time.perf_counter() - start
        if memory and before is not None:
            peak = self.server.peak()
            if peak is not None and self.payload:
                self.peaks.append(max(0, peak - before) / self.payload)
        if self.check is not None:
            self.check(answer)
        return elapsed


def interleave(calls: list[Call], count: int, memory: bool = False) -> list[list[float]]:
    """`count` requests of each call, alternating request by request (the order rotates)."""
    times: list[list[float]] = [[] for _ in calls]
    for i in range(count):
        shift = i % len(calls)
        order = list(range(len(calls)))[shift:] + list(range(len(calls)))[:shift]
        if i % 2:
            order.reverse()
        for k in order:
            times[k].append(calls[k].once(memory))
    return times


def rounds(calls: list[Call], count: int, repeat: int, memory: bool = False) -> list[list[float]]:
    """Per round, each call's median seconds; every call's times are kept in `Call.times` too."""
    medians = []
    for _ in range(repeat):
        times = interleave(calls, count, memory)
        for call, own in zip(calls, times, strict=True):
            call.times += own
        medians.append([statistics.median(own) for own in times])
    return medians


def ratio(medians: list[list[float]], echo: int, other: int) -> tuple[float, float, float]:
    """Median, min and max over rounds of echo time / other time (speed relative to the echo)."""
    values = [m[echo] / m[other] for m in medians]
    return statistics.median(values), min(values), max(values)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------------------------- tables
def single_table(args: argparse.Namespace, servers: dict[str, Server], dims: tuple[int, int]) -> None:
    one = unit_rows(1, dims[0])
    other = unit_rows(1, dims[1], 1)
    translate_body = json.dumps(
        {"source": args.source, "target": args.target, "embeddings": one.tolist()}
    ).encode()
    pair = {
        "a": {"model": args.source, "embedding": one[0].tolist()},
        "b": {"model": args.target, "embedding": other[0].tolist()},
    }
    verify_body = json.dumps({"pair": pair}).encode()
    one_map_body = json.dumps({"pair": pair, "space": args.target}).encode()
    raw_verify_body = json.dumps({"pair": pair, "normalization": "none"}).encode()

    def normalised(answer: bytes) -> None:
        result = json.loads(answer)["results"][0]
        if result["normalized_score"] is None:
            raise SystemExit("/verify did not AS-normalise: the cohorts did not load")

    calls = [
        Call("echo of the /translate body", servers["echo"], "/echo", translate_body),
        Call("/translate (1 embedding)", servers["shipped"], "/translate", translate_body),
        Call("echo of the /verify body", servers["echo"], "/echo", verify_body),
        # across models the service compares through both maps where the calibration set has them
        Call("/verify (1 pair, AS-norm)", servers["shipped"], "/verify", verify_body, check=normalised),
        Call("/verify (1 pair, normalization none)", servers["shipped"], "/verify", raw_verify_body),
        Call(
            "/verify (1 pair, AS-norm, one map: `space` named)",
            servers["shipped"],
            "/verify",
            one_map_body,
            check=normalised,
        ),
    ]
    if "before" in servers:
        calls += [
            Call("baseline /translate (1 embedding)", servers["before"], "/translate", translate_body),
            Call(
                "baseline /verify (1 pair, AS-norm)",
                servers["before"],
                "/verify",
                verify_body,
                check=normalised,
            ),
        ]
    for call in calls:  # every endpoint warmed before any is timed
        call.use_httpx = args.client == "httpx"
        for _ in range(200):
            call.once()
        call.check = None
    medians = rounds(calls, args.requests, args.rounds)  # the echo of a /verify body serves both /verify rows
    print(
        f"\nSingle requests: {args.rounds} rounds of {args.requests} per endpoint, interleaved, client "
        f"{args.client} ({args.source} -> {args.target})\n"
    )
    print("| endpoint | p50 ms | p90 ms | requests/s (1 / p50) | vs echo: median of rounds (min-max) |")
    print("|---|---:|---:|---:|---:|")
    echo_of = {"translate": 0, "verify": 2}
    for index, call in enumerate(calls):
        kind = "verify" if "verify" in call.name else "translate"
        low = ratio(medians, echo_of[kind], index)
        versus = "" if call.server is servers["echo"] else f"{low[0]:.2f}x ({low[1]:.2f}-{low[2]:.2f})"
        p50 = statistics.median(call.times)
        print(
            f"| {call.name} | {p50 * 1e3:.3f} | {np.percentile(call.times, 90) * 1e3:.3f} "
            f"| {1 / p50:,.0f} | {versus} |"
        )


def bulk_tables(
    args: argparse.Namespace, servers: dict[str, Server], paths: dict[str, MapPath], dim_in: int
) -> None:
    url = f"/translate?source={args.source}&target={args.target}"
    rows_out = []
    json_rows = []
    for n in args.batches:
        batch = unit_rows(n, dim_in, 2)
        data = npy(batch)
        expected = {k: p.apply(batch) for k, p in paths.items()}

        def checker(which: str, expected: dict[str, np.ndarray] = expected) -> Callable[[bytes], object]:
            def check(answer: bytes) -> None:
                if not np.allclose(read_embeddings(answer), expected[which], atol=1e-5):
                    raise SystemExit(f"{which}: the answer differs from the map applied in-process")

            return check

        calls = [
            Call("echo", servers["echo"], "/echo-npy", data, NPY, len(data)),
            Call("after", servers["affine"], url, data, NPY, len(data), checker("affine")),
            Call("nonlinear", servers["nonlinear"], url, data, NPY, len(data), checker("nonlinear")),
        ]
        if "before-affine" in servers:
            calls.append(
                Call("before", servers["before-affine"], url, data, NPY, len(data), checker("affine"))
            )
        for call in calls:
            call.once()
            call.check = None
        count = max(2, args.bulk_rows // (n * args.rounds))
        medians = rounds(calls, count, args.rounds, memory=True)
        rates = {c.name: n / statistics.median(c.times) for c in calls}
        peaks = {c.name: statistics.median(c.peaks) if c.peaks else float("nan") for c in calls}
        set_blas_threads(Settings().blas_threads)  # the in-process products run as the service runs them
        numpy_rate = {
            k: n / statistics.median(_timed(lambda p=p, x=batch: p.apply(x), max(5, 200_000 // n)))  # type: ignore[misc]
            for k, p in paths.items()
        }
        cells = [
            f"{n:,}",
            f"{len(data) / 1e6:.1f}",
            f"{rates['echo']:,.0f}",
            f"{rates['after']:,.0f}",
            "{:.2f}x ({:.2f}-{:.2f})".format(*ratio(medians, 0, 1)),
            f"{peaks['echo']:.2f} / {peaks['after']:.2f}",
            f"{rates['nonlinear']:,.0f}",
            f"{ratio(medians, 0, 2)[0]:.2f}x",
            f"{peaks['nonlinear']:.2f}",
            f"{numpy_rate['affine']:,.0f} / {numpy_rate['nonlinear']:,.0f}",
        ]
        if "before-affine" in servers:
            cells += [
                f"{rates['before']:,.0f}",
                f"{ratio(medians, 0, 3)[0]:.2f}x",
                f"{peaks['before']:.2f}",
            ]
        rows_out.append("| " + " | ".join(cells) + " |")
        if n <= args.json_max:
            body = json.dumps({"source": args.source, "target": args.target, "embeddings": batch.tolist()})
            encoded = body.encode()
            json_calls = [
                Call("echo", servers["echo"], "/echo", encoded),
                Call("after", servers["affine"], "/translate", encoded),
            ]
            if "before-affine" in servers:
                json_calls.append(Call("before", servers["before-affine"], "/translate", encoded))
            json_medians = rounds(json_calls, max(1, 20_000 // (n * args.rounds)), args.rounds)
            json_rates = [n / statistics.median(c.times) for c in json_calls]
            json_cells = [
                f"{n:,}",
                f"{len(encoded) / 1e6:.1f}",
                f"{json_rates[0]:,.0f}",
                f"{json_rates[1]:,.0f}",
            ]
            json_cells.append(f"{ratio(json_medians, 0, 1)[0]:.2f}x")
            if "before-affine" in servers:
                json_cells += [f"{json_rates[2]:,.0f}", f"{ratio(json_medians, 0, 2)[0]:.2f}x"]
            json_rows.append("| " + " | ".join(json_cells) + " |")
    baseline = "before-affine" in servers
    print(f"\nBulk binary .npy (embeddings/s; {args.rounds} rounds, interleaved; memory: peak RSS growth of")
    print("the server during a request / the .npy payload, median)\n")
    header = (
        "| rows | MB | echo of the .npy | /translate | vs echo | memory echo / translate "
        f"| nonlinear h={args.hidden} | vs echo | memory | in-process numpy affine / nonlinear |"
    )
    if baseline:
        header += " baseline /translate | vs echo | memory |"
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    print("\n".join(rows_out))
    if json_rows:
        print("\nBulk JSON (embeddings/s)\n")
        header = "| rows | MB | echo of the JSON | /translate | vs echo |"
        if baseline:
            header += " baseline /translate | vs echo |"
        print(header)
        print("|" + "---:|" * (header.count("|") - 1))
        print("\n".join(json_rows))


def _timed(call: Callable[[], object], repeats: int) -> list[float]:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------- main
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
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of an earlier version to measure too")
    parser.add_argument("--requests", type=int, default=300, help="single requests per endpoint and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--client",
        choices=["httpx", "http.client"],
        default="httpx",
        help="client of the single requests: httpx (as the earlier runs of this benchmark) or the "
        "standard library's http.client, lighter, so the servers' own cost weighs more in the ratio",
    )
    parser.add_argument(
        "--batches",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[1_000, 10_000, 100_000],
        help="comma-separated bulk batch sizes (default 1000,10000,100000)",
    )
    parser.add_argument(
        "--bulk-rows", type=int, default=2_000_000, help="rows sent per server and batch size, all rounds"
    )
    parser.add_argument("--json-max", type=int, default=10_000, help="largest batch also sent as JSON")
    parser.add_argument("--cohort-size", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=256, help="residual width of the random MLP")
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-bulk", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    manifest = load_manifest(MODELS_DIR / "manifest.toml")
    bank = MappingBank.load(args.mappings, manifest)
    direct = bank.maps.get((args.source, args.target))
    if direct is None:
        raise SystemExit(f"no direct map {args.source}->{args.target} in {args.mappings}")
    with tempfile.TemporaryDirectory(prefix="facebridge-bench-") as folder:
        scratch = Path(folder)
        affine_dir, nonlinear_dir = scratch / "affine", scratch / "nonlinear"
        for directory in (affine_dir, nonlinear_dir):
            (directory / "spaces").mkdir(parents=True)
            for space in (args.mappings / "spaces").glob("*"):
                shutil.copy(space, directory / "spaces" / space.name)
        if direct.nonlinear:  # the shipped map is nonlinear: measured against its own affine part
            assert direct.residual is not None
            args.hidden = direct.residual.hidden
            meta = direct.meta.model_copy(
                update={"method": f"{direct.meta.method} (affine part)", "hidden": None}
            )
            save_map(affine_dir / map_filename(args.source, args.target), meta, direct.weight, direct.bias)
            shutil.copy(direct_file(args.mappings, args.source, args.target), nonlinear_dir)
        else:
            shutil.copy(direct_file(args.mappings, args.source, args.target), affine_dir)
            nonlinear_copy(direct, args.hidden, nonlinear_dir)
        paths = {
            "affine": MappingBank.load(affine_dir, manifest).maps[(args.source, args.target)],
            "nonlinear": MappingBank.load(nonlinear_dir, manifest).maps[(args.source, args.target)],
        }
        key = keys_file(scratch / "keys.json")
        origin = cohorts(scratch / "cohorts", bank, [args.source, args.target], args.cohort_size)
        echo = [sys.executable, "-m", "uvicorn", "benchmarks.echo_app:app", "--log-level", "warning"]
        servers = {"echo": start("echo", echo, ROOT, {}, scratch / "echo.log")}
        baseline = args.baseline_tree.resolve() if args.baseline_tree is not None else None
        if not args.skip_single:  # the shipped bank as it is, with its calibration set
            servers["shipped"] = facebridge("shipped", ROOT, args.mappings, scratch, key)
            if baseline is not None:
                servers["before"] = facebridge("before", baseline, args.mappings, scratch, key)
        if not args.skip_bulk:
            servers["affine"] = facebridge("affine", ROOT, affine_dir, scratch, key)
            servers["nonlinear"] = facebridge("nonlinear", ROOT, nonlinear_dir, scratch, key)
            if baseline is not None:
                servers["before-affine"] = facebridge("before-affine", baseline, affine_dir, scratch, key)
        try:
            for server in servers.values():
                server.wait_ready("/docs" if server.name == "echo" else "/readyz")
            dims = (direct.meta.source.dim, direct.meta.target.dim)
            print(f"machine: {load()} at the start")
            print(f"servers: {', '.join(servers)}; cohorts: {origin}; keys: 20 scoped entries with limits")
            if not args.skip_single:
                single_table(args, servers, dims)
            if not args.skip_bulk:
                bulk_tables(args, servers, {k: MapPath((m,)) for k, m in paths.items()}, dims[0])
            print(f"\nmachine: {load()} at the end")
        finally:
            for server in servers.values():
                server.stop()
    return 0


def direct_file(mappings: Path, source: str, target: str) -> Path:
    return mappings / map_filename(source, target)


if __name__ == "__main__":
    sys.exit(main())
