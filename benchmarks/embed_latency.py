"""Per-face /embed latency and throughput for each recognizer, next to raw onnxruntime, in one run.

For every model the same aligned crops go through (a) a bare onnxruntime session.run on preprocessed
tensors, (b) POST /embed with `aligned=true` (HTTP + decoding + preprocessing + the same session), and
(c) POST /embed on the original LFW photos (adds YuNet detection and alignment). The server is a real
`facebridge serve` on loopback; client and server share this machine's cores.

    python benchmarks/embed_latency.py [--images 40] [--batch 16]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebridge.config import Settings  # noqa: E402
from facebridge.vision.alignment import align_face  # noqa: E402
from facebridge.vision.images import decode_image  # noqa: E402
from facebridge.vision.loading import open_registry  # noqa: E402
from facebridge.vision.pipeline import DetectionOptions, FacePipeline  # noqa: E402
from facebridge.vision.recognizer import Recognizer  # noqa: E402
from facebridge.vision.runtime import create_session  # noqa: E402
from tests.conftest import LFW, MODELS_DIR, RECOGNIZERS, LiveServer  # noqa: E402


@dataclass
class Row:
    model: str
    dim: int
    raw_ms: float
    raw_rate: float
    api_p50: float
    api_p99: float
    api_rate: float
    photo_p50: float
    photo_p99: float


BENCH_KEY = "benchmark-key"


def time_calls(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def b64(data: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(data).decode()}


def measure_model(
    http: httpx.Client,
    recognizer: Recognizer,
    crops: list[np.ndarray],
    photos: list[bytes],
    batch_size: int,
) -> Row:
    model_id = recognizer.model_id
    tensor = recognizer.preprocess(crops)
    session = create_session(MODELS_DIR / recognizer.entry.file, ["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    output = recognizer._output_name
    rows = itertools.cycle(range(len(tensor)))
    raw_single = time_calls(lambda: session.run([output], {feed: tensor[next(rows)][None]}), len(tensor))
    if recognizer.fixed_batch:
        raw_rate = 1.0 / statistics.mean(raw_single)
    else:
        batch = tensor[:batch_size]
        raw_rate = len(batch) / statistics.mean(time_calls(lambda: session.run([output], {feed: batch}), 5))

    pngs = [cv2.imencode(".png", c)[1].tobytes() for c in crops]
    cycle_png = itertools.cycle(pngs)
    single_body = lambda: {"image": b64(next(cycle_png)), "aligned": True, "models": [model_id]}  # noqa: E731
    api_single = time_calls(lambda: http.post("/embed", json=single_body()).raise_for_status(), len(pngs))
    batch_images = [b64(p) for p in pngs[:batch_size]]
    batch_body = {"images": batch_images, "aligned": True, "models": [model_id]}
    api_batch = time_calls(lambda: http.post("/embed", json=batch_body).raise_for_status(), 3)

    cycle_photo = itertools.cycle(photos)
    form = {"models": model_id, "largest_only": "true"}
    api_photo = time_calls(
        lambda: http.post(
            "/embed", files={"images": ("p.jpg", next(cycle_photo))}, data=form
        ).raise_for_status(),
        len(photos),
    )
    return Row(
        model_id,
        recognizer.dim,
        statistics.median(raw_single) * 1e3,
        raw_rate,
        statistics.median(api_single) * 1e3,
        float(np.percentile(api_single, 99)) * 1e3,
        len(batch_images) / statistics.mean(api_batch),
        statistics.median(api_photo) * 1e3,
        float(np.percentile(api_photo, 99)) * 1e3,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=40, help="LFW photos per model")
    parser.add_argument("--batch", type=int, default=16, help="images per batched request")
    args = parser.parse_args()

    registry = open_registry(
        Settings(models_dir=MODELS_DIR, providers="cpu"), model_ids=[*RECOGNIZERS, "yunet"]
    )
    pipeline = FacePipeline(registry)
    photos = [p.read_bytes() for p in sorted(LFW.glob("*/*_0001.jpg"))[: args.images]]
    images = [decode_image(b, 1 << 24, 1 << 24) for b in photos]
    center = DetectionOptions(policy="center", score_threshold=0.3)
    landmarks = [pipeline.detect(img, center)[0].landmarks for img in images]

    env = {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_PROVIDERS": "cpu",
        "FACEBRIDGE_MAX_IMAGES_PER_REQUEST": str(max(32, args.batch)),
        "FACEBRIDGE_API_KEYS": BENCH_KEY,
    }
    server = LiveServer(env, Path("/tmp/facebridge-bench-server.log"))
    results = []
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": BENCH_KEY}) as http:
            for model_id in RECOGNIZERS:
                recognizer = registry.recognizer(model_id)
                template = registry.manifest.templates[recognizer.entry.alignment or ""]
                crops = [align_face(img, lm, template) for img, lm in zip(images, landmarks, strict=True)]
                results.append(measure_model(http, recognizer, crops, photos, args.batch))
    finally:
        server.stop()

    print(f"\n/embed vs raw onnxruntime (CPU), {args.images} LFW faces per model, batch of {args.batch}\n")
    print(
        "| model | dim | raw ORT ms/face (b=1) | raw ORT faces/s (batch) | /embed aligned p50 ms | p99 ms "
        "| /embed aligned faces/s (batch) | batch vs raw | /embed photo p50 ms | p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.model} | {r.dim} | {r.raw_ms:.2f} | {r.raw_rate:.0f} | {r.api_p50:.2f} | {r.api_p99:.2f} "
            f"| {r.api_rate:.0f} | {r.api_rate / r.raw_rate:.2f}x | {r.photo_p50:.2f} | {r.photo_p99:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
