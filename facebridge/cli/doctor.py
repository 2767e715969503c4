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

from facebridge.cli.common import add_settings_options, settings_from

if TYPE_CHECKING:
    from facebridge.config import Settings

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
        elif not names:
            extra = "cpu] or facebridge[gpu" if package == "onnxruntime" else "cpu"
            report.problem(f"no '{package}' installed", f"pip install 'facebridge[{extra}]'")


def check_providers(report: Report, settings: Settings) -> None:
    """Which providers onnxruntime lists, and which of them really run a model here."""
    try:
        import onnxruntime as ort
    except ImportError:
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
    from facebridge.vision.registry import verify_file

    manifest = settings.load_manifest()
    report.say(f"models in {settings.models_dir} (manifest {settings.manifest_path}):")
    missing = []
    for entry in manifest.models:
        status = verify_file(entry, settings.models_dir)
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

    bank = MappingBank.load(settings.mappings_dir, settings.load_manifest())
    report.say(
        f"maps in {settings.mappings_dir}: {len(bank.maps)} loaded, "
        f"{len(bank.space_calibrations)} space calibrations, {len(bank.refused)} refused"
    )
    for refused in bank.refused:
        report.problem(
            f"map file {refused.file} refused: {refused.reason}",
            "refit it (facebridge fit) or remove it; the other maps keep serving",
        )


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
