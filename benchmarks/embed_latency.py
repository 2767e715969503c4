"""Per-face /embed latency and throughput for each recognizer, next to raw onnxruntime, in one run.

For every model the same aligned crops go through (a) a bare onnxruntime session.run on preprocessed
tensors, (b) POST /embed with `aligned=true`, once as base64 PNGs in JSON (HTTP + decoding +
preprocessing + the same graph) and once as a .npy of the crops' pixels (nothing to decode), and
(c) POST /embed on the original LFW photos (adds YuNet detection and alignment). The server is a real
`facebridge serve` on loopback; client and server share this machine's cores.

Raw onnxruntime runs twice: with the session options the service uses (facebridge/vision/runtime.py,
the same FACEBRIDGE_INTRA_OP_THREADS), which is what "overhead" is measured against, and with
onnxruntime's own defaults (every core, spinning worker threads), as a plain `InferenceSession` does.
With `--baseline-tree DIR` (a checkout of an earlier version) that tree's server is measured too.
A bare FastAPI echo (benchmarks/echo_app.py) sent the same batch-1 body is the floor any HTTP
endpoint pays here (transfer, parsing the request, the client's own work): "over echo" is /embed's
p50 minus raw onnxruntime's minus the echo's, what the service adds that HTTP itself does not.
Everything is interleaved call by call (the order rotates), repeated over --rounds rounds, and
reported as medians: p50 of the batch-1 latencies, batch throughput from the median batch time.

    python benchmarks/embed_latency.py [--images 40] [--batch 16] [--rounds 2] [--models arcface-mbf128]
    python benchmarks/embed_latency.py --baseline-tree /tmp/facebridge-before
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import httpx
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.kept_alive import KeptAlive  # noqa: E402
from facebridge.config import Settings  # noqa: E402
from facebridge.vision.alignment import align_face  # noqa: E402
from facebridge.vision.images import decode_image  # noqa: E402
from facebridge.vision.loading import open_registry  # noqa: E402
from facebridge.vision.pipeline import DetectionOptions, FacePipeline  # noqa: E402
from facebridge.vision.recognizer import Recognizer  # noqa: E402
from facebridge.vision.runtime import Spinning, session_options  # noqa: E402
from tests.conftest import LFW, MODELS_DIR, RECOGNIZERS, free_port  # noqa: E402

BENCH_KEY = "benchmark-key"


@dataclass
class Timed:
    """One kind of call and its times (seconds)."""

    name: str
    call: Callable[[int], object]  # the index of the image to use
    times: list[float] = field(default_factory=list)

    def once(self, index: int) -> None:
        start = time.perf_counter()
        self.call(index)
        self.times.append(time.perf_counter() - start)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.times) * 1e3


def interleave(calls: list[Timed], count: int, rounds: int) -> None:
    """`count` calls of each per round, alternating call by call (the order rotates)."""
    for call in calls:  # warm-up
        call.call(0)
        call.call(1 % max(count, 1))
    for round_ in range(rounds):
        for i in range(count):
            shift = (i + round_) % len(calls)
            order = calls[shift:] + calls[:shift]
            for call in order if i % 2 == 0 else order[::-1]:
                call.once(i)


def b64(data: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(data).decode()}


def raw_session(
    recognizer: Recognizer, service_options: bool, threads: int, spinning: Spinning
) -> ort.InferenceSession:
    path = str(MODELS_DIR / recognizer.entry.file)
    if service_options:
        return ort.InferenceSession(
            path, sess_options=session_options(threads, spinning), providers=["CPUExecutionProvider"]
        )
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # onnxruntime's defaults


Poster = httpx.Client | KeptAlive  # KeptAlive with --client http.client


def send(poster: Poster, url: str, content: bytes, headers: dict[str, str]) -> None:
    """POST through either client; an error answer raises."""
    if isinstance(poster, KeptAlive):
        poster.post(url, content, headers)
    else:
        poster.post(url, content=content, headers=headers).raise_for_status()


@dataclass
class Body:
    """One way of sending aligned crops to /embed: the URL, its content type, a body per crop and
    one for the batch."""

    url: str
    headers: dict[str, str]
    singles: list[bytes]
    batch: bytes

    def post_single(self, http: Poster, index: int) -> None:
        send(http, self.url, self.singles[index], self.headers)

    def post_batch(self, http: Poster) -> None:
        send(http, self.url, self.batch, self.headers)


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


@dataclass
class Row:
    model: str
    dim: int
    values: dict[str, float]


def measure_model(
    servers: dict[str, httpx.Client],
    echo: httpx.Client,
    posters: dict[str, Poster],
    recognizer: Recognizer,
    crops: list[np.ndarray],
    photos: list[bytes],
    args: argparse.Namespace,
) -> Row:
    model_id = recognizer.model_id
    tensor = recognizer.preprocess(crops)
    output = recognizer._output_name
    raws = {"raw": raw_session(recognizer, True, args.threads, args.spinning)}
    if args.ort_defaults:  # its spinning threads take the cores from the calls timed after it
        raws["raw-default"] = raw_session(recognizer, False, args.threads, args.spinning)
    feed = recognizer._input_name
    n = len(crops)

    def run_raw(session: ort.InferenceSession, rows: np.ndarray) -> None:
        if recognizer.fixed_batch:  # one face per run, as the service runs such a graph
            for row in rows:
                session.run([output], {feed: row[None]})
        else:
            session.run([output], {feed: rows})

    pngs = [cv2.imencode(".png", c)[1].tobytes() for c in crops]
    # each body encoded once: the client's own work stays out of the /embed times
    query = f"?aligned=true&models={model_id}&channels=bgr"
    bodies: dict[str, Body] = {
        "png": Body(
            "/embed",
            {"content-type": "application/json"},
            [json.dumps({"image": b64(png), "aligned": True, "models": [model_id]}).encode() for png in pngs],
            json.dumps(
                {"images": [b64(p) for p in pngs[: args.batch]], "aligned": True, "models": [model_id]}
            ).encode(),
        ),
        "npy": Body(
            "/embed" + query,
            {"content-type": "application/x-npy"},
            [npy_bytes(c[None]) for c in crops],
            npy_bytes(np.stack(crops[: args.batch])),
        ),
    }
    batch = tensor[: args.batch]

    # one pass per server and body, each interleaved with raw onnxruntime: a server whose onnxruntime
    # threads spin after a run (versions before that was turned off) slows whatever runs next, so it is
    # never interleaved with the other server; its overhead is measured against the raw runs of its pass
    singles: list[Timed] = []
    batches: list[Timed] = []
    binary = {"content-type": "application/octet-stream"}
    for name, poster in posters.items():
        if name == "echo":
            continue
        for kind, body in bodies.items():
            if kind == "npy" and name == "before":  # an earlier tree may not take .npy pixels
                continue
            label = f"{name}/{kind}"
            pair = [
                Timed(f"raw/{label}", lambda i: run_raw(raws["raw"], tensor[i % n : i % n + 1])),
                Timed(label, partial(lambda i, h, b: b.post_single(h, i % n), h=poster, b=body)),
                # the same body echoed back whole: the HTTP floor of this pass
                Timed(
                    f"echo/{label}",
                    partial(
                        lambda i, b: send(posters["echo"], "/echo-npy", b.singles[i % n], binary),
                        b=body,
                    ),
                ),
            ]
            interleave(pair, n, args.rounds)
            singles += pair
            pair = [
                Timed(f"raw/{label}", lambda i: run_raw(raws["raw"], batch)),
                Timed(label, partial(lambda i, h, b: b.post_batch(h), h=poster, b=body)),
            ]
            interleave(pair, args.batch_repeats, args.rounds)
            batches += pair
    if "raw-default" in raws:
        pair = [
            Timed("raw/raw-default", lambda i: run_raw(raws["raw"], tensor[i % n : i % n + 1])),
            Timed("raw-default", lambda i: run_raw(raws["raw-default"], tensor[i % n : i % n + 1])),
        ]
        interleave(pair, n, args.rounds)
        singles += pair
        pair = [
            Timed("raw/raw-default", lambda i: run_raw(raws["raw"], batch)),
            Timed("raw-default", lambda i: run_raw(raws["raw-default"], batch)),
        ]
        interleave(pair, args.batch_repeats, args.rounds)
        batches += pair

    form = {"models": model_id, "largest_only": "true"}
    photo_calls = []
    for name, http in servers.items():
        photo = Timed(
            name,
            partial(
                lambda i, h: h.post(
                    "/embed", files={"images": ("p.jpg", photos[i % len(photos)])}, data=form
                ).raise_for_status(),
                h=http,
            ),
        )
        interleave([photo], len(photos), 1)
        photo_calls.append(photo)

    values: dict[str, float] = {}
    for call in singles:
        values[f"{call.name} p50"] = call.p50_ms
        values[f"{call.name} p90"] = float(np.percentile(call.times, 90)) * 1e3
    for call in batches:
        values[f"{call.name} rate"] = len(batch) / statistics.median(call.times)
    for call in photo_calls:
        values[f"{call.name} photo p50"] = call.p50_ms
    return Row(model_id, recognizer.dim, values)


def start_server(
    name: str, command: list[str], cwd: Path, env: dict[str, str], headers: dict[str, str], ready: str
) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """`command` on a free loopback port (its output in /tmp), once GET `ready` answers 200."""
    port = free_port()
    log_path = f"/tmp/facebridge-embed-bench-{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, headers=headers)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} server exited; see {log_path}")
        try:
            if client.get(ready).status_code == 200:
                return process, client
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} server not ready")


def serve(tree: Path, name: str, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    env = {
        **os.environ,
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_PROVIDERS": "cpu",
        "FACEBRIDGE_MAX_IMAGES_PER_REQUEST": str(max(32, args.batch)),
        "FACEBRIDGE_API_KEYS": BENCH_KEY,
        "FACEBRIDGE_LOAD_MODELS": "[" + ",".join(f'"{m}"' for m in [*args.models, "yunet"]) + "]",
        "FACEBRIDGE_LOG_LEVEL": "warning",
        "FACEBRIDGE_AUDIT_LOG": f"/tmp/facebridge-embed-bench-{name}-audit.log",
    }
    command = [sys.executable, "-m", "facebridge", "serve", "--host", "127.0.0.1"]
    return start_server(name, command, tree, env, {"X-API-Key": BENCH_KEY}, "/readyz")


def serve_echo() -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """benchmarks/echo_app.py under uvicorn on loopback, as the service is served."""
    command = [sys.executable, "-m", "uvicorn", "benchmarks.echo_app:app", "--log-level", "warning"]
    return start_server("echo", command, ROOT, dict(os.environ), {}, "/docs")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=40, help="LFW photos per model")
    parser.add_argument("--batch", type=int, default=16, help="images per batched request")
    parser.add_argument("--batch-repeats", type=int, default=4, help="batched calls per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", type=lambda text: text.split(","), default=RECOGNIZERS)
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of an earlier version to measure too")
    parser.add_argument(
        "--client",
        choices=["httpx", "http.client"],
        default="httpx",
        help="the client of the batch-1 and batch calls and their echo (photos always go through httpx)",
    )
    parser.add_argument(
        "--ort-defaults",
        action="store_true",
        help="also time a session with onnxruntime's defaults (its spinning threads slow what runs next)",
    )
    args = parser.parse_args()
    settings = Settings(models_dir=MODELS_DIR, providers="cpu")
    args.threads = settings.intra_op_threads
    args.spinning = settings.ort_spinning

    registry = open_registry(settings, model_ids=[*args.models, "yunet"])
    pipeline = FacePipeline(registry)
    photos = [p.read_bytes() for p in sorted(LFW.glob("*/*_0001.jpg"))[: args.images]]
    images = [decode_image(b, 1 << 24, 1 << 24) for b in photos]
    center = DetectionOptions(policy="center", score_threshold=0.3)
    landmarks = [pipeline.detect(img, center)[0].landmarks for img in images]

    trees = {"after": ROOT}
    if args.baseline_tree is not None:
        trees["before"] = args.baseline_tree.resolve()
    started = {name: serve(tree, name, args) for name, tree in trees.items()}
    servers = {name: client for name, (_, client) in started.items()}
    started["echo"] = serve_echo()
    echo = started["echo"][1]
    posters: dict[str, Poster] = {name: client for name, (_, client) in started.items()}
    if args.client == "http.client":
        posters = {
            name: KeptAlive(client.base_url.port or 80, dict(client.headers), name)
            for name, (_, client) in started.items()
        }
    load_start = os.getloadavg()
    results = []
    try:
        for model_id in args.models:
            recognizer = registry.recognizer(model_id)
            template = registry.manifest.templates[recognizer.entry.alignment or ""]
            crops = [align_face(img, lm, template) for img, lm in zip(images, landmarks, strict=True)]
            results.append(measure_model(servers, echo, posters, recognizer, crops, photos, args))
            print(f"measured {model_id}", file=sys.stderr, flush=True)
    finally:
        for process, client in started.values():
            client.close()
            process.terminate()
            process.wait(10)
    load_end = os.getloadavg()
    print_tables(results, args, load_start, load_end)
    return 0


def print_tables(
    results: list[Row], args: argparse.Namespace, load_start: tuple[float, ...], load_end: tuple[float, ...]
) -> None:
    threads = args.threads or "every core"
    print(
        f"\n/embed vs raw onnxruntime (CPU), {args.images} LFW faces per model x {args.rounds} rounds, "
        f"batch of {args.batch} x {args.batch_repeats} x {args.rounds}; service session options: "
        f"intra-op threads {threads}, spinning {args.spinning}; client {args.client}; "
        f"load average {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end, {os.cpu_count()} CPUs\n"
    )
    print(
        "| model | dim | server | body | raw ORT ms (b=1) | /embed aligned p50 ms | p90 ms | overhead ms "
        "| echo of the body ms | over echo ms "
        f"| raw faces/s (batch {args.batch}) | /embed faces/s (batch) | batch vs raw | /embed photo p50 ms |"
    )
    print("|---|---:|---|---|" + "---:|" * 10)
    names = {"after": "this tree", "before": "baseline"}
    kinds = {"png": "base64 PNG", "npy": ".npy pixels"}
    for r in results:
        v = r.values
        for name, label in names.items():
            for kind, body in kinds.items():
                key = f"{name}/{kind}"
                if f"{key} p50" not in v:
                    continue
                raw, raw_rate = v[f"raw/{key} p50"], v[f"raw/{key} rate"]
                cells = [
                    r.model,
                    str(r.dim),
                    label,
                    body,
                    f"{raw:.2f}",
                    f"{v[f'{key} p50']:.2f}",
                    f"{v[f'{key} p90']:.2f}",
                    f"{v[f'{key} p50'] - raw:.2f}",
                    f"{v[f'echo/{key} p50']:.2f}",
                    f"{v[f'{key} p50'] - raw - v[f'echo/{key} p50']:.2f}",
                    f"{raw_rate:.0f}",
                    f"{v[f'{key} rate']:.0f}",
                    f"{v[f'{key} rate'] / raw_rate:.2f}x",
                    f"{v[f'{name} photo p50']:.2f}",
                ]
                print("| " + " | ".join(cells) + " |")
    if "raw-default p50" in results[0].values:
        print(
            "\nonnxruntime's defaults (every core, spinning threads) against the service's session options:\n"
        )
        print(
            "| model | service options ms (b=1) | ORT defaults ms (b=1) | service options faces/s "
            "| ORT defaults faces/s |"
        )
        print("|---|---:|---:|---:|---:|")
        for r in results:
            v = r.values
            print(
                f"| {r.model} | {v['raw/raw-default p50']:.2f} | {v['raw-default p50']:.2f} "
                f"| {v['raw/raw-default rate']:.0f} | {v['raw-default rate']:.0f} |"
            )


if __name__ == "__main__":
    sys.exit(main())
