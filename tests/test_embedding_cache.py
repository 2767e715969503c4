"""`facebridge embed` caches: resumable, reusing unchanged files, and the LFW CLI end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facebridge.cli import main
from facebridge.embedding_cache import EmbeddingCache, build_cache
from facebridge.vision.pipeline import FacePipeline

from .conftest import MODELS_DIR

PEOPLE = ["Abel_Pacheco", "Akhmed_Zakayev", "Colin_Powell", "Serena_Williams"]


@pytest.fixture
def small_dataset(lfw: Path, tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for photo in sorted((lfw / person).glob("*.jpg"))[:3]:
            shutil.copy(photo, root / person)
    return root


class Interrupt(Exception):
    pass


def test_cache_resumes_and_reuses(pipeline: FacePipeline, small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache.npz"
    computed: list[int] = []

    def crash_after_five(i: int) -> None:
        computed.append(i)
        if len(computed) == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_cache(
            pipeline,
            small_dataset,
            "sirius-mbf192",
            out,
            checkpoint_every=2,
            progress=False,
            on_row=crash_after_five,
        )
    assert len(EmbeddingCache.load(out)) == 4  # last checkpoint before the crash

    computed.clear()
    cache = build_cache(pipeline, small_dataset, "sirius-mbf192", out, progress=False, on_row=computed.append)
    assert len(cache) == 12 and len(computed) == 8  # only what the checkpoint lacked
    assert cache.meta["model_sha256"] == pipeline.registry.recognizer("sirius-mbf192").sha256
    assert set(cache.identities) == set(PEOPLE) and cache.detected.all()

    fresh = build_cache(pipeline, small_dataset, "sirius-mbf192", tmp_path / "fresh.npz", progress=False)
    np.testing.assert_allclose(fresh.embeddings, cache.embeddings, atol=1e-6)

    # an unchanged dataset costs nothing; a changed file is embedded again
    computed.clear()
    build_cache(pipeline, small_dataset, "sirius-mbf192", out, progress=False, on_row=computed.append)
    assert computed == []
    victim = sorted((small_dataset / "Colin_Powell").glob("*.jpg"))[0]
    shutil.copy(sorted((small_dataset / "Serena_Williams").glob("*.jpg"))[0], victim)
    again = build_cache(pipeline, small_dataset, "sirius-mbf192", out, progress=False, on_row=computed.append)
    assert len(computed) == 1
    row = again.index()[str(victim.relative_to(small_dataset))]
    assert not np.allclose(again.embeddings[row], cache.embeddings[row])


def test_evaluate_native_cli_on_a_tiny_protocol(
    lfw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "lfw"
    root.mkdir()
    lines = ["2\t3"]
    same = [
        ("Colin_Powell", 1, 2),
        ("Serena_Williams", 1, 2),
        ("Tony_Blair", 1, 2),
        ("George_W_Bush", 1, 2),
        ("Jennifer_Aniston", 1, 2),
        ("Hugo_Chavez", 1, 2),
    ]
    diff = [
        ("Colin_Powell", 3, "Tony_Blair", 3),
        ("Serena_Williams", 3, "Hugo_Chavez", 3),
        ("Tony_Blair", 4, "Jennifer_Aniston", 3),
        ("George_W_Bush", 3, "Hugo_Chavez", 4),
        ("Jennifer_Aniston", 4, "Colin_Powell", 4),
        ("Hugo_Chavez", 5, "Serena_Williams", 4),
    ]
    for fold in range(2):
        lines += ["\t".join(map(str, s)) for s in same[fold * 3 : (fold + 1) * 3]]
        lines += ["\t".join(map(str, d)) for d in diff[fold * 3 : (fold + 1) * 3]]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    for person in {s[0] for s in same}:
        (root / person).symlink_to(lfw / person)
    monkeypatch.setenv("FACEBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    assert (
        main(
            [
                "evaluate-native",
                "--model",
                "arcface-mbf128",
                "--lfw",
                str(root),
                "--models-dir",
                str(MODELS_DIR),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "arcface-mbf128" in out and "acc 100.00" in out and "pairs 12" in out
    assert (tmp_path / "cache" / "lfw-arcface-mbf128.npz").is_file()
