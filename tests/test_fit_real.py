"""Maps fitted on real embeddings of LFW people keep verification accuracy on other people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facebridge.cli import main
from facebridge.config import Settings
from facebridge.embedding_cache import EmbeddingCache
from facebridge.mapping.bank import MappingBank
from facebridge.mapping.fitting import fit_map, pair_caches, split_identities
from facebridge.mapping.mapfile import load_map


def test_map_keeps_accuracy_on_held_out_identities(subset_caches: dict[str, EmbeddingCache]) -> None:
    data = pair_caches(subset_caches["arcface-mbf128"], subset_caches["faceplugin-mbf512"], "lfw-subset")
    assert len(np.unique(data.identities)) == 250
    fitted = fit_map(data, "ridge", heldout_fraction=0.25, seed=0)
    quality = fitted.meta.quality
    provenance = fitted.meta.provenance
    assert provenance.heldout_identities == 62 and provenance.identities == 188
    assert quality.accuracy_target_native is not None and quality.accuracy_cross is not None
    assert quality.accuracy_mapped is not None
    assert quality.accuracy_cross >= quality.accuracy_target_native - 0.02
    assert quality.accuracy_mapped >= quality.accuracy_target_native - 0.02
    assert quality.mean_cosine is not None and quality.mean_cosine > 0.6
    # thresholds are ordered and meet their FAR on the held-out impostors
    cross = fitted.meta.calibration.cross.thresholds  # type: ignore[union-attr]
    assert cross["far_1e-2"].threshold < cross["far_1e-3"].threshold
    assert cross["far_1e-3"].far <= 1e-3


def test_held_out_identities_are_never_fitted(subset_caches: dict[str, EmbeddingCache]) -> None:
    identities = subset_caches["arcface-mbf128"].identities
    fit_rows, held_rows = split_identities(identities, 0.25, 0)
    assert not set(identities[fit_rows]) & set(identities[held_rows])
    assert fit_rows.sum() + held_rows.sum() == len(identities)


@pytest.mark.parametrize("method", ["lstsq", "affine", "procrustes"])
def test_other_methods_fit_real_data(subset_caches: dict[str, EmbeddingCache], method: str) -> None:
    data = pair_caches(subset_caches["sirius-mbf192"], subset_caches["arcface-mbf128"], "lfw-subset")
    quality = fit_map(data, method).meta.quality
    assert quality.accuracy_cross is not None and quality.accuracy_cross > 0.9


def test_fit_cli_from_caches_and_npy(
    subset_caches: dict[str, EmbeddingCache], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    caches = {}
    for model_id in ("arcface-mbf128", "sirius-mbf192"):
        caches[model_id] = tmp_path / f"{model_id}.npz"
        subset_caches[model_id].save(caches[model_id])
    out = tmp_path / "maps"
    assert (
        main(
            [
                "fit",
                "--source-cache",
                str(caches["arcface-mbf128"]),
                "--target-cache",
                str(caches["sirius-mbf192"]),
                "--method",
                "affine",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    loaded = load_map(out / "arcface-mbf128__sirius-mbf192.safetensors")
    assert loaded.meta.method == "affine" and loaded.weight.shape == (128, 192)
    assert "cross" in capsys.readouterr().out

    np.save(tmp_path / "a.npy", subset_caches["sirius-mbf192"].embeddings)
    np.save(tmp_path / "b.npy", subset_caches["arcface-mbf128"].embeddings)
    assert (
        main(
            [
                "fit",
                "--source-npy",
                str(tmp_path / "a.npy"),
                "--target-npy",
                str(tmp_path / "b.npy"),
                "--source-model",
                "sirius-mbf192",
                "--target-model",
                "arcface-mbf128",
                "--alpha",
                "0.1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    meta = load_map(out / "sirius-mbf192__arcface-mbf128.safetensors").meta
    assert meta.calibration is None and meta.quality.accuracy_cross is None  # no labels: no verification
    assert meta.fitted["alpha_"] == 0.1


def test_fit_offers_every_method_a_map_file_holds_and_the_banks_selection() -> None:
    """`fit --method` names every shippable method (named in fit.py so --help imports no numpy) and
    `auto`, whose candidates, validation fraction and impostor sample are the bank's."""
    from facebridge.cli.fit import AUTO, FIT_METHODS
    from facebridge.evaluation.population_study import VALIDATION_IMPOSTORS
    from facebridge.mapping.bank_fit import BankRecipe
    from facebridge.mapping.fitting import SELECTION_CANDIDATES, SELECTION_FRACTION, SELECTION_IMPOSTORS
    from facebridge.mapping.methods import SHIPPABLE

    assert sorted(FIT_METHODS) == sorted([AUTO, *SHIPPABLE]) and len(set(FIT_METHODS)) == len(FIT_METHODS)
    recipe = BankRecipe()
    assert recipe.methods == SELECTION_CANDIDATES and set(recipe.methods) <= set(FIT_METHODS)
    assert recipe.validation_fraction == SELECTION_FRACTION and VALIDATION_IMPOSTORS == SELECTION_IMPOSTORS


