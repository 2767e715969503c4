"""The wheel's package list against the tree: a subpackage left out of pyproject.toml imports from a
checkout and fails only once installed (test_wheel_install.py builds the wheel; this says why in a second).
The layering the package docstrings promise: the library never imports the HTTP service."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facebridge"
# the HTTP layers: routes (api/) and the service around them (service/); the console is served by them
SERVICE_PACKAGES = ("facebridge.api", "facebridge.service", "facebridge.console")


def _subpackages() -> set[str]:
    return {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_every_subpackage_is_in_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = sorted(_subpackages() - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_the_library_never_imports_the_service() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module.startswith(SERVICE_PACKAGES) or module.startswith("facebridge.cli"):
            continue  # the CLI starts the service (`facebridge serve`)
        for imported in _imported_modules(path):
            if imported.startswith(SERVICE_PACKAGES):
                offenders.append(f"{module} imports {imported}")
    assert not offenders, offenders
