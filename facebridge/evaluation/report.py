"""The interchangeability report: one command runs the LFW study and writes Markdown with plots.

Tables: native accuracy, every ordered pair (native, mapped-to-mapped, cross, both-maps cross), the
asymmetry of each direction, the goals, a method comparison, fitting pairs (same photo vs identity
centroid) and learning curves. Plots: a model-by-model heat map of cross accuracy, ROC curves and
learning curves, as PNG files beside the Markdown.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facebridge.embedding_cache import EmbeddingCache
from facebridge.evaluation.interchange import (
    CurvePoint,
    FittedTransform,
    Fitter,
    Metrics,
    PairedLfw,
    PairStudy,
    learning_curve,
    native_scores,
    paired_lfw,
    study_pair,
    summarise,
)
from facebridge.evaluation.lfw import Pair
from facebridge.evaluation.metrics import roc_curve
from facebridge.evaluation.sections import carry_sections
from facebridge.mapping.methods import METHODS, make_map
from facebridge.progress import bar_disabled

CURVE_SIZES = [50, 100, 200, 500, 1000, 2000, 100_000]
STRONG_NATIVE = 0.988  # the goals concern recognizers at or above this native LFW accuracy


def fitter_for(method: str) -> Fitter:
    def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> FittedTransform:
        estimator = make_map(method)
        estimator.fit(x, y, groups)
        return estimator

    return fit


@dataclass
class Study:
    """All measured results of one report run."""

    models: list[str]
    method: str
    native: dict[str, Metrics] = field(default_factory=dict)
    pairs: dict[tuple[str, str], PairStudy] = field(default_factory=dict)
    methods: dict[tuple[str, str], dict[str, PairStudy]] = field(default_factory=dict)
    pairings: dict[tuple[str, str], dict[str, PairStudy]] = field(default_factory=dict)
    curves: dict[tuple[str, str], list[CurvePoint]] = field(default_factory=dict)


def run_study(
    caches: dict[str, EmbeddingCache],
    pairs: list[Pair],
    method: str = "ridge",
    compare_pairs: Iterable[tuple[str, str]] = (),
    compare_methods: Iterable[str] = METHODS,
    curve_sizes: list[int] = CURVE_SIZES,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Study:
    models = list(caches)
    study = Study(models, method)
    data: dict[tuple[str, str], PairedLfw] = {}
    for a, b in itertools.combinations(models, 2):
        data[(a, b)] = paired_lfw(caches[a], caches[b], pairs)
        data[(b, a)] = data[(a, b)].swapped()
    for model in models:
        any_pair = next(d for (a, _), d in data.items() if a == model)
        study.native[model] = summarise(native_scores(any_pair.a, any_pair), any_pair.labels, any_pair.folds)

    unordered = list(itertools.combinations(models, 2))
    for a, b in tqdm(unordered, desc=f"pairs ({method})", disable=bar_disabled(progress)):
        result = study_pair(data[(a, b)], fitter_for(method), method)
        study.pairs[(a, b)] = result
        study.pairs[(b, a)] = study_pair_reversed(result)
        log(
            f"{a}→{b}: cross {result.metrics['cross'].accuracy:.4f}, "
            f"{b}→{a}: cross {result.metrics['reverse_cross'].accuracy:.4f}"
        )

    for a, b in compare_pairs:
        study.methods[(a, b)] = {}
        for other in tqdm(
            list(dict.fromkeys([method, *compare_methods])),
            desc=f"methods {a}→{b}",
            disable=bar_disabled(progress),
        ):
            result = study.pairs[(a, b)]
            if other != method or not result.roc_scores:  # a reversed view keeps no scores to plot
                result = study_pair(data[(a, b)], fitter_for(other), other)
            study.methods[(a, b)][other] = result
            log(f"{a}→{b} {other}: cross {result.metrics['cross'].accuracy:.4f}")
        study.pairings[(a, b)] = {
            "same-image": study.methods[(a, b)][method],
            "centroid": study_pair(data[(a, b)], fitter_for(method), method, pairing="centroid"),
        }
        study.curves[(a, b)] = learning_curve(data[(a, b)], fitter_for(method), curve_sizes)
    return study


def study_pair_reversed(result: PairStudy) -> PairStudy:
    """The same measurements seen from the other model: B→A's rows of an A↔B study."""
    m = result.metrics
    return PairStudy(
        result.target,
        result.source,
        result.method,
        result.pairing,
        {
            "native_a": m["native_b"],
            "native_b": m["native_a"],
            "mapped": m["reverse_mapped"],
            "cross": m["reverse_cross"],
            "reverse_mapped": m["mapped"],
            "reverse_cross": m["cross"],
            "fused": m["fused"],
        },
        result.r2_reverse,
        result.r2,
        result.mean_cosine_reverse,
        result.mean_cosine,
        {},
    )


def pct(value: float) -> str:
    return f"{value * 100:.2f}"


