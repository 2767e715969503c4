"""facebridge.client against the real service on a real port, and its retries against a scripted server."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from facebridge.client import (
    BINARY_ROWS,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    ServiceError,
    UnavailableError,
    ValidationError,
    error_from_response,
    parse_retry_after,
)
from facebridge.embedding_cache import EmbeddingCache
from facebridge.schemas.embed import EmbedResponse
from facebridge.schemas.verify import Pair, Side, VerifyResponse

from .conftest import API_KEYS, LiveServer, free_port

ARC, FP, SIR = "arcface-mbf128", "faceplugin-mbf512", "sirius-mbf192"
PHOTO = Path("Colin_Powell") / "Colin_Powell_0010.jpg"


@pytest.fixture(scope="module")
def fb(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, API_KEYS[0]) as client:
        yield client


def _same_person_rows(cache: EmbeddingCache, count: int) -> list[int]:
    return [i for i in range(1, len(cache)) if cache.identities[i] == cache.identities[i - 1]][:count]


# ----------------------------------------------------------------------------------------- real service
def test_probes_and_catalog(fb: Client) -> None:
    assert fb.health() is True
    ready = fb.ready()
    assert ready["status"] == "ready" and ARC in ready["models_loaded"]
    models = {m.id: m for m in fb.models().models}
    assert models[ARC].state == "loaded" and models[ARC].maps_from == [FP]
    listing = fb.mappings()
    assert {m.id for m in listing.maps} == {f"{ARC}->{FP}", f"{FP}->{SIR}"}
    reloaded = fb.reload_mappings()
    assert sorted(reloaded.maps) == [f"{ARC}->{FP}", f"{FP}->{SIR}"] and reloaded.refused == []


def test_translate_json_and_binary_agree_with_the_service(
    fb: Client, client: httpx.Client, subset_caches: dict[str, EmbeddingCache]
) -> None:
    source = subset_caches[ARC].embeddings[: BINARY_ROWS + 44].astype(np.float32)
    auto = fb.translate(source, ARC, SIR)  # above BINARY_ROWS: the .npy path
    assert auto.response is None and auto.embeddings.dtype == np.float32
    assert auto.embeddings.shape == (len(source), 192)
    assert auto.maps == [f"{ARC}->{FP}", f"{FP}->{SIR}"] and auto.composed is True
    as_json = fb.translate(source, ARC, SIR, binary=False)
    assert as_json.response is not None and as_json.maps == auto.maps and as_json.composed is True
    assert as_json.embeddings.dtype == np.float32
    np.testing.assert_allclose(as_json.embeddings, auto.embeddings, rtol=0, atol=1e-7)
    # the service's own JSON answer, asked without the client
    raw = client.post("/translate", json={"source": ARC, "target": SIR, "embeddings": source.tolist()})
    assert raw.status_code == 200, raw.text
    np.testing.assert_allclose(auto.embeddings, np.array(raw.json()["embeddings"]), rtol=0, atol=1e-7)
    assert as_json.response.model_dump() == {**raw.json(), "embeddings": as_json.response.embeddings}

    # a few rows of plain lists go as JSON, and binary=True forces .npy for them
    small = source[:3].tolist()
    direct = fb.translate(small, ARC, FP)
    assert direct.response is not None and direct.maps == [f"{ARC}->{FP}"] and direct.composed is False
    assert direct.response.maps[0].mean_cosine is not None
    forced = fb.translate(small, ARC, FP, binary=True)
    assert forced.response is None and forced.maps == direct.maps
    np.testing.assert_allclose(forced.embeddings, direct.embeddings, rtol=0, atol=1e-7)


def test_verify_one_pair_and_a_batch(
    fb: Client, client: httpx.Client, lfw: Path, subset_caches: dict[str, EmbeddingCache]
) -> None:
    arc, fp = subset_caches[ARC], subset_caches[FP]
    i = _same_person_rows(arc, 1)[0]
    one = fb.verify(arc.embeddings[i], ARC, fp.embeddings[i - 1], FP)
    assert isinstance(one, VerifyResponse) and len(one.results) == 1
    raw = client.post(
        "/verify",
        json={
            "pair": {
                "a": {"model": ARC, "embedding": arc.embeddings[i].tolist()},
                "b": {"model": FP, "embedding": fp.embeddings[i - 1].tolist()},
            }
        },
    ).json()
    assert one.model_dump(mode="json") == VerifyResponse.model_validate(raw).model_dump(mode="json")
    assert one.results[0].match and one.results[0].maps == [f"{ARC}->{FP}"]

    # a batch mixing the three pair forms, under one decision rule
    other = (i + 40) % len(fp)
    batch = fb.verify_pairs(
        [
            (arc.embeddings[i], ARC, fp.embeddings[i - 1], FP),
            ((ARC, arc.embeddings[i]), (FP, fp.embeddings[other])),
            Pair(
                a=Side(model=ARC, embedding=arc.embeddings[i].tolist()),
                b=Side(model=ARC, embedding=arc.embeddings[i - 1].tolist()),
            ),
        ],
        far=0.01,
    )
    assert [r.index for r in batch.results] == [0, 1, 2]
    assert all(r.operating_point == "far_1e-2" for r in batch.results)
    assert [r.match for r in batch.results] == [True, False, True]
    assert [r.comparison for r in batch.results] == ["cross", "cross", "same-space"]
    # a photo side (a Path) is embedded by the service
    photo = fb.verify(arc.embeddings[i], ARC, lfw / arc.paths[i - 1], ARC, threshold=0.2)
    assert photo.results[0].operating_point == "custom" and photo.results[0].match


def test_embed_multipart(fb: Client, lfw: Path) -> None:
    answer = fb.embed(lfw / PHOTO, [ARC, FP], largest_only=True)
    assert isinstance(answer, EmbedResponse) and answer.detector is not None
    (face,) = answer.results[0].faces
    assert [(e.model, e.dim) for e in face.embeddings] == [(ARC, 128), (FP, 512)]
    batch = fb.embed([(lfw / PHOTO).read_bytes(), lfw / PHOTO], largest_only=True)
    assert [r.index for r in batch.results] == [0, 1]
    assert batch.results[0].faces[0].embeddings[0].embedding == face.embeddings[0].embedding
    with pytest.raises(NotFoundError) as caught:
        fb.embed(lfw / PHOTO, ["nope"])
    assert caught.value.fields == ["models[0]"]


def test_embed_pixels_as_npy(fb: Client, lfw: Path) -> None:
    """An array of pixels goes as a .npy body: the same faces as the photo's file, either colour order."""
    from PIL import Image

    rgb = np.asarray(Image.open(lfw / PHOTO).convert("RGB"))
    from_file = fb.embed(lfw / PHOTO, [ARC], largest_only=True).results[0].faces[0]
    for channels, pixels in (("rgb", rgb), ("bgr", np.ascontiguousarray(rgb[..., ::-1]))):
        answer = fb.embed(pixels, [ARC], channels=channels, largest_only=True)  # type: ignore[arg-type]
        (face,) = answer.results[0].faces
        np.testing.assert_allclose(face.embeddings[0].embedding, from_file.embeddings[0].embedding, atol=1e-6)
    crops = np.zeros((2, 112, 112, 3), np.uint8)
    assert len(fb.embed(crops, [ARC], channels="bgr", aligned=True).results) == 2
    with pytest.raises(TypeError):
        fb.embed(crops, [ARC], aligned=True)


