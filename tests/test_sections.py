"""The command line a study writes above its section (numpy-free, fast)."""

from __future__ import annotations

import pytest

from facebridge.evaluation.sections import command_line

pytestmark = pytest.mark.fast


def test_the_command_is_the_script_and_its_arguments_quoted_for_a_shell() -> None:
    assert command_line("scripts/x.py", []) == "python scripts/x.py"
    given = ["--variant", "mean-only"]
    assert command_line("scripts/x.py", given) == "python scripts/x.py --variant mean-only"
    assert command_line("scripts/x.py", ["--name", "a b"]) == "python scripts/x.py --name 'a b'"
