"""Cohorts, AS-norm and calibrations in force: files checked on load, scores equal to numpy, answers that
say which cohort and calibration judged them, a deployment calibration over the shipped one; on real
LFW embeddings, real fitted maps and a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from facebridge.bridge import Bridge
from facebridge.cohort.asnorm import DEFAULT_DEVIATION_POWER, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE
from facebridge.cohort.calibration_set import load_calibration_set, save_calibration_set
from facebridge.cohort.cohortfile import (
    Cohort,
    CohortError,
    load_cohort,
    make_cohort,
    sample_rows,
    save_cohort,
)
from facebridge.cohort.deployment import calibrate_population
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.population import Population
from facebridge.evaluation.thresholds import (
    Comparison,
    PopulationSplit,
    calibration_set,
    comparison_scores,
    side_stats,
    split_population,
)
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.compare import both_maps_plan, plan_comparison
from facebridge.mapping.fitting import fit_map, pair_caches
from facebridge.mapping.mapfile import SpaceRef, map_filename, save_map
from facebridge.vision.manifest import load_manifest

from .conftest import API_KEYS, MODELS_DIR, SUBSET_MODELS, LiveServer

ARC, FP = "arcface-mbf128", "faceplugin-mbf512"
POWER = DEFAULT_DEVIATION_POWER  # each side's deviation is raised to it (facebridge/cohort/asnorm.py)
MANIFEST = load_manifest(MODELS_DIR / "manifest.toml")


@pytest.fixture(scope="module")
def population(subset_caches: dict[str, EmbeddingCache]) -> Population:
    first = subset_caches[SUBSET_MODELS[0]]
    clean = {
        m: (c.embeddings / np.linalg.norm(c.embeddings, axis=1, keepdims=True)).astype(np.float32)
        for m, c in subset_caches.items()
    }
    return Population("lfw-subset", first.paths, first.identities, clean)


@pytest.fixture(scope="module")
def split(population: Population) -> PopulationSplit:
    return split_population(population, seed=0, max_cohort=400)


@pytest.fixture(scope="module")
def served(maps_dir: Path, split: PopulationSplit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the test bank with a shipped normalised calibration set, and a cohort folder holding
    arcface and faceplugin cohorts of the people the calibration did not score."""
    root = tmp_path_factory.mktemp("scoring")
    shutil.copytree(maps_dir, root / "mappings")
    bank = MappingBank.load(root / "mappings", MANIFEST)
    comps = [Comparison(ARC, ARC), Comparison(FP, FP), Comparison(ARC, FP)]
    scores = {(c, split.name): comparison_scores(bank, c, split, side_stats(bank, c, split)) for c in comps}
    shipped = calibration_set(
        bank, [split], scores, "shipped", DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE, include_raw=False
    )
    save_calibration_set(root / "mappings" / "calibrations" / "test.calibration.json", shipped)
    for model in (ARC, FP):
        cohort = make_cohort(split.cohort.clean[model], bank.spaces[model], "npy", f"lfw subset ({model})")
        save_cohort(root / "cohorts" / f"lfw-{model}", cohort)
    return root


def _bank(root: Path, deployment: Path | None = None) -> MappingBank:
    return MappingBank.load(root / "mappings", MANIFEST, root / "cohorts", deployment)


def _top_k(x: np.ndarray, cohort: np.ndarray) -> tuple[float, float]:
    """Mean and deviation of the top 5% (10 to 100) of `x`'s scores against `cohort`, in plain numpy."""
    k = int(np.clip(round(0.05 * len(cohort)), 10, 100))
    top = np.sort(cohort @ x)[-k:]
    return float(top.mean()), float(top.std())


