"""Named sections of a generated Markdown report that separate studies add, replace and keep.

The main report is regenerated as a whole by `facebridge report`; the seed papers' other methods are
measured by their own commands. Each writes its section between HTML comment markers, and a rewrite of
the main report carries the existing sections over, so no study's table is lost to another's run.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

_SECTION = re.compile(r"<!-- section:(?P<name>[\w-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.S)


def sections_of(text: str) -> dict[str, str]:
    """Every marked section of `text`, markers included, by name."""
    return {m.group("name"): m.group(0) for m in _SECTION.finditer(text)}


def wrap_section(name: str, markdown: str) -> str:
    return f"<!-- section:{name} -->\n{markdown.rstrip()}\n<!-- /section:{name} -->\n"


def upsert_section(report: Path, name: str, markdown: str) -> None:
    """Put `markdown` in `report` as section `name`, replacing an earlier version of it."""
    text = report.read_text() if report.exists() else ""
    block = wrap_section(name, markdown)
    existing = sections_of(text)
    if name in existing:
        text = text.replace(existing[name], block)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)


def carry_sections(previous: Path, text: str) -> str:
    """`text` followed by the sections `previous` held (when it exists)."""
    if not previous.exists():
        return text
    kept = sections_of(previous.read_text())
    return text.rstrip("\n") + "\n" + "".join("\n" + block for block in kept.values())


def table_row(*cells: object) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that wrote a section, as its reader would type it again: `python SCRIPT ARGS`, the
    arguments shell-quoted (`argv` None: this process's own)."""
    given = sys.argv[1:] if argv is None else argv
    return " ".join(["python", script, *map(shlex.quote, given)])
