"""How long `facebridge --help` takes next to importing the whole service (vision stack included).

The CLI parser imports no command's dependencies, so asking for help (or a typo) answers at once; the
service's full import (FastAPI app, onnxruntime, OpenCV) is what `facebridge serve` pays once.

    python benchmarks/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

FACEBRIDGE = str(Path(sys.executable).parent / "facebridge")
CASES = {
    "facebridge --help": [FACEBRIDGE, "--help"],
    "facebridge models --help": [FACEBRIDGE, "models", "--help"],
    "python -c 'import facebridge.service.app, facebridge.vision.pipeline'": [
        sys.executable,
        "-c",
        "import facebridge.service.app, facebridge.vision.pipeline",
    ],
}


def wall_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    medians = {}
    for command in CASES.values():  # warm the file cache once
        wall_seconds(command)
    for name, command in CASES.items():
        medians[name] = statistics.median(wall_seconds(command) for _ in range(args.runs))
    base = medians["facebridge --help"]
    print(f"| command | median wall time (s, {args.runs} runs) | x --help |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| `{name}` | {seconds:.3f} | {seconds / base:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