@pytest.mark.fast
def test_both_sides_stats_in_one_pass_are_the_same_bits() -> None:
    """top_k_stats_of_sides (one partition for both sides of a pair) equals two top_k_stats calls."""
    from facebridge.cohort.asnorm import top_k_stats, top_k_stats_of_sides

    rng = np.random.default_rng(3)
    rows = lambda n, d: rng.normal(size=(n, d)).astype(np.float32)  # noqa: E731
    a, b = rows(3, 256), rows(3, 256)
    for cohort_a, cohort_b in ((rows(1000, 256), rows(1000, 256)), (rows(1000, 256), rows(700, 256))):
        one_pass = top_k_stats_of_sides(a, cohort_a, b, cohort_b, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE)
        apart = (
            top_k_stats(a, cohort_a, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
            top_k_stats(b, cohort_b, DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE),
        )
        for got, expected in zip(one_pass, apart, strict=True):
            np.testing.assert_array_equal(got.mean, expected.mean)
            np.testing.assert_array_equal(got.std, expected.std)


def test_cohort_file_round_trip(split: PopulationSplit, tmp_path: Path) -> None:
    space = SpaceRef(model=ARC, dim=128, sha256=MANIFEST.get(ARC).sha256)  # type: ignore[union-attr,arg-type]
    cohort = make_cohort(split.cohort.clean[ARC], space, "npy", "templates.npy", max_size=300, seed=3)
    written = save_cohort(tmp_path / "gallery.safetensors", cohort)
    assert written.name == "gallery.cohort.safetensors"
    loaded = load_cohort(written)
    np.testing.assert_array_equal(loaded.templates, cohort.templates)
    assert loaded.meta == cohort.meta and loaded.id == "gallery" and len(loaded) == 300
    assert loaded.meta.provenance.sampled and loaded.meta.provenance.rows_read == len(split.cohort)
    # each template's person travels with it, through the sample and the file
    people = [str(i) for i in split.cohort.identities]
    grouped = make_cohort(
        split.cohort.clean[ARC], space, "photos", "folder", max_size=300, seed=3, groups=people
    )
    np.testing.assert_array_equal(grouped.templates, cohort.templates)
    kept = sample_rows(len(people), 300, 3)
    reloaded = load_cohort(save_cohort(tmp_path / "folder", grouped))
    assert reloaded.meta.groups == [people[i] for i in kept]
    assert list(loaded.groups[:2]) == ["#0", "#1"]  # without them, every row its own person
    with pytest.raises(CohortError, match="groups for"):
        make_cohort(split.cohort.clean[ARC], space, "photos", "folder", groups=people[:-1])
    with pytest.raises(CohortError, match="at least 50"):
        make_cohort(split.cohort.clean[ARC][:20], space, "npy", "few.npy")
    with pytest.raises(CohortError, match="dim 128"):
        make_cohort(split.cohort.clean[ARC], space.model_copy(update={"dim": 192}), "npy", "x.npy")


def test_bad_cohort_files_are_refused_while_the_rest_serves(served: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(served, root)
    good = load_cohort(root / "cohorts" / f"lfw-{ARC}.cohort.safetensors")
    cohorts = root / "cohorts"
    # corrupt: the bytes of a real file cut in half
    data = (cohorts / f"lfw-{FP}.cohort.safetensors").read_bytes()
    (cohorts / "cut.cohort.safetensors").write_bytes(data[: len(data) // 2])
    # edited: one template changed after the digest was recorded
    edited = good.templates.copy()
    edited[0, 0] += 0.5
    save_cohort(cohorts / "edited", Cohort(good.meta, edited))
    # another model's weights under arcface's id
    other = make_cohort(good.templates, good.meta.space.model_copy(update={"sha256": "ab" * 32}), "npy", "x")
    save_cohort(cohorts / "other-weights", other)
    # the wrong dimension: 128-d templates declared as a 192-d space
    wrong = Cohort(
        good.meta.model_copy(update={"space": good.meta.space.model_copy(update={"dim": 192})}),
        good.templates,
    )
    save_cohort(cohorts / "wrong-dim", wrong)
    bank = _bank(root)
    reasons = {r.file: r.reason for r in bank.refused}
    assert (
        "unreadable" in reasons["cut.cohort.safetensors"]
        or "safetensors" in reasons["cut.cohort.safetensors"]
    )
    assert "sha256" in reasons["edited.cohort.safetensors"]
    assert "fitted for weights" in reasons["other-weights.cohort.safetensors"]
    assert "dim 192" in reasons["wrong-dim.cohort.safetensors"]
    assert set(bank.scoring.cohorts) == {ARC, FP} and len(bank.maps) == 2
    result = Bridge(bank).verify((ARC, good.templates[0]), (FP, np.ones(512, np.float32)))
    assert result.normalization is not None and result.calibration.units == "as-norm"


def test_normalisation_equals_numpy(served: Path, split: PopulationSplit) -> None:
    bank = _bank(served)
    arc_cohort, fp_cohort = bank.scoring.cohorts[ARC].templates, bank.scoring.cohorts[FP].templates
    a, b = split.scored.clean[ARC][:3], split.scored.clean[FP][3:6]
    bridge = Bridge(bank)
    # same space: both sides against arcface's cohort
    native = bridge.verify_pairs([((ARC, a[i]), (ARC, a[(i + 1) % 3])) for i in range(3)])
    for i, result in enumerate(native):
        x, y = a[i], a[(i + 1) % 3]
        raw = float(x @ y)
        (mx, sx), (my, sy) = _top_k(x, arc_cohort), _top_k(y, arc_cohort)
        expected = 0.5 * ((raw - mx) / sx**POWER + (raw - my) / sy**POWER)
        assert result.raw_score == pytest.approx(raw, abs=1e-5)
        assert result.normalized_score == pytest.approx(expected, abs=1e-4)
        assert result.score == result.normalized_score and result.match == (expected >= result.threshold)
    # across models: arcface mapped into faceplugin's space is measured against faceplugin's cohort,
    # the native faceplugin side against arcface's cohort carried through the same map
    path = bank.find_path(ARC, FP)
    assert path is not None
    carried = path.apply(arc_cohort)
    cross = bridge.verify_pairs([((ARC, a[i]), (FP, b[i])) for i in range(3)])
    for i, result in enumerate(cross):
        mapped = path.apply(a[i : i + 1])[0]
        raw = float(mapped @ b[i])
        (ma, sa), (mb, sb) = _top_k(mapped, fp_cohort), _top_k(b[i], carried)
        assert result.raw_score == pytest.approx(raw, abs=1e-5)
        expected = 0.5 * ((raw - ma) / sa**POWER + (raw - mb) / sb**POWER)
        assert result.normalized_score == pytest.approx(expected, abs=1e-4)
        assert result.normalization is not None
        sides = {(c.model, c.side, tuple(c.via)) for c in result.normalization.cohorts}
        assert sides == {(FP, "a", ()), (ARC, "b", (f"{ARC}->{FP}",))}
        assert result.normalization.top_k_share == DEFAULT_TOP_K_SHARE
        assert result.normalization.deviation_power == POWER
        assert {c.top_k for c in result.normalization.cohorts} == {round(0.05 * len(arc_cohort))}
    # the rules read the loaded and the carried cohorts as stored (column by column), not copies
    same = bank.scoring.rule(bank, plan_comparison(bank, ARC, ARC))
    across = bank.scoring.rule(bank, plan_comparison(bank, ARC, FP))
    assert arc_cohort.flags.f_contiguous and same.cohort_a is arc_cohort and same.cohort_b is arc_cohort
    assert across.cohort_a is bank.scoring.cohorts[FP].templates
    assert across.cohort_b is not None and across.cohort_b.flags.f_contiguous


def test_without_a_cohort_the_answer_says_the_threshold_is_the_shipped_populations(served: Path) -> None:
    bank = MappingBank.load(served / "mappings", MANIFEST)  # no cohort folder
    x = bank.scoring  # the shipped set is loaded, but no cohort serves any comparison
    assert x.sets and not x.cohorts
    template = np.ones(128, np.float32)
    result = Bridge(bank).verify((ARC, template), (ARC, template))
    assert result.normalized_score is None and result.normalization is None
    assert result.calibration.units == "cosine" and result.calibration.source == "shipped"
    assert "no cohort loaded for space arcface-mbf128" in result.calibration.note
    assert "lfw-subset" in result.calibration.note  # the data the raw threshold comes from
    off = Bridge(_bank(served)).verify((ARC, template), (ARC, template), normalization="none")
    assert off.calibration.units == "cosine" and "off by request" in off.calibration.note


def test_deployment_calibration_overrides_the_shipped_one(
    served: Path, population: Population, tmp_path: Path
) -> None:
    bank = _bank(served)
    deployment = calibrate_population(bank, population, [ARC, FP], seed=1, max_cohort=400)
    file = save_calibration_set(tmp_path / "site.calibration.json", deployment)
    assert load_calibration_set(file) == deployment
    assert set(deployment.entries) == {ARC, FP, f"{ARC}->{FP}"}
    entry = deployment.entries[f"{ARC}->{FP}"]
    assert (
        entry.raw is not None
        and entry.normalized is not None
        and entry.pins["map"] == bank.maps[(ARC, FP)].meta.tensor_sha256
    )
    shipped_answer = Bridge(bank).verify((ARC, population.clean[ARC][0]), (FP, population.clean[FP][1]))
    assert shipped_answer.calibration.source == "shipped"
    overridden = _bank(served, file)
    answer = Bridge(overridden).verify((ARC, population.clean[ARC][0]), (FP, population.clean[FP][1]))
    assert answer.calibration.source == "deployment" and answer.calibration.file == "site.calibration.json"
    assert answer.threshold == entry.normalized.thresholds["far_1e-3"].threshold
    raw = Bridge(overridden).verify(
        (ARC, population.clean[ARC][0]), (FP, population.clean[FP][1]), normalization="none"
    )
    assert entry.raw is not None
    assert (
        raw.calibration.source == "deployment" and raw.threshold == entry.raw.thresholds["far_1e-3"].threshold
    )
    assert (
        raw.calibration.note
        == "raw cosine with the deployment's own calibration (normalisation off by request)"
    )
    # an entry measured with other map tensors is never applied
    stale = deployment.model_copy(deep=True)
    stale.entries[f"{ARC}->{FP}"].pins["map"] = "0" * 64
    stale_file = save_calibration_set(tmp_path / "stale.calibration.json", stale)
    answer = Bridge(_bank(served, stale_file)).verify(
        (ARC, population.clean[ARC][0]), (FP, population.clean[FP][1])
    )
    assert answer.calibration.source == "shipped"


def test_service_states_cohorts_calibration_and_drift(
    served: Path, population: Population, tmp_path: Path
) -> None:
    bank = _bank(served)
    deployment = save_calibration_set(
        tmp_path / "site.calibration.json", calibrate_population(bank, population, [ARC, FP], seed=1)
    )
    cohorts = tmp_path / "cohorts"
    shutil.copytree(served / "cohorts", cohorts)
    live = LiveServer(
        {
            "FACEBRIDGE_MODELS_DIR": str(MODELS_DIR),
            "FACEBRIDGE_PROVIDERS": "cpu",
            "FACEBRIDGE_LOAD_MODELS": '["arcface-mbf128","yunet"]',
            "FACEBRIDGE_MAPPINGS_DIR": str(served / "mappings"),
            "FACEBRIDGE_COHORT_DIR": str(cohorts),
            "FACEBRIDGE_CALIBRATION_FILE": str(deployment),
            "FACEBRIDGE_API_KEYS": API_KEYS[0],
            "FACEBRIDGE_LOG_LEVEL": "info",
        },
        tmp_path / "server.log",
    )
    try:
        live.wait_ready()
        with httpx.Client(base_url=live.url, headers={"X-API-Key": API_KEYS[0]}, timeout=30) as http:
            a, b = population.clean[ARC][0], population.clean[FP][5]
            body = {
                "pair": {
                    "a": {"model": ARC, "embedding": a.tolist()},
                    "b": {"model": FP, "embedding": b.tolist()},
                }
            }
            result = http.post("/verify", json=body).json()["results"][0]
            assert result["calibration"]["source"] == "deployment"
            assert (
                result["calibration"]["file"] == "site.calibration.json"
                and result["calibration"]["units"] == "as-norm"
            )
            assert (
                result["score"] == result["normalized_score"]
                and result["raw_score"] != result["normalized_score"]
            )
            assert {c["id"] for c in result["normalization"]["cohorts"]} == {f"lfw-{ARC}", f"lfw-{FP}"}
            assert result["calibration_data"]["dataset"] == population.name
            plain = http.post("/verify", json={**body, "normalization": "none"}).json()["results"][0]
            assert plain["normalized_score"] is None and plain["calibration"]["units"] == "cosine"
            assert plain["raw_score"] == pytest.approx(result["raw_score"], abs=1e-6)
            report = http.get("/calibration").json()
            assert {c["id"] for c in report["cohorts"]} == {f"lfw-{ARC}", f"lfw-{FP}"}
            assert {s["kind"] for s in report["calibration_sets"]} == {"shipped", "deployment"}
            drift = {(d["comparison"], d["operating_point"]): d for d in report["drift"]}
            assert (ARC, "far_1e-3") in drift and (f"{ARC}->{FP}", "far_1e-3") in drift
            in_force = {c["comparison"]: c for c in http.get("/mappings").json()["in_force"]}
            assert (
                in_force[f"{ARC}->{FP}"]["units"] == "as-norm"
                and in_force[f"{ARC}->{FP}"]["source"] == "deployment"
            )
            from facebridge.client import Client

            with Client(live.url, api_key=API_KEYS[0]) as typed:
                answer = typed.verify(a, ARC, b, FP, normalization="none").results[0]
                assert answer.calibration.units == "cosine" and answer.normalized_score is None
                assert {c.id for c in typed.calibration().cohorts} == {f"lfw-{ARC}", f"lfw-{FP}"}
            metrics = http.get("/metrics").text
            assert f'facebridge_estimated_far{{comparison="{ARC}",operating_point="far_1e-3"}}' in metrics
            # a corrupt cohort dropped in and a reload: refused with its reason, the rest keeps serving
            (cohorts / "broken.cohort.safetensors").write_bytes(b"\x00" * 64)
            reload = http.post("/admin/reload-mappings")
            assert reload.status_code == 200, reload.text
            report = http.get("/calibration").json()
            assert any(r.startswith("broken.cohort.safetensors") for r in report["refused"])
            again = http.post("/verify", json=body).json()["results"][0]
            assert again["normalized_score"] == pytest.approx(result["normalized_score"], abs=1e-6)
        assert "drift:" in live.log() or all(
            not d["off"] for d in drift.values() if d["operating_point"] == "far_1e-3"
        )
    finally:
        live.stop()


def test_calibrate_command_on_a_folder_of_photos(tmp_path: Path) -> None:
    """`facebridge calibrate --population` on real photos (12 people of RMFD) writes a deployment set
    the bank loads; a folder of too few people is one line on stderr and exit 2."""
    import subprocess
    import sys

    source = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "rmfd-dev"
    if not source.is_dir():
        pytest.skip(f"no {source}")
    people = tmp_path / "people"
    for person in sorted(p for p in source.iterdir() if p.is_dir())[:12]:
        shutil.copytree(person, people / person.name, ignore=shutil.ignore_patterns("SOURCE.txt"))
    out = tmp_path / "site.calibration.json"
    command = [sys.executable, "-m", "facebridge", "calibrate", "--population", str(people)]
    options = [
        "--model",
        ARC,
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--models-dir",
        str(MODELS_DIR),
    ]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    written = load_calibration_set(out)
    assert written.kind == "deployment" and set(written.entries) == {ARC}
    assert written.populations[0].identities == 6 and written.entries[ARC].normalized is not None
    few = tmp_path / "few"
    for person in sorted(people.iterdir())[:3]:
        shutil.copytree(person, few / person.name)
    refused = subprocess.run([*command[:-1], str(few), *options], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "at least 10" in refused.stderr


@pytest.fixture(scope="module")
def served_both(
    served: Path,
    split: PopulationSplit,
    subset_caches: dict[str, EmbeddingCache],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """`served` with the reverse map faceplugin→arcface fitted here and a shipped set that also
    calibrates arcface and faceplugin through both maps (raw and normalised)."""
    root = tmp_path_factory.mktemp("both-maps")
    shutil.copytree(served, root, dirs_exist_ok=True)
    fitted = fit_map(pair_caches(subset_caches[FP], subset_caches[ARC], "lfw-subset"), "ridge")
    save_map(root / "mappings" / map_filename(FP, ARC), fitted.meta, fitted.weight, fitted.bias, None, None)
    bank = MappingBank.load(root / "mappings", MANIFEST)
    comps = [Comparison(ARC, ARC), Comparison(FP, FP), Comparison(ARC, FP), Comparison(ARC, FP, True)]
    scores = {(c, split.name): comparison_scores(bank, c, split, side_stats(bank, c, split)) for c in comps}
    shipped = calibration_set(
        bank, [split], scores, "shipped", DEFAULT_TOP_K, DEFAULT_TOP_K_SHARE, include_raw=False
    )
    save_calibration_set(root / "mappings" / "calibrations" / "test.calibration.json", shipped)
    return root


def test_both_maps_score_equals_numpy_and_says_so(served_both: Path, split: PopulationSplit) -> None:
    """Across arcface and faceplugin with maps both ways: the mean of the two cosines, AS-normalised
    with each model's cohort carried into the joined rows, as numpy computes it from the map files."""
    bank = _bank(served_both)
    forward, reverse = bank.find_path(ARC, FP), bank.find_path(FP, ARC)
    assert forward is not None and reverse is not None
    entry = bank.scoring.sets["calibrations/test.calibration.json"].entries[f"{ARC}->{FP}+{FP}->{ARC}"]
    assert entry.raw is not None and entry.normalized is not None
    assert entry.pins["reverse map"] == bank.maps[(FP, ARC)].meta.tensor_sha256
    arc_cohort, fp_cohort = bank.scoring.cohorts[ARC].templates, bank.scoring.cohorts[FP].templates
    half = np.float32(1 / np.sqrt(2))
    # each side as the joined rows: [in faceplugin's space, in arcface's space] / sqrt(2)
    arc_kind = np.hstack([forward.apply(arc_cohort), arc_cohort]) * half
    fp_kind = np.hstack([fp_cohort, reverse.apply(fp_cohort)]) * half
    a, b = split.scored.clean[ARC][:3], split.scored.clean[FP][3:6]
    results = Bridge(bank).verify_pairs([((ARC, a[i]), (FP, b[i])) for i in range(3)])
    flipped = Bridge(bank).verify_pairs([((FP, b[i]), (ARC, a[i])) for i in range(3)])
    for i, result in enumerate(results):
        raw = 0.5 * float(forward.apply(a[i : i + 1])[0] @ b[i] + a[i] @ reverse.apply(b[i : i + 1])[0])
        x = np.hstack([forward.apply(a[i : i + 1])[0], a[i]]) * half
        y = np.hstack([b[i], reverse.apply(b[i : i + 1])[0]]) * half
        (mx, sx), (my, sy) = _top_k(x, fp_kind), _top_k(y, arc_kind)
        assert result.comparison == "both-maps" and result.maps == [f"{ARC}->{FP}", f"{FP}->{ARC}"]
        assert result.raw_score == pytest.approx(raw, abs=1e-5)
        expected = 0.5 * ((raw - mx) / sx**POWER + (raw - my) / sy**POWER)
        assert result.normalized_score == pytest.approx(expected, abs=1e-4)
        assert result.calibration.units == "as-norm"
        assert result.threshold == entry.normalized.thresholds["far_1e-3"].threshold
        assert result.normalization is not None
        sides = {(c.model, c.side, tuple(c.via)) for c in result.normalization.cohorts}
        assert sides == {(FP, "a", (f"{FP}->{ARC}",)), (ARC, "b", (f"{ARC}->{FP}",))}
        # the same pair given the other way round: the same scores, the sides swapped
        assert flipped[i].raw_score == pytest.approx(result.raw_score, abs=1e-5)
        assert flipped[i].normalized_score == pytest.approx(result.normalized_score, abs=1e-4)
    both = both_maps_plan(bank, ARC, FP)
    assert both is not None
    rule = bank.scoring.rule(bank, both)
    assert rule.cohort_a is not None and rule.cohort_a.flags.f_contiguous
    assert rule.cohort_b is not None and rule.cohort_b.flags.f_contiguous
    in_force = {c.comparison: c for c in Bridge(bank).comparisons_in_force()}
    listed = in_force[f"{ARC}->{FP}+{FP}->{ARC}"]
    assert listed.units == "as-norm" and listed.cohorts == sorted([f"lfw-{ARC}", f"lfw-{FP}"])


def test_both_maps_gives_way_to_a_named_space_or_threshold_and_without_cohorts_is_raw(
    served_both: Path, served: Path, split: PopulationSplit
) -> None:
    a, b = split.scored.clean[ARC][0], split.scored.clean[FP][1]
    bank = _bank(served_both)
    assert Bridge(bank).verify((ARC, a), (FP, b), space=FP).comparison == "cross"
    assert Bridge(bank).verify((ARC, a), (FP, b), threshold=0.3).comparison == "cross"
    # no calibration for both maps (the set of `served` has none): through the one map, as before
    assert Bridge(_bank(served)).verify((ARC, a), (FP, b)).comparison == "cross"
    # no cohort: the shipped set's raw thresholds for both maps (pooled over its populations) judge
    # nothing; the one map answers with its map file's thresholds, and no both-maps comparison is in force
    no_cohort = MappingBank.load(served_both / "mappings", MANIFEST)
    entry = bank.scoring.sets["calibrations/test.calibration.json"].entries[f"{ARC}->{FP}+{FP}->{ARC}"]
    assert entry.raw is not None
    raw = Bridge(no_cohort).verify((ARC, a), (FP, b))
    single = plan_comparison(no_cohort, ARC, FP)
    assert raw.comparison == "cross" and raw.normalization is None and single.calibration is not None
    assert raw.threshold == single.calibration.thresholds["far_1e-3"].threshold
    in_force = {c.comparison for c in Bridge(no_cohort).comparisons_in_force()}
    assert f"{ARC}->{FP}+{FP}->{ARC}" not in in_force and f"{ARC}->{FP}" in in_force


def test_deployment_calibration_covers_both_maps(
    served_both: Path, population: Population, tmp_path: Path
) -> None:
    """A deployment's own calibration through both maps serves, raw where no cohort is loaded: those
    thresholds are its own people's."""
    bank = _bank(served_both)
    deployment = calibrate_population(bank, population, [ARC, FP], seed=1, max_cohort=400)
    key = f"{ARC}->{FP}+{FP}->{ARC}"
    assert key in deployment.entries and deployment.entries[key].raw is not None
    file = save_calibration_set(tmp_path / "site.calibration.json", deployment)
    no_cohort = MappingBank.load(served_both / "mappings", MANIFEST, None, file)
    a, b = population.clean[ARC][0], population.clean[FP][1]
    result = Bridge(no_cohort).verify((ARC, a), (FP, b))
    assert result.comparison == "both-maps" and result.calibration.source == "deployment"
    assert result.calibration.units == "cosine"
    assert result.threshold == deployment.entries[key].raw.thresholds["far_1e-3"].threshold  # type: ignore[union-attr]


def test_the_service_normalises_with_the_power_its_calibration_set_records(
    served: Path, split: PopulationSplit, tmp_path: Path
) -> None:
    """Thresholds hold only for scores normalised as they were calibrated: a set that records a
    deviation power of 0.75 is applied with it, and a set written before the power was recorded (none)
    with plain AS-norm; the answer states which."""
    root = tmp_path / "root"
    shutil.copytree(served, root)
    file = root / "mappings" / "calibrations" / "test.calibration.json"
    calibrations = load_calibration_set(file)
    assert calibrations.normalization is not None and calibrations.normalization.deviation_power == POWER
    x, y = split.scored.clean[ARC][0], split.scored.clean[ARC][1]
    raw = float(x @ y)
    for recorded, applied in ((0.75, 0.75), (None, 1.0)):
        calibrations.normalization.deviation_power = recorded
        save_calibration_set(file, calibrations)
        bank = _bank(root)
        cohort = bank.scoring.cohorts[ARC].templates
        (mx, sx), (my, sy) = _top_k(x, cohort), _top_k(y, cohort)
        result = Bridge(bank).verify((ARC, x), (ARC, y))
        assert result.normalization is not None and result.normalization.deviation_power == applied
        expected = 0.5 * ((raw - mx) / sx**applied + (raw - my) / sy**applied)
        assert result.normalized_score == pytest.approx(expected, abs=1e-4)


def _level(
    a_kind: np.ndarray, b_kind: np.ndarray, groups_a: np.ndarray, groups_b: np.ndarray
) -> tuple[float, float]:
    """The cohorts' own level in plain numpy: each row's top 5% (10 to 100) against the other side's
    rows of other people, mean and deviation averaged over the rows of both sides."""
    means, stds = [], []
    for rows, cols, row_groups, col_groups in (
        (a_kind, b_kind, groups_a, groups_b),
        (b_kind, a_kind, groups_b, groups_a),
    ):
        k = int(np.clip(round(0.05 * len(cols)), 10, 100))
        for x, g in zip(rows, row_groups, strict=True):
            top = np.sort((cols @ x)[col_groups != g].astype(np.float64))[-k:]
            means.append(top.mean())
            stds.append(top.std())
    return float(np.mean(means)), float(np.mean(stds))


@pytest.mark.fast
def test_cohort_level_leaves_out_each_rows_own_person() -> None:
    """cohort_scale equals a loop over rows, and a person's other photos are left out: with them, the
    level of a cohort of near-duplicates would be the duplicates' score."""
    from facebridge.cohort.asnorm import cohort_scale

    rng = np.random.default_rng(5)
    people = rng.normal(size=(120, 64))
    rows = np.repeat(people, 3, axis=0) + 0.3 * rng.normal(size=(360, 64))  # 3 photos a person
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    groups = np.repeat(np.arange(120).astype(str), 3)
    other = (rows + 0.05 * rng.normal(size=rows.shape)).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    got = cohort_scale(rows, other, groups, groups)
    assert (got.mean, got.std) == pytest.approx(_level(rows, other, groups, groups), abs=1e-6)
    rows_alone = np.arange(360).astype(str)
    blind = cohort_scale(rows, other, rows_alone, rows_alone)
    assert blind.mean > got.mean + 0.05  # each row's own person's other photos at the top of its scores


@pytest.mark.fast
def test_tar_gap_interval_resamples_people_not_pairs() -> None:
    """The gap's interval is over people: a shortfall spread thinly over many people is real, the same
    shortfall made by one person's many pairs is not distinguishable from the draw of people."""
    from facebridge.evaluation.thresholds import tar_gap_interval

    people = np.repeat(np.arange(50), 40)  # 50 people, 40 genuine pairs each
    oracle = np.ones(len(people), bool)
    same = tar_gap_interval(oracle, oracle, people)
    assert same == (0.0, 0.0)
    thin = oracle.copy()
    thin[::40] = False  # one pair of every person fails: -2.5 points, everyone alike
    low, high = tar_gap_interval(thin, oracle, people)
    assert high < 0 and low == pytest.approx(-0.025)
    lumped = oracle.copy()
    lumped[:40] = False  # all of one person's pairs fail: -2.0 points, one person
    low, high = tar_gap_interval(lumped, oracle, people)
    assert low < -0.03 and high >= 0  # drawn without that person, the gap is 0
    # pairs alone would call it certain: a pair bootstrap's interval stays far below 0
    pairs = np.arange(len(people))
    assert tar_gap_interval(lumped, oracle, pairs)[1] < -0.01


def test_the_service_blends_with_the_share_its_calibration_set_records(
    served: Path, split: PopulationSplit, tmp_path: Path
) -> None:
    """A set that records a blend is applied with it: AS-norm mixed with the cohorts' own level, as
    numpy computes it from the cohort files, natively and across models; the answer states the share
    and the level. A set without one (written before) is plain AS-norm."""
    from facebridge.cohort.asnorm import DEFAULT_BLEND

    root = tmp_path / "root"
    shutil.copytree(served, root)
    file = root / "mappings" / "calibrations" / "test.calibration.json"
    calibrations = load_calibration_set(file)
    assert calibrations.normalization is not None and calibrations.normalization.blend is None
    calibrations.normalization.blend = DEFAULT_BLEND
    save_calibration_set(file, calibrations)
    bank = _bank(root)
    arc, fp = bank.scoring.cohorts[ARC], bank.scoring.cohorts[FP]
    path = bank.find_path(ARC, FP)
    assert path is not None
    x, y, b = split.scored.clean[ARC][0], split.scored.clean[ARC][1], split.scored.clean[FP][2]
    # same space: both sides against arcface's cohort, its level of itself (rows: each its own person)
    result = Bridge(bank).verify((ARC, x), (ARC, y))
    raw = float(x @ y)
    (mx, sx), (my, sy) = _top_k(x, arc.templates), _top_k(y, arc.templates)
    level_mean, level_std = _level(arc.templates, arc.templates, arc.groups, arc.groups)
    expected = (
        DEFAULT_BLEND * 0.5 * ((raw - mx) / sx + (raw - my) / sy)
        + (1 - DEFAULT_BLEND) * (raw - level_mean) / level_std
    )
    assert result.normalized_score == pytest.approx(expected, abs=1e-4)
    assert result.normalization is not None and result.normalization.blend == DEFAULT_BLEND
    assert (result.normalization.level_mean, result.normalization.level_std) == pytest.approx(
        (level_mean, level_std), abs=1e-5
    )
    assert "blended (0.75)" in result.calibration.note
    # across models: arcface's cohort carried into faceplugin's space against faceplugin's own
    carried = path.apply(arc.templates)
    cross = Bridge(bank).verify((ARC, x), (FP, b))
    mapped = path.apply(x[None])[0]
    raw = float(mapped @ b)
    (ma, sa), (mb, sb) = _top_k(mapped, fp.templates), _top_k(b, carried)
    level_mean, level_std = _level(carried, fp.templates, arc.groups, fp.groups)
    expected = (
        DEFAULT_BLEND * 0.5 * ((raw - ma) / sa + (raw - mb) / sb)
        + (1 - DEFAULT_BLEND) * (raw - level_mean) / level_std
    )
    assert cross.normalized_score == pytest.approx(expected, abs=1e-4)
    # the set written before the blend was recorded: plain AS-norm, and the answer says so
    calibrations.normalization.blend = None
    save_calibration_set(file, calibrations)
    plain = Bridge(_bank(root)).verify((ARC, x), (ARC, y))
    assert plain.normalization is not None and plain.normalization.blend == 1.0
    assert plain.normalization.level_mean is None


def test_merged_sets_keep_normalised_thresholds_only_where_normalised_alike(served_both: Path) -> None:
    """A deployment file written before the blend, merged with a new set (refit, calibrate --pairs):
    the new set's normalisation is the merged one's, and the old entries keep only raw thresholds."""
    from facebridge.cohort.deployment import merge_sets

    old = load_calibration_set(served_both / "mappings" / "calibrations" / "test.calibration.json")
    assert old.normalization is not None and old.normalization.blend is None
    new = old.model_copy(deep=True)
    assert new.normalization is not None
    new.normalization.blend = 0.75
    new.entries = {ARC: new.entries[ARC]}
    merged = merge_sets([old, new])
    assert merged.normalization is not None and merged.normalization.blend == 0.75
    assert merged.entries[ARC] == new.entries[ARC]
    both = f"{ARC}->{FP}+{FP}->{ARC}"
    assert merged.entries[both].normalized is None and merged.entries[both].raw == old.entries[both].raw
    assert FP not in merged.entries  # normalised only, and normalised otherwise: nothing of it holds
