"""An identity system's side of facebridge, end to end, with only the standard library.

The system enrolled people with model A and keeps their templates; it now captures probes with
model B. It carries a stored template into B's space (POST /translate) and verifies it against a new
photo, both after translation and directly across models (POST /verify). Exit status 0 only when
the genuine pair is accepted and the impostor pair rejected.

    FACEBRIDGE_URL=http://127.0.0.1:8000 python examples/identity_client.py ENROL.jpg PROBE.jpg OTHER.jpg
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

URL = os.environ.get("FACEBRIDGE_URL", "http://127.0.0.1:8000").rstrip("/")
API_KEY = os.environ.get("FACEBRIDGE_API_KEY")
MODEL_A = os.environ.get("MODEL_A", "arcface-mbf128")
MODEL_B = os.environ.get("MODEL_B", "sirius-mbf192")


def call(path: str, body: dict | None = None) -> dict:
    headers = {"content-type": "application/json"}
    if API_KEY:
        headers["x-api-key"] = API_KEY
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def wait_ready(timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call("/readyz")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def embed(photo: Path, model: str) -> list[float]:
    image = base64.b64encode(photo.read_bytes()).decode()
    answer = call("/embed", {"image": {"data": image}, "models": [model], "largest_only": True})
    return answer["results"][0]["faces"][0]["embeddings"][0]["embedding"]


def main() -> int:
    enrol, probe, other = (Path(p) for p in sys.argv[1:4])
    wait_ready()
    stored = embed(enrol, MODEL_A)  # the template the identity system already holds
    translated = call("/translate", {"source": MODEL_A, "target": MODEL_B, "embeddings": [stored]})
    template_b = translated["embeddings"][0]
    print(f"translated {MODEL_A} template into {MODEL_B} via {[m['id'] for m in translated['maps']]}")

    ok = True
    for label, photo, expected in (("genuine", probe, True), ("impostor", other, False)):
        probe_b = embed(photo, MODEL_B)
        answer = call(
            "/verify",
            {
                "pairs": [
                    {
                        "a": {"model": MODEL_B, "embedding": template_b},
                        "b": {"model": MODEL_B, "embedding": probe_b},
                    },
                    {
                        "a": {"model": MODEL_A, "embedding": stored},
                        "b": {"model": MODEL_B, "embedding": probe_b},
                    },
                ]
            },
        )
        for result, how in zip(answer["results"], ("translated template", "cross-model"), strict=True):
            print(
                f"{label:8s} {how:19s} score {result['score']:.4f} threshold {result['threshold']:.4f} "
                f"({result['operating_point']}, {result['comparison']} in {result['space']}) "
                f"match={result['match']}"
            )
            ok &= result["match"] is expected
    print("OK" if ok else "UNEXPECTED DECISION")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