def test_problems_become_typed_exceptions(fb: Client, server: LiveServer) -> None:
    ok = [[0.1] * 128]
    with pytest.raises(NotFoundError) as unknown:
        fb.translate(ok, "nope", FP)
    error = unknown.value
    assert (error.status, error.code, error.fields) == (404, "unknown-model", ["source"])
    assert error.title and "nope" in error.detail and error.instance == "/translate"
    assert error.request_id and "source" in str(error)

    with pytest.raises(ValidationError) as wrong_dim:
        fb.translate([[0.1] * 128, [0.1] * 127], ARC, FP)
    assert (wrong_dim.value.status, wrong_dim.value.code, wrong_dim.value.fields) == (
        422,
        "wrong-dim",
        ["embeddings[1]"],
    )
    with pytest.raises(ValidationError) as binary_dim:
        fb.translate(np.full((2, 64), 0.1, np.float32), ARC, FP, binary=True)
    assert binary_dim.value.code == "wrong-dim" and binary_dim.value.fields[0].startswith("body")

    with pytest.raises(ConflictError) as no_path:
        fb.translate(ok, ARC, "dlib-r29-128")
    assert no_path.value.code == "no-map-path" and no_path.value.fields == ["target"]
    side = [0.1] * 128
    with pytest.raises(ConflictError) as uncalibrated:
        fb.verify([0.1] * 192, SIR, [0.2] * 192, SIR)
    assert uncalibrated.value.code == "not-calibrated"
    with pytest.raises(NotFoundError) as unknown_side:
        fb.verify(side, ARC, side, "nope")
    assert unknown_side.value.fields == ["pairs[0].b.model"]
    with pytest.raises(ValidationError) as bad_far:
        fb.verify(side, ARC, side, ARC, far=0.5)
    assert bad_far.value.code == "validation-error" and bad_far.value.status == 422
    with pytest.raises(PayloadTooLargeError) as too_many:
        fb.verify_pairs([(side, ARC, side, ARC)] * 101)
    assert too_many.value.code == "batch-too-large" and too_many.value.fields == ["pairs"]

    for key in (None, "wrong-key"):
        with Client(server.url, key) as stranger, pytest.raises(AuthenticationError) as refused:
            stranger.models()
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with Client(server.url) as stranger:
        assert stranger.health() is True  # probes stay open


