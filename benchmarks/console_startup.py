"""What the operator console costs the service's start-up: `create_app` with the console off, on, and
without the console code at all (the call to install_console replaced by a no-op), side by side.

Each run is a fresh Python process (imports are part of start-up): it imports facebridge.service.app, then
times `create_app(Settings(...))` alone (the app a server would start; models load later in a thread).
With the console on, the first GET /console is timed too (Jinja2 is imported and the page compiled on
that first request, not at start-up), and a second one. Variants are interleaved run by run so that
load on the machine falls on all of them alike. The target: nothing added when off, under 50 ms when on.

    python benchmarks/console_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"no console code": "none", "console off": "off", "console on": "on"}
PROBE = r"""
import json, sys, time
variant = sys.argv[1]
started = time.perf_counter()
import facebridge.service.app as main
from facebridge.config import Settings
imported = time.perf_counter()
if variant == "none":
    main.install_console = lambda app, settings: None
settings = Settings(api_keys="benchmark-key", console=variant == "on")
before = set(sys.modules)
t0 = time.perf_counter()
app = main.create_app(settings)
created = time.perf_counter() - t0
added = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("jinja2", "facebridge"))
first_page = second_page = None
if variant == "on":
    from starlette.testclient import TestClient
    client = TestClient(app)
    client.get("/healthz")  # the test client's own start, not the console's
    t1 = time.perf_counter()
    answer = client.get("/console")
    first_page = time.perf_counter() - t1
    assert answer.status_code == 200, answer.status_code
    t2 = time.perf_counter()
    client.get("/console")
    second_page = time.perf_counter() - t2
print(json.dumps({"create_app": created, "import": imported - started,
                  "first_page": first_page, "second_page": second_page,
                  "jinja2_at_start": any(m.startswith("jinja2") for m in added),
                  "console_modules": [m for m in added if m.startswith("facebridge.console")]}))
"""


def run(variant: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, variant], capture_output=True, text=True, check=True, cwd=ROOT
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for variant in VARIANTS.values():  # warm the file cache once
        run(variant)
    results: dict[str, list[dict[str, object]]] = {name: [] for name in VARIANTS}
    for _ in range(args.runs):
        for name, variant in VARIANTS.items():
            results[name].append(run(variant))
    create = {name: [float(r["create_app"]) for r in rs] for name, rs in results.items()}  # type: ignore[arg-type]
    base = statistics.median(create["no console code"])
    print(f"create_app(), median of {args.runs} fresh processes each, interleaved (this machine):\n")
    print(
        "| variant | create_app (ms) | minus no-console (ms) | ratio | Jinja2 imported at start "
        "| first GET /console (ms) | second (ms) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for name, runs in results.items():
        median = statistics.median(create[name])
        pages = [float(r["first_page"]) for r in runs if r["first_page"] is not None]  # type: ignore[arg-type]
        again = [float(r["second_page"]) for r in runs if r["second_page"] is not None]  # type: ignore[arg-type]
        jinja = "yes" if any(r["jinja2_at_start"] for r in runs) else "no"
        print(
            f"| {name} | {median * 1000:.2f} | {(median - base) * 1000:+.2f} | {median / base:.3f} | {jinja} "
            f"| {ms(pages) if pages else 'n/a'} | {ms(again) if again else 'n/a'} |"
        )
    imports = [float(r["import"]) for rs in results.values() for r in rs]  # type: ignore[arg-type]
    print(
        f"\n(importing facebridge.service.app itself: median {ms(imports)} ms, the same code for all three)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