def acc(metrics: Metrics) -> str:
    return f"{metrics.accuracy * 100:.2f} ± {metrics.accuracy_std * 100:.2f}"


def write_report(study: Study, out: Path, command: str) -> None:
    """Markdown at `out`, plots in a folder beside it named after it."""
    figures = out.with_suffix("")
    figures.mkdir(parents=True, exist_ok=True)
    lines = [
        "# How interchangeable are the five recognizers' spaces? (LFW)",
        "",
        "Generated by:",
        "",
        f"    {command}",
        "",
        "Protocol: LFW View 2, all 6,000 pairs of `pairs.txt`. For each fold, every map is fitted only on",
        "photos of people who do not appear in that fold (LFW folds are identity-disjoint), then applied to",
        "the fold's pairs; the accuracy threshold is chosen on the other nine folds (mean ± std over folds).",
        "AUC and EER are over the 6,000 listed pairs; TAR at FAR 1e-3 and 1e-4 over every genuine and",
        "impostor pair among each fold's test photos (all-vs-all, pooled over folds). *mapped*: both photos",
        "through the A→B map; *cross*: the mapped A photo against the native B photo (what a migrated",
        "gallery meets); *both maps*: the mean of the cross score in B's space and in A's space (B photo",
        "through the separately fitted B→A map). Embeddings are L2-normalised before fitting.",
        "",
        "## Native accuracy",
        "",
        "| model | accuracy (%) | AUC | EER (%) | TAR@FAR 1e-3 (%) | TAR@FAR 1e-4 (%) | impostor pairs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, native in study.native.items():
        lines.append(
            f"| {model} | {acc(native)} | {native.auc:.4f} | {pct(native.eer)} | {pct(native.tar_far_1e3)} "
            f"| {pct(native.tar_far_1e4)} | {native.impostor_pairs:,} |"
        )
    lines += [
        "",
        f"## Every ordered pair ({study.method} maps, same photo through both models)",
        "",
        "| A → B | native A | native B | mapped | cross | cross AUC | cross EER | cross TAR@1e-3 "
        "| cross TAR@1e-4 | mapped TAR@1e-3 | both maps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (a, b), s in study.pairs.items():
        m = s.metrics
        lines.append(
            f"| {a} → {b} | {pct(m['native_a'].accuracy)} | {pct(m['native_b'].accuracy)} "
            f"| {acc(m['mapped'])} | {acc(m['cross'])} | {m['cross'].auc:.4f} | {pct(m['cross'].eer)} "
            f"| {pct(m['cross'].tar_far_1e3)} | {pct(m['cross'].tar_far_1e4)} "
            f"| {pct(m['mapped'].tar_far_1e3)} | {acc(m['fused'])} |"
        )
    lines += [
        "",
        "![cross accuracy heat map](" + f"{figures.name}/cross-heatmap.png)",
        "",
        "## Asymmetry",
        "",
        "R² is the share of the target embeddings' variance the map explains on test photos; *kept* is",
        "the mapped accuracy over native A and the cross accuracy over the weaker native accuracy.",
        "",
        "| A → B | R² | mean cosine | R² of B → A | mapped kept (%) | cross kept (%) "
        "| B → A mapped kept (%) | B → A cross kept (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (a, b), s in study.pairs.items():
        if (b, a) not in study.pairs or a > b:
            continue
        m = s.metrics
        weaker = min(m["native_a"].accuracy, m["native_b"].accuracy)
        lines.append(
            f"| {a} → {b} | {s.r2:.3f} | {s.mean_cosine:.3f} | {s.r2_reverse:.3f} "
            f"| {pct(m['mapped'].accuracy / m['native_a'].accuracy)} | {pct(m['cross'].accuracy / weaker)} "
            f"| {pct(m['reverse_mapped'].accuracy / m['native_b'].accuracy)} "
            f"| {pct(m['reverse_cross'].accuracy / weaker)} |"
        )
    lines += _goal_lines(study)
    if study.methods:
        lines += ["", "## Method comparison", ""]
        lines += [
            "| A → B | method | R² | mapped | cross | both maps | cross TAR@1e-3 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for (a, b), by_method in study.methods.items():
            for name, s in by_method.items():
                m = s.metrics
                lines.append(
                    f"| {a} → {b} | {name} | {s.r2:.3f} | {acc(m['mapped'])} | {acc(m['cross'])} "
                    f"| {acc(m['fused'])} | {pct(m['cross'].tar_far_1e3)} |"
                )
    if study.pairings:
        lines += [
            "",
            "## Fitting pairs: same photo or identity centroid",
            "",
            "*same-image*: each photo's A embedding is fitted to the same photo's B embedding. *centroid*:",
            "to the mean B embedding of that person over the fitting photos (the seed paper's choice of",
            "different photos of one identity).",
            "",
            "| A → B | fitting pairs | mapped | cross | both maps |",
            "|---|---|---:|---:|---:|",
        ]
        for (a, b), by_pairing in study.pairings.items():
            for name, s in by_pairing.items():
                m = s.metrics
                lines.append(
                    f"| {a} → {b} | {name} | {acc(m['mapped'])} | {acc(m['cross'])} | {acc(m['fused'])} |"
                )
    if study.curves:
        lines += [
            "",
            f"## Learning curves ({study.method})",
            "",
            "Maps fitted on n random photos of the other folds' people; the last point is all of them.",
            "",
            "| A → B | fitting pairs | mapped | cross |",
            "|---|---:|---:|---:|",
        ]
        for (a, b), points in study.curves.items():
            for p in points:
                lines.append(f"| {a} → {b} | {p.fitting_pairs:,} | {pct(p.mapped)} | {pct(p.cross)} |")
        lines += ["", f"![learning curves]({figures.name}/learning-curves.png)"]
    if study.methods:
        lines += ["", f"![ROC curves]({figures.name}/roc.png)"]
    out.write_text(carry_sections(out, "\n".join(lines) + "\n"))
    _plots(study, figures)


def _goal_lines(study: Study) -> list[str]:
    strong = [m for m, n in study.native.items() if n.accuracy >= STRONG_NATIVE]
    lines = [
        "",
        f"## Goals for the recognizers at ≥ {STRONG_NATIVE * 100:.1f}% native ({', '.join(strong)})",
        "",
        "cross ≥ weaker native - 0.5 point; mapped ≥ native A - 0.3 point.",
        "",
        "| A → B | cross - weaker native | met | mapped - native A | met | both maps - weaker native | met |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    for (a, b), s in study.pairs.items():
        if a not in strong or b not in strong:
            continue
        m = s.metrics
        weaker = min(m["native_a"].accuracy, m["native_b"].accuracy)
        cross_gap = (m["cross"].accuracy - weaker) * 100
        mapped_gap = (m["mapped"].accuracy - m["native_a"].accuracy) * 100
        fused_gap = (m["fused"].accuracy - weaker) * 100
        lines.append(
            f"| {a} → {b} | {cross_gap:+.2f} | {'yes' if cross_gap >= -0.5 else 'no'} "
            f"| {mapped_gap:+.2f} | {'yes' if mapped_gap >= -0.3 else 'no'} "
            f"| {fused_gap:+.2f} | {'yes' if fused_gap >= -0.5 else 'no'} |"
        )
    return lines


def _plots(study: Study, figures: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = study.models
    grid = np.full((len(models), len(models)), np.nan)
    for i, a in enumerate(models):
        for j, b in enumerate(models):
            grid[i, j] = study.native[a].accuracy if a == b else study.pairs[(a, b)].metrics["cross"].accuracy
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(grid * 100, cmap="viridis")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), models)
    ax.set_xlabel("B (native side)")
    ax.set_ylabel("A (mapped side)")
    for i, j in itertools.product(range(len(models)), repeat=2):
        ax.text(j, i, f"{grid[i, j] * 100:.1f}", ha="center", va="center", color="w", fontsize=9)
    fig.colorbar(image, label="LFW accuracy (%), diagonal native")
    ax.set_title(f"Cross accuracy, A mapped → B vs B native ({study.method})")
    fig.tight_layout()
    fig.savefig(figures / "cross-heatmap.png", dpi=110)
    plt.close(fig)

    if study.curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (a, b), points in study.curves.items():
            n = [p.fitting_pairs for p in points]
            ax.plot(n, [p.cross * 100 for p in points], marker="o", label=f"{a}→{b} cross")
            ax.plot(n, [p.mapped * 100 for p in points], marker="x", ls="--", label=f"{a}→{b} mapped")
        ax.set_xscale("log")
        ax.set_xlabel("fitting pairs (photos)")
        ax.set_ylabel("LFW accuracy (%)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(figures / "learning-curves.png", dpi=110)
        plt.close(fig)

    if study.methods:
        pairs = list(study.methods)
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.5), squeeze=False)
        for ax, (a, b) in zip(axes[0], pairs, strict=True):
            s = study.methods[(a, b)][study.method]
            for key, label in (
                ("native_a", f"{a} native"),
                ("native_b", f"{b} native"),
                ("mapped", "mapped"),
                ("cross", "cross"),
                ("fused", "both maps"),
            ):
                scores = s.roc_scores[key]
                genuine, impostor = np.concatenate(scores.genuine), np.concatenate(scores.impostor)
                labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
                far, tar, _ = roc_curve(np.r_[genuine, impostor], labels)
                ax.plot(np.maximum(far, 1e-7), tar, label=label)
            ax.set_xscale("log")
            ax.set_xlim(1e-6, 1)
            ax.set_ylim(0.5, 1.0)
            ax.set_xlabel("false accept rate (all-vs-all)")
            ax.set_ylabel("true accept rate")
            ax.set_title(f"{a} → {b} ({study.method})", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(figures / "roc.png", dpi=110)
        plt.close(fig)
