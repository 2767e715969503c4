"""`facebridge doctor`: is this installation able to serve, and if not, what to do about it.

Checks what most often breaks a face-recognition install: two OpenCV or two ONNX Runtime distributions
writing the same package, an execution provider that is listed but cannot run a model, model files
missing or not matching their pinned hash, and map files refused by their checks. Each problem comes
with the command that fixes it. Exit status 1 when there is any problem.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from facebridge.cli.common import (
    RUNTIME_FIX,
    add_settings_options,
    onnxruntime_installed,
    settings_from,
    verify_model_file,
)

if TYPE_CHECKING:
    from facebridge.config import Settings
    from facebridge.mapping.bank import MappingBank

# distributions that install the same top-level package: only one of each family may be present
TWIN_FAMILIES = {
    "cv2": (
        "opencv-python",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ),
    "onnxruntime": (
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxruntime-openvino",
        "onnxruntime-directml",
        "onnxruntime-silicon",
    ),
}
WANTED = {"cv2": "opencv-python-headless"}
NO_RUNTIME = "no ONNX Runtime installed: no model can run (serve, embed, evaluate, calibrate, models add)"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (problem, what to do)

    def say(self, text: str) -> None:
        self.lines.append(text)

    def problem(self, text: str, fix: str) -> None:
        self.lines.append(f"  PROBLEM: {text}")
        self.problems.append((text, fix))


def installed_distributions() -> dict[str, str]:
    """name (lower case) -> version of every installed distribution."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name:
            found[name] = dist.version
    return found


def check_twins(report: Report, installed: dict[str, str]) -> None:
    report.say("packages:")
    for package, family in TWIN_FAMILIES.items():
        present = [f"{name} {installed[name]}" for name in family if name in installed]
        report.say(f"  {package}: {', '.join(present) or 'none'}")
        names = [name for name in family if name in installed]
        if len(names) > 1:
            preferred = "onnxruntime-gpu" if package == "onnxruntime" else WANTED.get(package, "")
            keep = preferred if preferred in names else names[-1]
            report.problem(
                f"{len(names)} distributions install the same '{package}' package: {', '.join(names)}",
                f"pip uninstall -y {' '.join(names)} && pip install --no-deps {keep}=={installed[keep]}",
            )
        elif not names and package == "onnxruntime":  # a bare `pip install facebridge`
            report.problem(NO_RUNTIME, RUNTIME_FIX)
        elif not names:
            report.problem(f"no '{package}' installed", "pip install 'facebridge[cpu]'")


def check_providers(report: Report, settings: Settings) -> None:
    """Which providers onnxruntime lists, and which of them really run a model here; no ONNX Runtime
    at all (a bare `pip install facebridge`: it is in the [cpu] and [gpu] extras) is a problem too."""
    if not onnxruntime_installed():
        if (NO_RUNTIME, RUNTIME_FIX) not in report.problems:  # said once, by check_twins if it saw none
            report.problem(NO_RUNTIME, RUNTIME_FIX)
        return
    try:
        import onnxruntime as ort
    except ImportError as error:
        report.problem(
            f"onnxruntime is installed but cannot be imported: {str(error).splitlines()[0]}",
            "pip install --force-reinstall --no-deps onnxruntime (or onnxruntime-gpu, the one installed)",
        )
        return
    listed = ort.get_available_providers()
    report.say(f"onnxruntime {ort.__version__}: lists {', '.join(listed)}")
    probe = _smallest_model(settings)
    if probe is None:
        report.say("  (no model file installed to test the providers with)")
        return
    for provider in [p for p in listed if p in ("CUDAExecutionProvider", "CPUExecutionProvider")]:
        try:
            session = ort.InferenceSession(str(probe), providers=[provider])
            got = session.get_providers()
        except Exception as error:
            got, reason = [], str(error).splitlines()[0]
        else:
            reason = ""
        if provider in got:
            report.say(f"  {provider}: runs ({probe.name})")
        elif provider == "CUDAExecutionProvider":
            report.problem(
                f"CUDAExecutionProvider is listed but cannot run a model{': ' + reason if reason else ''}",
                "install the CUDA 12 and cuDNN 9 libraries onnxruntime-gpu needs, or use the CPU "
                "(FACEBRIDGE_PROVIDERS=cpu)",
            )
        else:
            report.problem(f"{provider} cannot run a model: {reason}", "reinstall onnxruntime")


def _smallest_model(settings: Settings) -> Path | None:
    files = sorted(settings.models_dir.glob("*.onnx"), key=lambda p: p.stat().st_size)
    return files[0] if files else None


