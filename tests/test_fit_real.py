"""Maps fitted on real embeddings of LFW people keep verification accuracy on other people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facebridge.cli import main
from facebridge.embedding_cache import EmbeddingCache
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
