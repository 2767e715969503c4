"""The operator console (/console) in a real headless browser against a real server with the real models.

Debian's chromium (/usr/bin/chromium) driven by Playwright's Python package (never a downloaded browser):
sign in, every page renders with no console error, no failed request and no inline style; Try it with
two LFW photos of one person says match and of two people no match, with the numbers of a direct
/verify call; a wrong key is refused; the security headers are present; axe-core (vendored in
tests/vendor) finds no serious or critical accessibility violation on any page. Screenshots of every
page go to docs/console/*.png (docs/console.md shows them).

Without playwright or chromium the browser tests skip with the reason, except under CI (the CI variable
set), where they fail: CI installs both (.ci/run, pyproject's dev extra).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from .conftest import API_KEYS, LFW, MODELS_DIR, ROOT, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "tests" / "vendor" / "axe.min.js"
SHOTS = ROOT / "docs" / "console"
KEY = API_KEYS[0]
MODELS = ["arcface-mbf128", "sirius-mbf192"]
SAME = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg")
DIFFERENT = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Tony_Blair/Tony_Blair_0001.jpg")
EVALUATED = ("arcface-mbf128", "sirius-mbf192")  # its evaluation ships in mappings/evaluations
UNEVALUATED = ("faceplugin-mbf512", "dlib-r29-128")  # its evaluation is left out of the test's copy
PAGES = {
    "overview": ("/console", "#maps table"),
    "map": (f"/console/maps/{EVALUATED[0]}/{EVALUATED[1]}", "#det svg"),
    "try": ("/console/try", "#model-b option"),
    "population": ("/console/population", "#drift table"),
    "rollout": ("/console/rollout", "#pairs table"),
}


def require_browser() -> None:
    """Skip (fail under CI) when Playwright or Debian's chromium is missing."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if reason is None and not CHROMIUM.is_file():
        reason = f"no browser at {CHROMIUM} (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the console browser tests, but {reason}")
        pytest.skip(reason)


# --------------------------------------------------------------------------------------------- server
def cohort_photos(folder: Path, people: int = 150) -> Path:
    """One photo each of every 20th LFW person (a gallery-like cohort of distinct people)."""
    folder.mkdir(parents=True)
    names = sorted(p.name for p in LFW.iterdir() if p.is_dir())[19::20][:people]
    for name in names:
        first = sorted((LFW / name).glob("*.jpg"))[0]
        (folder / first.name).symlink_to(first)
    return folder


