"""Bad input never reaches a 5xx: schemathesis over the service's own OpenAPI (with a key of every
scope, without a key, and briefly with a key of each single scope), and hypothesis over /translate and
/verify bodies (NaN, Inf, wrong dims, empty, huge, non-numeric, nested wrong shapes). Bounded here;
scripts/fuzz_long.sh runs the long version."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facebridge.keyfile import ALL_SCOPES

from .conftest import API_KEYS, LiveServer, ScopedKeys

SCHEMATHESIS = shutil.which("st", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize(
    "key", ["every-scope", "without-key", *ALL_SCOPES], ids=lambda k: k.replace(":", "-")
)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    server: LiveServer, scoped_keys: ScopedKeys, key: str
) -> None:
    """15 examples per operation with a key of every scope and without a key; 3 with a key of each
    single scope (every operation it lacks answers 403, the ones it has run for real)."""
    assert SCHEMATHESIS, "schemathesis is a dev dependency: scripts/install.sh installs it"
    single = key in scoped_keys.keys
    command = [
        SCHEMATHESIS, "run", server.url + "/openapi.json",
        "--max-examples", "3" if single else "15", "--generation-deterministic", "--no-color",
        "--checks", "not_a_server_error,response_schema_conformance",
    ]  # fmt: skip
    if key == "every-scope":
        command += ["--header", f"X-API-Key: {API_KEYS[0]}"]
    elif single:
        command += ["--header", f"X-API-Key: {scoped_keys.keys[key]}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed(.*)", result.stdout)
    assert counts and int(counts[1]) > (15 if single else 50), result.stdout
    assert counts[1] == counts[2] and "failed" not in counts[3], result.stdout


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(0.0),
)
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=5), numbers)
rows = st.one_of(
    st.lists(numbers, min_size=0, max_size=3),
    st.lists(numbers, min_size=127, max_size=129),
    st.lists(st.one_of(numbers, junk, st.lists(numbers, max_size=2)), min_size=1, max_size=130),
    junk,
)
matrices = st.one_of(
    st.lists(rows, min_size=0, max_size=4), junk, st.lists(st.lists(rows, max_size=2), max_size=2)
)
model_ids = st.sampled_from(["arcface-mbf128", "sirius-mbf192", "no-such-model", "", "yunet"])


def _dumps(body: object) -> str:
    """JSON with NaN/Infinity literals (what a careless client sends); huge ints stay as written."""
    return json.dumps(body, allow_nan=True)


def _post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    return client.post(path, content=_dumps(body), headers={"content-type": "application/json"})


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(
    source=model_ids,
    target=model_ids,
    embeddings=matrices,
    extra=st.dictionaries(st.text(max_size=3), junk, max_size=1),
)
def test_translate_rejects_bad_bodies_with_4xx(
    client: httpx.Client, source: str, target: str, embeddings: object, extra: dict
) -> None:
    body = {"source": source, "target": target, "embeddings": embeddings, **extra}
    response = _post(client, "/translate", body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
    else:  # accepted: then every row was a finite, non-zero vector of the right length
        out = response.json()["embeddings"]
        assert all(math.isclose(sum(v * v for v in row), 1.0, rel_tol=1e-4) for row in out)


sides = (
    st.fixed_dictionaries({"model": model_ids, "embedding": rows})
    | junk
    | st.fixed_dictionaries({"model": model_ids, "image": st.text(max_size=8)})
)
pairs = st.fixed_dictionaries({"a": sides, "b": sides}) | junk


@FUZZ
@given(
    batch=st.one_of(st.lists(pairs, max_size=3), junk),
    far=st.one_of(st.none(), numbers),
    threshold=st.one_of(st.none(), numbers),
)
def test_verify_rejects_bad_bodies_with_4xx(
    client: httpx.Client, batch: object, far: object, threshold: object
) -> None:
    body: dict[str, object] = {"pairs": batch}
    if far is not None:
        body["far"] = far
    if threshold is not None:
        body["threshold"] = threshold
    response = _post(client, "/verify", body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")


def test_a_huge_batch_is_refused_with_413(client: httpx.Client) -> None:
    row = [0.1] * 128
    body = {"source": "arcface-mbf128", "target": "sirius-mbf192", "embeddings": [row] * 2001}
    response = _post(client, "/translate", body)
    assert response.status_code == 413 and response.json()["type"].endswith("batch-too-large")
