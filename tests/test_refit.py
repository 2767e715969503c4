"""Refitting on a deployment's pairs: held-out subjects stay held out, the written map is what was
scored, and a refit that is not better leaves the bank alone. Real embeddings of an LFW subset (three
recognizers) play the deployment's recorded pairs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facebridge.config import Settings
from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.population import Population, measure, pair_scores, verification_pairs
from facebridge.evaluation.population_study import CALIBRATION_IMPOSTORS
from facebridge.linalg import l2_normalize
from facebridge.mapping.bank import MappingBank, apply_map_tensors
from facebridge.mapping.mapfile import SpaceRef, map_filename
from facebridge.mapping.methods import make_map
from facebridge.mapping.refit import (
    DeploymentAdapter,
    FittedTensors,
    RefitPlan,
    deployment_population,
    refit,
    subject_sides,
)
from facebridge.pairs.rows import PairRow
from facebridge.pairs.store import PairStore
from facebridge.refit_history import read_records

from .conftest import MODELS_DIR

ARC, SIR = "arcface-mbf128", "sirius-mbf192"


def _deployment(caches: dict[str, EmbeddingCache]) -> Population:
    both = caches[ARC].detected & caches[SIR].detected
    subjects = np.char.add("subject-", caches[ARC].identities[both].astype(str))
    return deployment_population(
        subjects, ARC, caches[ARC].embeddings[both], SIR, caches[SIR].embeddings[both]
    )


def _refs(deployment: Population) -> tuple[SpaceRef, SpaceRef]:
    return (
        SpaceRef(model=ARC, dim=deployment.clean[ARC].shape[1], sha256="a" * 64),
        SpaceRef(model=SIR, dim=deployment.clean[SIR].shape[1], sha256="b" * 64),
    )


def test_subjects_keep_their_side_as_pairs_accumulate() -> None:
    plan = RefitPlan(validation=0.2, heldout=0.2, seed=3)
    early = np.array([f"s{i}" for i in range(200)])
    later = np.concatenate([early, np.array([f"s{i}" for i in range(200, 400)]), early[:50]])
    first, second = subject_sides(early, plan), subject_sides(later, plan)
    np.testing.assert_array_equal(second[:200], first)  # nobody changes side when more pairs arrive
    np.testing.assert_array_equal(second[400:], first[:50])  # a subject's new captures join its side
    shares = np.bincount(second[:400], minlength=3) / 400
    assert 0.1 < shares[1] < 0.3 and 0.1 < shares[2] < 0.3


def test_refit_never_fits_on_held_out_subjects(subset_caches: dict[str, EmbeddingCache]) -> None:
    deployment = _deployment(subset_caches)
    plan = RefitPlan(methods=("ridge",), seed=0)
    held = subject_sides(deployment.identities, plan) == 2
    assert held.any()
    poisoned = Population(
        deployment.name,
        deployment.paths,
        deployment.identities,
        {ARC: deployment.clean[ARC], SIR: deployment.clean[SIR].copy()},
    )
    # if the held-out subjects' targets reached the fit, this noise would change the map
    poisoned.clean[SIR][held] = l2_normalize(np.random.default_rng(0).normal(size=(held.sum(), 192)))
    clean = refit(deployment, *_refs(deployment), plan=plan)
    dirty = refit(poisoned, *_refs(poisoned), plan=plan)
    np.testing.assert_allclose(dirty.fitted.weight, clean.fitted.weight, atol=1e-6)
    assert dirty.after.accuracy < clean.after.accuracy  # ... while the held-out score sees it
    assert clean.split.heldout_subjects == len(np.unique(deployment.identities[held]))


def test_refit_scores_the_map_it_writes_and_beats_a_poor_current_map(
    subset_caches: dict[str, EmbeddingCache],
) -> None:
    deployment = _deployment(subset_caches)
    rng = np.random.default_rng(1)
    # a poor current map: ridge fitted on a fifth of the pairs with their targets shuffled within rows
    poor = make_map("ridge").fit(deployment.clean[ARC][::5], rng.permutation(deployment.clean[SIR][::5]))
    plan = RefitPlan(methods=("ridge",), adapter_alphas=(3.0,), seed=0)
    result = refit(deployment, *_refs(deployment), current=FittedTensors.of(poor), plan=plan)
    assert result.before is not None and result.improved
    assert result.after.accuracy > result.before.accuracy
    assert set(result.selection) == {"ridge", "adapter over the current map, alpha 3"}
    assert result.calibration.thresholds["far_1e-3"].far_range is not None
    fitted = result.fitted
    held = deployment.subset(subject_sides(deployment.identities, plan) == 2)
    pairs = verification_pairs(held.identities, CALIBRATION_IMPOSTORS, plan.seed)
    written = l2_normalize(apply_map_tensors(held.clean[ARC], fitted.weight, fitted.bias, fitted.residual))
    rescored = measure(*pair_scores(written.astype(np.float32), held.clean[SIR], pairs))
    assert rescored.accuracy == pytest.approx(result.after.accuracy, abs=1e-4)  # the file is what was scored
    assert fitted.meta.provenance.heldout_identities == result.split.heldout_subjects


def test_too_few_subjects_is_a_clear_error(subset_caches: dict[str, EmbeddingCache]) -> None:
    deployment = _deployment(subset_caches)
    few = deployment.subset(np.isin(deployment.identities, np.unique(deployment.identities)[:3]))
    with pytest.raises(ValueError, match="too few deployment subjects"):
        refit(few, *_refs(few), plan=RefitPlan(methods=("ridge",)))


def test_adapter_folds_into_an_ordinary_map(subset_caches: dict[str, EmbeddingCache]) -> None:
    deployment = _deployment(subset_caches)
    base = make_map("ridge").fit(deployment.clean[ARC], deployment.clean[SIR])
    adapter = DeploymentAdapter(base.coef_, base.intercept_, None, alpha=3.0).fit(
        deployment.clean[ARC][:200], deployment.clean[SIR][:200]
    )
    x = deployment.clean[ARC][200:220]
    np.testing.assert_allclose(
        adapter.transform(x), apply_map_tensors(x, adapter.coef_, adapter.intercept_), rtol=1e-6
    )


def test_refit_command_reads_the_store_and_writes_only_a_better_map(
    subset_caches: dict[str, EmbeddingCache], maps_dir: Path, tmp_path: Path
) -> None:
    """`facebridge refit` on a real SQLite pair store: --dry-run writes nothing; a refit better than the
    bank's composed-only path is written and loads in a fresh bank."""
    manifest = Settings(models_dir=MODELS_DIR).load_manifest()
    pins: dict[str, str] = {m: manifest.get(m).sha256 for m in (ARC, SIR)}  # type: ignore[union-attr,misc]
    deployment = _deployment(subset_caches)
    store = PairStore.open(tmp_path / "pairs.sqlite")
    rows = [
        PairRow(subject, ARC, pins[ARC], a, SIR, pins[SIR], b)
        for subject, a, b in zip(
            deployment.identities.tolist(), deployment.clean[ARC], deployment.clean[SIR], strict=True
        )
    ]
    rows.append(
        PairRow("stale", ARC, "0" * 64, rows[0].source_embedding, SIR, pins[SIR], rows[0].target_embedding)
    )
    assert store.record(rows) == len(rows)
    store.close()
    out = tmp_path / "maps"
    shutil.copytree(maps_dir, out)
    command = [
        sys.executable, "-m", "facebridge", "refit", "--source", ARC, "--target", SIR,
        "--pairs", str(tmp_path / "pairs.sqlite"), "--method", "ridge",
        "--models-dir", str(MODELS_DIR), "--mappings-dir", str(out),
    ]  # fmt: skip
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr
    assert "skipping 1 of" in dry.stderr and "(--dry-run)" in dry.stdout
    assert not (out / map_filename(ARC, SIR)).exists()
    assert read_records(out) == []  # a dry run is not a refit of record
    real = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert real.returncode == 0, real.stderr
    assert "held-out deployment subjects" in real.stdout and "wrote" in real.stdout, real.stdout
    bank = MappingBank.load(out, manifest)
    assert not bank.refused and (ARC, SIR) in bank.maps
    refitted = bank.maps[(ARC, SIR)]
    assert refitted.meta.provenance.dataset == "deployment"
    confidence = refitted.confidence(deployment.clean[ARC][:5])  # the predictor travelled with the map
    assert confidence is not None and confidence.shape == (5,)
    [record] = read_records(out)  # the refit history GET /refits serves
    assert (record.source, record.target, record.written) == (ARC, SIR, True)
    assert record.file == map_filename(ARC, SIR)
    assert record.tensor_sha256 == refitted.meta.tensor_sha256 and record.after.genuine_pairs > 0