def build_cohorts(root: Path) -> Path:
    photos = cohort_photos(root / "photos")
    cohorts = root / "cohorts"
    for model in MODELS:
        done = subprocess.run(
            [sys.executable, "-m", "facebridge", "cohort", "build", "--model", model, str(photos),
             "--out", str(cohorts / model), "--models-dir", str(MODELS_DIR), "--providers", "cpu"],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    return cohorts


def migration_dsn(request: pytest.FixtureRequest) -> str | None:
    """A PostgreSQL schema holding a finished in-place migration job (300 templates, 3 bad rows), or
    None where no PostgreSQL server can be started here (the roll-out page then says so)."""
    try:
        postgres = request.getfixturevalue("postgres")
    except pytest.skip.Exception:
        return None
    import psycopg

    from facebridge.mapping.bank import MappingBank
    from facebridge.migration.pg_table import TableRef
    from facebridge.migration.postgres import PostgresMigration
    from facebridge.vision.manifest import load_manifest

    name = f"console_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    dsn = postgres.dsn(options=f"-c search_path={name}")
    rows = np.random.default_rng(7).standard_normal((300, 128)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE faces (user_id bigint PRIMARY KEY, template real[])")
        with conn.cursor().copy("COPY faces (user_id, template) FROM STDIN") as copy:
            for key, row in enumerate(rows):
                copy.write_row((key, row.tolist()))
        conn.execute("UPDATE faces SET template = NULL WHERE user_id IN (10, 11)")
        conn.execute("UPDATE faces SET template = template[1:100] WHERE user_id = 12")
    bank = MappingBank.load(ROOT / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))
    path = bank.find_path("arcface-mbf128", "sirius-mbf192")
    assert path is not None
    ref = TableRef.parse(f"{dsn}&table=faces&id=user_id&column=template")
    PostgresMigration(ref, path, "template_b", batch_rows=100, progress=False).run()
    return dsn


@pytest.fixture(scope="module")
def console_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The service on the shipped maps (one evaluation file left out), two recognizers, two cohorts, a
    SQLite pair store with a few recorded pairs, and a migration job where PostgreSQL is at hand."""
    root = tmp_path_factory.mktemp("console")
    mappings = root / "mappings"
    shutil.copytree(ROOT / "mappings", mappings, ignore=shutil.ignore_patterns("refits"))
    (mappings / "evaluations" / f"{UNEVALUATED[0]}__{UNEVALUATED[1]}.evaluation.json").unlink(missing_ok=True)
    env = {
        "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
        "FACEBRIDGE_MAPPINGS_DIR": str(mappings),
        "FACEBRIDGE_PROVIDERS": "cpu",
        "FACEBRIDGE_LOAD_MODELS": json.dumps([*MODELS, "yunet"]),
        "FACEBRIDGE_API_KEYS": ",".join(API_KEYS),
        "FACEBRIDGE_COHORT_DIR": str(build_cohorts(root)),
        "FACEBRIDGE_PAIRS_DB": str(root / "pairs.sqlite"),
    }
    dsn = migration_dsn(request)
    if dsn is not None:
        env["FACEBRIDGE_MIGRATIONS_DSN"] = dsn
    live = LiveServer(env, root / "server.log")
    try:
        live.wait_ready(timeout=180)
        with httpx.Client(base_url=live.url, headers={"X-API-Key": KEY}, timeout=60) as http:
            # a second snapshot of the drift watch, and a few pairs recorded for the roll-out page
            assert http.post("/admin/reload-mappings").status_code == 200
            for subject, photo in [
                ("subject-1", SAME[0]),
                ("subject-1", SAME[1]),
                ("subject-2", DIFFERENT[1]),
            ]:
                answer = http.post(
                    "/embed",
                    json={
                        "images": [{"data": photo_b64(photo)}],
                        "models": MODELS,
                        "largest_only": True,
                        "record": {"subject": subject},
                    },
                )
                assert answer.status_code == 200, answer.text
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def http(console_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console_server.url, headers={"X-API-Key": KEY}, timeout=60) as client:
        yield client


def photo_b64(relative: str) -> str:
    return base64.b64encode((LFW / relative).read_bytes()).decode()


# --------------------------------------------------------------------------------------------- browser
class Watched:
    """A page and everything that went wrong on it: console errors, page errors, failed requests,
    answers >= 400, and requests to any other origin."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.problems: list[str] = []
        self.allowed: list[str] = []  # substrings of URLs whose error answers a test expects
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        page.on("response", self._response)
        page.on("request", self._request)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning") and not self._expected_resource_error(message):
            self.problems.append(f"console {message.type}: {message.text} ({message.location})")

    def _expected_resource_error(self, message: Any) -> bool:
        url = (message.location or {}).get("url", "")
        return "Failed to load resource" in message.text and any(a in url for a in self.allowed)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not any(a in response.url for a in self.allowed):
            self.problems.append(f"answer {response.status}: {response.url}")

    def _request(self, request: Any) -> None:
        if not (request.url.startswith(self.base) or request.url.startswith(("data:", "blob:"))):
            self.problems.append(f"request to another origin: {request.url}")

    def check(self) -> None:
        problems, self.problems = self.problems, []
        assert not problems, problems


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


def sign_in(page: Any, key: str = KEY) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


@pytest.fixture(scope="module")
def console(browser: Any, console_server: LiveServer) -> Iterator[Watched]:
    """One signed-in tab with the CSP enforced (the key lives in this tab's sessionStorage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watched = Watched(page, console_server.url)
    page.goto(console_server.url + "/console")
    sign_in(page)
    page.wait_for_selector("#maps table")
    try:
        yield watched
    finally:
        context.close()


def open_page(watched: Watched, name: str) -> Any:
    path, ready = PAGES[name]
    page = watched.page
    page.goto(watched.base + path)
    page.wait_for_selector(ready, state="attached", timeout=60_000)
    page.wait_for_load_state("networkidle")
    return page


# --------------------------------------------------------------------------------------------- tests
def test_console_answers_with_strict_security_headers(console_server: LiveServer) -> None:
    for path in ["/console", "/console/try", "/console/static/js/ui.js", "/console/static/console.css"]:
        answer = httpx.get(console_server.url + path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        for directive in [
            "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
            "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'",
        ]:  # fmt: skip
            assert directive in policy, (path, directive)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    page = httpx.get(console_server.url + "/console").text
    assert "<script>" not in page and " style=" not in page and "onclick" not in page
    assert "http://" not in page.replace(console_server.url, "") and "https://" not in page  # no CDN
    script = httpx.get(console_server.url + "/console/static/js/charts.js")
    assert script.headers["content-type"].startswith("text/javascript")
    # the pages hold no data: without a key the API still answers 401
    assert httpx.get(console_server.url + "/mappings").status_code == 401


def test_wrong_key_is_refused_and_the_key_stays_in_the_tab(browser: Any, console_server: LiveServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    watched = Watched(page, console_server.url)
    watched.allowed.append("/calibration/history")  # the 401 that refuses the wrong key
    try:
        page.goto(console_server.url + "/console")
        sign_in(page, "not-a-key")
        page.wait_for_selector("#signin-error:has-text('refused')")
        assert page.locator("#content").is_hidden()
        assert page.evaluate("sessionStorage.length") == 0
        page.screenshot(path=str(SHOTS / "sign-in.png"))
        # keyboard only: Tab to the key field, type, Enter
        page.goto(console_server.url + "/console")
        for _ in range(20):
            if page.evaluate("document.activeElement && document.activeElement.id") == "api-key":
                break
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "api-key"
        page.keyboard.type(KEY)
        page.keyboard.press("Enter")
        page.wait_for_selector("#maps table")
        assert page.evaluate("Object.values(sessionStorage)") == [KEY]
        assert page.evaluate("document.cookie") == "" and KEY not in page.url
        watched.check()
        assert KEY not in console_server.log()  # never logged
    finally:
        context.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders_with_no_error(console: Watched, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = open_page(console, name)
    assert page.locator("#status.error").count() == 0, page.locator("#status").inner_text()
    assert page.evaluate("document.querySelectorAll('[style]').length") == 0  # CSP: no inline style
    if name == "try":
        try_it(page, SAME)  # the page with a comparison on it
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    console.check()


def try_it(page: Any, photos: tuple[str, str]) -> dict[str, Any]:
    page.select_option("#model-a", MODELS[0])
    page.select_option("#model-b", MODELS[1])
    page.set_input_files("#photo-a", str(LFW / photos[0]))
    page.set_input_files("#photo-b", str(LFW / photos[1]))
    page.click("#compare")
    page.wait_for_selector("#det figure, #det .notice", timeout=120_000)
    answer: dict[str, Any] = json.loads(page.locator("#answer").inner_text())
    return answer


@pytest.mark.parametrize(("photos", "match"), [(SAME, True), (DIFFERENT, False)], ids=["same", "different"])
def test_try_it_agrees_with_a_direct_verify(
    console: Watched, http: httpx.Client, photos: tuple[str, str], match: bool
) -> None:
    page = open_page(console, "try")
    shown = try_it(page, photos)
    direct = http.post(
        "/verify",
        json={
            "pair": {
                "a": {"model": MODELS[0], "image": photo_b64(photos[0])},
                "b": {"model": MODELS[1], "image": photo_b64(photos[1])},
            },
            "operating_point": "far_1e-3",
        },
    ).json()
    assert shown == direct  # the answer shown verbatim is the service's own
    result = direct["results"][0]
    assert result["match"] is match
    assert page.locator(".verdict").inner_text() == ("Match" if match else "No match")
    assert (
        page.locator(".photo rect.box").count() == 2 and page.locator(".photo circle.landmark").count() == 10
    )
    assert page.locator(".crops img").count() == 2
    plan = page.locator("#plan").inner_text()
    assert result["space"] in plan and all(m in plan for m in result["maps"])
    if result["comparison"] == "both-maps":  # no single map's curve holds a score of both maps
        assert "both spaces" in page.locator("#det").inner_text()
    else:
        assert page.locator("#det svg").count() == 1
    console.check()


def test_a_map_without_evaluation_says_so(console: Watched) -> None:
    path = f"/mappings/{UNEVALUATED[0]}/{UNEVALUATED[1]}/evaluation"
    console.allowed.append(path)
    try:
        page = console.page
        page.goto(f"{console.base}/console/maps/{UNEVALUATED[0]}/{UNEVALUATED[1]}")
        page.wait_for_selector("#quality .notice")
        assert "No evaluation for this map" in page.locator("#quality").inner_text()
        assert page.locator("#thresholds table").count() == 1  # what the map file says is still shown
        console.check()
    finally:
        console.allowed.remove(path)


def test_axe_finds_no_serious_or_critical_violation(browser: Any, console_server: LiveServer) -> None:
    """axe-core needs injecting, which the console's CSP forbids: this context bypasses the CSP."""
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watched = Watched(page, console_server.url)
    try:
        page.goto(console_server.url + "/console")
        sign_in(page)
        page.wait_for_selector("#maps table")
        found = {}
        for name in PAGES:
            open_page(watched, name)
            if name == "try":
                try_it(page, SAME)
            page.add_script_tag(path=str(AXE))
            violations = page.evaluate(
                "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
                " nodes: v.nodes.slice(0, 3).map(n => n.target)}))"
            )
            found[name] = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert not any(found.values()), found
        watched.check()
    finally:
        context.close()


def test_roll_out_page_shows_pairs_and_migrations(console: Watched) -> None:
    page = open_page(console, "rollout")
    pairs = page.locator("#pairs").inner_text()
    assert "arcface-mbf128 + sirius-mbf192" in pairs and "sqlite" in pairs
    assert page.locator("#timeline svg").count() == 1
    assert "No refit recorded" in page.locator("#refits").inner_text()
    migrations = page.locator("#migrations").inner_text()
    if "FACEBRIDGE_MIGRATIONS_DSN" in migrations:  # no PostgreSQL here: the page says nothing is configured
        assert "Nothing configured" in migrations
    else:
        assert "faces.template->template_b" in migrations and "complete" in migrations
    console.check()


def test_population_page_shows_the_drift_trend(console: Watched) -> None:
    page = open_page(console, "population")
    assert page.locator("#cohorts table tbody tr").count() == 2
    assert page.locator("#trend svg").count() == 1
    assert page.locator("#trend table tbody tr").count() == 2  # start-up and the reload
    console.check()


# --------------------------------------------------------------------------------------------- API
def test_evaluation_route_serves_the_sidecar_or_a_problem(http: httpx.Client) -> None:
    answer = http.get(f"/mappings/{EVALUATED[0]}/{EVALUATED[1]}/evaluation")
    assert answer.status_code == 200
    body = answer.json()
    assert body["map"] == "->".join(EVALUATED) and body["current"] is True
    lfw = next(p for p in body["populations"] if p["name"] == "lfw")
    assert lfw["in_fit"] is True and sum(lfw["native"]["genuine"]) == lfw["native"]["genuine_pairs"]
    assert len(lfw["cross"]["genuine"]) == body["bins"]["count"] and len(lfw["cross"]["det"]) > 50
    missing = http.get(f"/mappings/{UNEVALUATED[0]}/{UNEVALUATED[1]}/evaluation")
    assert missing.status_code == 404 and missing.json()["type"].endswith(":no-evaluation")
    unknown = http.get("/mappings/arcface-mbf128/no-such-model/evaluation")
    assert unknown.status_code == 404 and unknown.json()["type"].endswith(":unknown-map")
    assert http.get("/mappings/arcface-mbf128/..%2F..%2Fetc/evaluation").status_code == 404
    history = http.get("/calibration/history").json()
    assert [s["event"] for s in history["snapshots"]] == ["start", "reload"]
    assert history["snapshots"][0]["estimates"], "two cohorts: the drift watch has estimates"
    timeline = http.get("/pairs/timeline", params={"bucket": "hour"}).json()
    assert sum(b["pairs"] for e in timeline["model_pairs"] for b in e["buckets"]) == 3
    embedded = http.post(
        "/embed", json={"images": [{"data": photo_b64(SAME[0])}], "models": MODELS, "crops": True}
    ).json()
    crops = embedded["results"][0]["faces"][0]["crops"]
    assert [c["model"] for c in crops] == MODELS and base64.b64decode(crops[0]["png"])[:4] == b"\x89PNG"


def test_new_routes_are_declared_in_openapi_and_the_console_is_not() -> None:
    from facebridge.config import Settings
    from facebridge.service.app import create_app

    document = create_app(Settings(api_keys="k")).openapi()
    for path in [
        "/mappings/{source}/{target}/evaluation", "/calibration/history", "/pairs/timeline", "/migrations",
        "/refits",
    ]:  # fmt: skip
        assert "get" in document["paths"][path], path
    assert not any(p.startswith("/console") for p in document["paths"])
    assert "crops" in document["components"]["schemas"]["EmbedJsonRequest"]["properties"]


def test_the_console_setting_turns_it_off() -> None:
    from fastapi.testclient import TestClient

    from facebridge.config import Settings
    from facebridge.service.app import create_app

    off = TestClient(create_app(Settings(api_keys="k", console=False)))
    assert off.get("/console").status_code == 404
    assert off.get("/console/static/js/ui.js").status_code == 404
    on = TestClient(create_app(Settings(api_keys="k")))
    assert on.get("/console").status_code == 200


def test_the_bank_ignores_evaluations_and_refit_history(tmp_path: Path) -> None:
    from facebridge.mapping.bank import MappingBank
    from facebridge.vision.manifest import load_manifest

    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    (tmp_path / "mappings" / "refits").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "refits" / "history.jsonl").write_text("{}\n")
    bank = MappingBank.load(tmp_path / "mappings", load_manifest(MODELS_DIR / "manifest.toml"))
    assert not bank.refused and len(bank.maps) == 20
    assert list((tmp_path / "mappings" / "evaluations").glob("*.evaluation.json"))