def test_async_client_translate_verify_and_errors(
    server: LiveServer, fb: Client, subset_caches: dict[str, EmbeddingCache]
) -> None:
    arc, fp = subset_caches[ARC], subset_caches[FP]
    i = _same_person_rows(arc, 1)[0]
    source = arc.embeddings[:300].astype(np.float32)

    async def scenario() -> None:
        async with AsyncClient(server.url, API_KEYS[0]) as afb:
            assert await afb.health() is True
            binary, as_json = await asyncio.gather(
                afb.translate(source, ARC, FP), afb.translate(source[:10], ARC, FP)
            )
            assert binary.response is None and as_json.response is not None
            np.testing.assert_allclose(binary.embeddings[:10], as_json.embeddings, rtol=0, atol=1e-7)
            np.testing.assert_allclose(binary.embeddings, fb.translate(source, ARC, FP).embeddings)
            one = await afb.verify(arc.embeddings[i], ARC, fp.embeddings[i - 1], FP)
            assert one == fb.verify(arc.embeddings[i], ARC, fp.embeddings[i - 1], FP)
            batch = await afb.verify_pairs(
                [(arc.embeddings[i], ARC, fp.embeddings[j], FP) for j in (i - 1, (i + 40) % len(fp))],
                operating_point="far_1e-3",
            )
            assert [r.match for r in batch.results] == [True, False]
            with pytest.raises(ValidationError) as wrong_dim:
                await afb.translate([[0.1] * 64], ARC, FP)
            assert wrong_dim.value.fields == ["embeddings[0]"]
            assert len((await afb.models()).models) > 0

    asyncio.run(scenario())


# ------------------------------------------------------------------------------- scripted HTTP server
Reply = tuple[int, dict[str, str], bytes]  # status, headers, body
Answer = Reply | str  # or "drop": close the connection without answering