def test_auto_selection_scores_exactly_as_the_bank(subset_caches: dict[str, EmbeddingCache]) -> None:
    """`select_method` (fit's copy of the bank's metrics, free of onnxruntime) gives the numbers
    population_study.validation_scores gives on the same rows, and picks what the bank would."""
    from facebridge.evaluation.population import Population
    from facebridge.evaluation.population_study import selection_score, validation_scores
    from facebridge.mapping.fitting import SELECTION_CANDIDATES, SELECTION_CRITERION, select_method

    data = pair_caches(subset_caches["arcface-mbf128"], subset_caches["sirius-mbf192"], "lfw-subset")
    fit_rows, _ = split_identities(data.identities, 0.25, 0)
    source, target, identities = data.source[fit_rows], data.target[fit_rows], data.identities[fit_rows]
    selection = select_method(source, target, identities, seed=0)
    unit = {k: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for k, v in
            {"s": source.astype(np.float64), "t": target.astype(np.float64)}.items()}  # fmt: skip
    population = Population("fit", np.arange(len(source)).astype(str), identities, unit)
    bank, _ = validation_scores(population, "s", "t", SELECTION_CANDIDATES, (), 0.15, 0)
    assert selection.criterion == SELECTION_CRITERION
    assert [c.method for c in selection.candidates] == list(SELECTION_CANDIDATES)
    for candidate in selection.candidates:
        metrics = bank[candidate.method]
        assert candidate.accuracy == pytest.approx(metrics.accuracy, abs=1e-9)
        assert candidate.tar_far_1e3 == pytest.approx(metrics.tar_far_1e3, abs=1e-9)
        assert candidate.score == pytest.approx(selection_score(metrics), abs=1e-9)
    assert selection.method == max(SELECTION_CANDIDATES, key=lambda m: selection_score(bank[m]))