def test_refit_history_round_trip(tmp_path: Path) -> None:
    from facebridge.refit_history import append_record, read_records
    from facebridge.schemas.rollout import RefitRecord, RefitScores

    scores = RefitScores(accuracy=0.9, tar_far_1e3=0.8, tar_far_1e4=0.7, genuine_pairs=10, impostor_pairs=90)
    for index in range(3):
        record = RefitRecord(
            at=datetime(2026, 1, index + 1, tzinfo=UTC),
            source="a", target="b", choice="ridge", method="ridge", before=None, after=scores,
            improved=True, written=index == 2, file=None, calibrated_on_deployment=True,
            split={"fit_subjects": 3},
        )  # fmt: skip
        append_record(tmp_path, record)
    with (tmp_path / "refits" / "history.jsonl").open("a") as handle:
        handle.write("not json\n")
    records = read_records(tmp_path)
    assert [r.written for r in records] == [True, False, False]  # newest first, bad line skipped


def test_det_points_and_histograms_summarise_the_scores() -> None:
    from facebridge.evaluation.map_evaluation import BINS, det_points, histogram, score_set

    rng = np.random.default_rng(0)
    genuine = rng.normal(0.7, 0.1, 5_000).astype(np.float32)
    impostor = rng.normal(0.0, 0.1, 200_000).astype(np.float32)
    points = det_points(genuine, impostor)
    thresholds = [p.threshold for p in points]
    assert thresholds == sorted(thresholds, reverse=True)
    assert all(a.fmr <= b.fmr and a.fnmr >= b.fnmr for a, b in itertools.pairwise(points))
    at = min(points, key=lambda p: abs(p.threshold - 0.3))
    assert at.fmr == pytest.approx(float(np.mean(impostor >= at.threshold)), abs=1e-6)
    assert at.fnmr == pytest.approx(float(np.mean(genuine < at.threshold)), abs=1e-6)
    counts = histogram(np.r_[genuine, [-5.0, 5.0]])
    assert len(counts) == BINS.count and sum(counts) == len(genuine) + 2  # outliers land in the end bins
    scores = np.r_[genuine, impostor]
    summary = score_set(scores, np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    assert summary.genuine_pairs == 5_000 and 0 < summary.eer < 0.01
    assert summary.tar_at_far["far_1e-4"] <= summary.tar_at_far["far_1e-3"] <= summary.tar_at_far["far_1e-2"]