class Scripted:
    """A real HTTP server on loopback that answers from a script and records each request's arrival."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.arrivals: list[tuple[float, str, str, dict[str, str]]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                script.arrivals.append((time.monotonic(), self.command, self.path, dict(self.headers)))
                answer = script.answers.pop(0) if len(script.answers) > 1 else script.answers[0]
                if isinstance(answer, str):  # "drop"
                    self.close_connection = True
                    return
                status, headers, body = answer
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def gaps(self) -> list[float]:
        times = [t for t, *_ in self.arrivals]
        return [b - a for a, b in itertools.pairwise(times)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


RELOADED: Reply = (200, {"Content-Type": "application/json"}, b'{"maps": ["a->b"], "refused": []}')


def _problem(status: int, code: str, headers: dict[str, str] | None = None) -> Reply:
    body = (
        f'{{"type": "urn:facebridge:problem:{code}", "title": "T", "status": {status}, "detail": "D", '
        f'"errors": [{{"field": "x", "message": "m"}}]}}'
    )
    return status, {"Content-Type": "application/problem+json", **(headers or {})}, body.encode()


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    servers: list[Scripted] = []
    yield servers
    for server in servers:
        server.close()


def _serve(scripted: list[Scripted], answers: list[Answer]) -> Scripted:
    server = Scripted(answers)
    scripted.append(server)
    return server


def test_retries_503_honouring_retry_after(scripted: list[Scripted]) -> None:
    server = _serve(
        scripted,
        [
            _problem(503, "not-ready", {"Retry-After": "1"}),
            _problem(503, "not-ready", {"Retry-After": "1"}),
            RELOADED,
        ],
    )
    start = time.monotonic()
    with Client(server.url, "k-1") as fb:
        assert fb.reload_mappings().maps == ["a->b"]
    assert time.monotonic() - start >= 2.0
    assert len(server.arrivals) == 3 and all(gap >= 0.99 for gap in server.gaps())
    assert all(headers["X-API-Key"] == "k-1" for *_, headers in server.arrivals)
    assert all(path == "/admin/reload-mappings" for _, _, path, _ in server.arrivals)


def test_429_after_max_retries_raises_rate_limited(scripted: list[Scripted]) -> None:
    server = _serve(scripted, [_problem(429, "too-many-requests", {"Retry-After": "0"})])
    with Client(server.url, max_retries=2) as fb, pytest.raises(RateLimitedError) as caught:
        fb.translate([[0.1] * 4], "a", "b")
    assert len(server.arrivals) == 3
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429,
        "too-many-requests",
        0.0,
    )


def test_backoff_without_retry_after_and_too_long_a_retry_after(scripted: list[Scripted]) -> None:
    plain_503 = (503, {"Content-Type": "text/plain"}, b"busy")
    server = _serve(scripted, [plain_503, plain_503, RELOADED])
    with Client(server.url, backoff=0.05) as fb:
        assert fb.reload_mappings().refused == []
    assert len(server.arrivals) == 3
    gaps = server.gaps()
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05  # at least half of 0.05 * 2**attempt
    # a Retry-After beyond max_retry_after is not waited for: the error comes at once
    server = _serve(scripted, [_problem(503, "not-ready", {"Retry-After": "3600"}), RELOADED])
    with Client(server.url, max_retry_after=10) as fb, pytest.raises(UnavailableError) as caught:
        fb.reload_mappings()
    assert len(server.arrivals) == 1 and caught.value.retry_after == 3600.0


def test_other_errors_are_not_retried(scripted: list[Scripted]) -> None:
    server = _serve(scripted, [_problem(404, "unknown-model"), RELOADED])
    with Client(server.url) as fb, pytest.raises(NotFoundError) as caught:
        fb.reload_mappings()
    assert len(server.arrivals) == 1
    assert [(e.field, e.message) for e in caught.value.errors] == [("x", "m")]
    # a non-problem body (a proxy's page) still raises, with its text
    server = _serve(scripted, [(502, {"Content-Type": "text/html"}, b"<h1>Bad gateway</h1>"), RELOADED])
    with Client(server.url) as fb, pytest.raises(ServerError) as proxy:
        fb.models()
    assert len(server.arrivals) == 1 and isinstance(proxy.value, ServiceError)
    assert (proxy.value.status, proxy.value.code, proxy.value.detail) == (502, "", "<h1>Bad gateway</h1>")
    # /readyz answers 503 while loading: its body is the answer, not an error, and not retried
    loading = (503, {"Content-Type": "application/json"}, b'{"status": "loading"}')
    server = _serve(scripted, [loading, RELOADED])
    with Client(server.url) as fb:
        assert fb.ready() == {"status": "loading"}
    assert len(server.arrivals) == 1


def test_connection_failures_are_retried(scripted: list[Scripted]) -> None:
    server = _serve(scripted, ["drop", RELOADED])
    with Client(server.url, backoff=0.01) as fb:
        assert fb.reload_mappings().maps == ["a->b"]
    assert len(server.arrivals) == 2
    nobody = f"http://127.0.0.1:{free_port()}"
    with Client(nobody, max_retries=2, backoff=0.01) as fb:
        with pytest.raises(ConnectionFailedError) as caught:
            fb.models()
        assert caught.value.status == 0 and "3 attempts" in caught.value.detail
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        assert fb.health() is False


def test_async_client_retries(scripted: list[Scripted]) -> None:
    server = _serve(scripted, [_problem(503, "not-ready", {"Retry-After": "0"}), "drop", RELOADED])

    async def scenario() -> None:
        async with AsyncClient(server.url, backoff=0.01) as afb:
            assert (await afb.reload_mappings()).maps == ["a->b"]
        server.answers = [_problem(429, "too-many-requests", {"Retry-After": "0"})]
        async with AsyncClient(server.url, max_retries=1) as afb:
            with pytest.raises(RateLimitedError):
                await afb.models()

    asyncio.run(scenario())
    assert len(server.arrivals) == 5


def test_injected_http_client_is_not_closed(scripted: list[Scripted]) -> None:
    server = _serve(scripted, [RELOADED])
    http = httpx.Client()
    with Client(server.url + "/", http_client=http) as fb:
        assert fb.base_url == server.url and fb.reload_mappings().maps == ["a->b"]
    assert not http.is_closed
    http.close()
    owned = Client(server.url)
    owned.close()
    assert owned._http.is_closed


# ----------------------------------------------------------------------------------------- pure helpers
def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthorized", AuthenticationError),
        (403, "", AuthenticationError),
        (404, "unknown-model", NotFoundError),
        (409, "no-map-path", ConflictError),
        (409, "not-calibrated", ConflictError),
        (409, "model-unavailable", ConflictError),
        (422, "wrong-dim", ValidationError),
        (400, "bad-content-length", ValidationError),
        (413, "batch-too-large", PayloadTooLargeError),
        (429, "too-many-requests", RateLimitedError),
        (503, "time-budget-exceeded", UnavailableError),
        (500, "internal-error", ServerError),
        (415, "unsupported-media-type", ServiceError),
    ],
)
def test_error_table(status: int, code: str, expected: type[ServiceError]) -> None:
    status_code, headers, body = _problem(status, code)
    error = error_from_response(httpx.Response(status_code, headers=headers, content=body))
    assert type(error) is expected and error.status == status and error.code == code