def test_fit_residual_mlp_from_npy_loads_in_the_service_with_the_same_outputs(
    subset_caches: dict[str, EmbeddingCache], settings: Settings, tmp_path: Path
) -> None:
    """A residual-MLP map fitted by `facebridge fit` from .npy files of real embeddings is written to
    exactly the --out file, passes the service's loader, and translates as the in-memory estimator."""
    source_id, target_id = "arcface-mbf128", "sirius-mbf192"
    data = pair_caches(subset_caches[source_id], subset_caches[target_id], "lfw-subset")
    fitted = fit_map(data, "residual-mlp", seed=0)
    assert fitted.residual is not None and fitted.meta.method == "residual-mlp"
    for name, array in (("a", data.source), ("b", data.target), ("ids", data.identities)):
        np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "served" / "my-map.safetensors"
    argv = ["fit", "--source-npy", str(tmp_path / "a.npy"), "--target-npy", str(tmp_path / "b.npy"),
            "--labels", str(tmp_path / "ids.npy"), "--source-model", source_id, "--target-model", target_id,
            "--method", "residual-mlp", "--dataset", "lfw-subset", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["my-map.safetensors"]

    written = load_map(out)  # the map file loader: names, shapes, finiteness, digest
    assert written.meta.method == "residual-mlp" and written.meta.hidden == fitted.residual.hidden
    assert written.residual is not None and written.confidence is not None
    np.testing.assert_array_equal(written.weight, fitted.weight)  # the CLI fits what fit_map fits
    np.testing.assert_array_equal(written.bias, fitted.bias)
    for name, array in fitted.residual.named().items():
        np.testing.assert_array_equal(written.residual.named()[name], array)
    assert written.meta.quality == fitted.meta.quality

    bank = MappingBank.load(out.parent, settings.load_manifest())  # as the service loads its folder
    assert not bank.refused, bank.refused
    served = bank.maps[(source_id, target_id)]
    assert served.nonlinear and served.file == "my-map.safetensors"
    x = data.source
    expected = fitted.estimator.transform(x.astype(np.float64))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    rows = served.apply(x)
    assert rows.dtype == np.float32 and rows.shape == (len(x), 192)
    np.testing.assert_allclose(rows, expected, atol=2e-5)
    assert fitted.confidence is not None
    confidence = served.confidence(x)
    assert confidence is not None
    np.testing.assert_allclose(
        confidence, fitted.confidence.predict(x, fitted.estimator.transform(x)), atol=2e-5
    )


def test_fit_auto_scores_both_candidates_and_writes_the_winner(
    subset_caches: dict[str, EmbeddingCache], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default method is the bank's selection: every candidate's validation numbers are printed and
    recorded, and the map written is the winner fitted exactly as `--method WINNER` would fit it."""
    source_id, target_id = "sirius-mbf192", "arcface-mbf128"
    caches = {}
    for model_id in (source_id, target_id):
        caches[model_id] = tmp_path / f"{model_id}.npz"
        subset_caches[model_id].save(caches[model_id])
    argv = ["fit", "--source-cache", str(caches[source_id]), "--target-cache", str(caches[target_id]),
            "--out", str(tmp_path / "maps")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    meta = load_map(tmp_path / "maps" / f"{source_id}__{target_id}.safetensors").meta
    selection = meta.provenance.selection or ""
    for candidate in ("ridge", "residual-mlp"):
        assert f"\n    {candidate} " in printed and f"{candidate} 1." in selection, (printed, selection)
    assert "accuracy + TAR@FAR 1e-3 (cross)" in printed and f"{meta.method} " in printed
    chosen = [line for line in printed.splitlines() if line.endswith("<- chosen")]
    assert len(chosen) == 1 and chosen[0].split()[0] == meta.method
    named = fit_map(pair_caches(subset_caches[source_id], subset_caches[target_id]), meta.method)
    assert meta.quality == named.meta.quality  # the held-out identities took no part in the choice


def test_fit_from_heads_writes_exactly_the_out_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    d_a, d_b, classes = 12, 9, 40
    m, c = rng.normal(size=(d_a, d_b)), rng.normal(size=d_b)
    wb, bb = rng.normal(size=(d_b, classes)), rng.normal(size=classes)
    np.savez(tmp_path / "a.npz", weight=m @ wb, bias=c @ wb + bb)
    np.savez(tmp_path / "b.npz", weight=wb, bias=bb)
    out = tmp_path / "maps" / "heads.safetensors"
    argv = ["fit", "--from-heads", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
            "--source-model", "net-a", "--target-model", "net-b", "--source-sha256", "a" * 64,
            "--target-sha256", "b" * 64, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["heads.safetensors"]
    np.testing.assert_allclose(load_map(out).weight, m, atol=1e-5)


def test_every_fit_and_embed_option_has_a_help_text() -> None:
    import argparse

    from facebridge.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("fit", "embed", "embed-dataset"):
        parser = commands.choices[name]
        silent = [a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction) and not a.help]
        assert not silent, (name, silent)