def check_models(report: Report, settings: Settings) -> None:
    manifest = settings.load_manifest()
    report.say(f"models in {settings.models_dir} (manifest {settings.manifest_path}):")
    missing = []
    for entry in manifest.models:
        status = verify_model_file(entry, settings.models_dir)
        report.say(f"  {entry.id:<20} {entry.kind:<10} {status.state}")
        if status.state == "unavailable":
            missing.append(entry.id)
        elif status.state == "refused":
            report.problem(
                f"{entry.id}: {status.reason}",
                f"rm {settings.models_dir / entry.file} && facebridge models fetch {entry.id}",
            )
    if len(missing) == len(manifest.models):
        report.problem(
            "no model file is installed",
            "facebridge models fetch --all (or --from a folder holding the files)",
        )
    elif settings.default_recognizer in missing:
        report.problem(
            f"the default recognizer {settings.default_recognizer} is not installed",
            f"facebridge models fetch {settings.default_recognizer}",
        )


def check_maps(report: Report, settings: Settings) -> None:
    from facebridge.mapping.bank import MappingBank

    bank = MappingBank.from_settings(settings)
    report.say(
        f"maps in {settings.mappings_dir}: {len(bank.maps)} loaded, "
        f"{len(bank.space_calibrations)} space calibrations, {len(bank.refused)} refused"
    )
    for refused in bank.refused:
        if refused.file.endswith((".cohort.safetensors", ".calibration.json")):
            report.problem(
                f"{refused.file} refused: {refused.reason}",
                "rebuild it (facebridge cohort build / facebridge calibrate) or remove it; the rest serves",
            )
            continue
        report.problem(
            f"map file {refused.file} refused: {refused.reason}",
            "refit it (facebridge fit) or remove it; the other maps keep serving",
        )
    check_population(report, settings, bank)


def check_population(report: Report, settings: Settings, bank: MappingBank) -> None:
    """Cohorts and calibrations in force, and the drift watch: how far the shipped thresholds' FAR is
    estimated to be from nominal on the cohort's population."""
    from facebridge.cohort.cohortfile import RECOMMENDED_COHORT, SMALL_COHORT_NOTE
    from facebridge.cohort.drift import drift_of

    scoring = bank.scoring
    for file, found in scoring.sets.items():
        report.say(
            f"calibration set {file}: {found.kind}, {len(found.entries)} comparisons, on {found.dataset}"
        )
    if not scoring.cohorts:
        where = settings.cohort_dir or "(FACEBRIDGE_COHORT_DIR unset)"
        report.say(
            f"no cohort loaded from {where}: thresholds are the shipped population's; on other people "
            "their FAR can be far off (docs/thresholds.md): facebridge cohort build"
        )
        return
    for model, cohort in sorted(scoring.cohorts.items()):
        p = cohort.meta.provenance
        report.say(
            f"cohort {cohort.id} ({model}): {len(cohort)} templates from {p.kind} {p.source}, {p.created}"
        )
        if len(cohort) < RECOMMENDED_COHORT:
            report.problem(
                f"cohort {cohort.id} holds {len(cohort)} templates: {SMALL_COHORT_NOTE}",
                f"facebridge cohort build --model {model} SOURCE, from a source of "
                f"{RECOMMENDED_COHORT} templates or more",
            )
    for estimate in drift_of(bank):
        if estimate.operating_point != "far_1e-3":
            continue
        line = (
            f"drift {estimate.comparison}: the shipped far_1e-3 threshold is estimated at FAR "
            f"{estimate.estimated_far:.1e} on this cohort ({estimate.ratio:.1f}x nominal)"
        )
        if estimate.off:
            report.problem(
                line,
                "answers use AS-norm thresholds where a cohort serves the comparison; for raw ones, "
                "calibrate on your own people (facebridge calibrate)",
            )
        else:
            report.say(line)


def diagnose(settings: Settings) -> Report:
    from facebridge import __version__
    from facebridge.paths import in_checkout

    report = Report()
    where = "a source checkout" if in_checkout() else "an installed package"
    report.say(f"facebridge {__version__}, run from {where}")
    report.say(
        f"  models: {settings.models_dir}  mappings: {settings.mappings_dir}  cache: {settings.cache_dir}"
    )
    check_twins(report, installed_distributions())
    check_providers(report, settings)
    check_models(report, settings)
    check_maps(report, settings)
    return report


def cmd_doctor(args: argparse.Namespace) -> int:
    report = diagnose(settings_from(args))
    print("\n".join(report.lines))
    if not report.problems:
        print("\nno problems found")
        return 0
    print(f"\n{len(report.problems)} problem(s):")
    for number, (problem, fix) in enumerate(report.problems, 1):
        print(f"{number}. {problem}\n   fix: {fix}")
    return 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    doctor = sub.add_parser("doctor", help="check the installation: twin packages, providers, models, maps")
    add_settings_options(doctor)
    doctor.set_defaults(func=cmd_doctor)
