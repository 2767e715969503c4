"""/embed throughput under concurrency, with and without micro-batching, next to raw onnxruntime.

One run: the same aligned LFW crops (arcface-mbf128 by default) sent as single-face `aligned=true`
requests by 1, 4 and 16 concurrent clients to two real servers — micro-batching on
(FACEBRIDGE_MICRO_BATCH_MS=2) and off (0) — and, in-process, raw onnxruntime on preprocessed batches
of 1, 4 and 16. Faces per second; 2 CPU cores are shared by clients and server.

    python benchmarks/embed_concurrency.py [--model arcface-mbf128] [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebridge.config import Settings  # noqa: E402
from facebridge.vision.alignment import align_face  # noqa: E402
from facebridge.vision.loading import open_registry  # noqa: E402
from facebridge.vision.pipeline import DetectionOptions, FacePipeline  # noqa: E402
from tests.conftest import MODELS_DIR, LiveServer  # noqa: E402

LFW = ROOT.parent / "shared" / "datasets" / "lfw"
KEY = "benchmark-key"
CLIENTS = (1, 4, 16)


def aligned_crops(model: str, count: int) -> tuple[list[np.ndarray], FacePipeline]:
    settings = Settings(models_dir=MODELS_DIR, providers="cpu", load_models=[model, "yunet"])
    pipeline = FacePipeline(open_registry(settings, model_ids=[model, "yunet"]))
    recognizer = pipeline.registry.recognizer(model)
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    crops = []
    for photo in sorted(LFW.glob("*/*_0001.jpg"))[:count]:
        image = cv2.imread(str(photo))
        assert image is not None, photo
        faces = pipeline.detect(image, DetectionOptions(policy="center", score_threshold=0.3))
        crops.append(align_face(image, faces[0].landmarks, template))
    return crops, pipeline


def raw_rate(
    pipeline: FacePipeline, model: str, crops: list[np.ndarray], batch: int, seconds: float
) -> float:
    recognizer = pipeline.registry.recognizer(model)
    tensors = [recognizer.preprocess(crops[i : i + batch]) for i in range(0, len(crops) - batch + 1, batch)]
    faces, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        recognizer.run(tensors[i % len(tensors)])
        faces += batch
        i += 1
    return faces / (time.perf_counter() - start)


def http_rate(url: str, model: str, bodies: list[dict], clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = threading.Event()
    errors: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as http:
            i = k
            while not stop.is_set():
                answer = http.post("/embed", json=bodies[i % len(bodies)])
                if answer.status_code != 200:
                    errors.append(answer.text)
                counts[k] += 1
                i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return sum(counts) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="arcface-mbf128")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    crops, pipeline = aligned_crops(args.model, 64)
    bodies = [
        {
            "image": {"data": base64.b64encode(cv2.imencode(".png", c)[1].tobytes()).decode()},
            "models": [args.model],
            "aligned": True,
        }
        for c in crops
    ]
    rows: dict[int, list[float]] = {c: [] for c in CLIENTS}
    for c in CLIENTS:
        rows[c].append(raw_rate(pipeline, args.model, crops, c, args.seconds / 2))
    for batch_ms in ("2", "0"):
        env = {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_PROVIDERS": "cpu",
            "FACEBRIDGE_LOAD_MODELS": f'["{args.model}"]',
            "FACEBRIDGE_API_KEYS": KEY,
            "FACEBRIDGE_MICRO_BATCH_MS": batch_ms,
        }
        server = LiveServer(env, Path(f"/tmp/facebridge-embed-concurrency-{batch_ms}.log"))
        try:
            server.wait_ready(120)
            http_rate(server.url, args.model, bodies, 2, 2)  # warm-up
            for c in CLIENTS:
                rows[c].append(http_rate(server.url, args.model, bodies, c, args.seconds))
        finally:
            server.stop()
    print(f"\n/embed, one aligned {args.model} face per request (faces/s)\n")
    print(
        "| clients = batch | raw onnxruntime (batch) | /embed micro-batching 2 ms "
        "| /embed no batching | batching / none |"
    )
    print("|---:|---:|---:|---:|---:|")
    for c, (raw, on, off) in rows.items():
        print(f"| {c} | {raw:.0f} | {on:.0f} | {off:.0f} | {on / off:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
