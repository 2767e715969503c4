"""Progress bars: shown on a terminal, silent where stderr is a log file or a pipe (each update of a
bar is a carriage return, and a long job would write thousands of them into a log)."""

from __future__ import annotations


def bar_disabled(progress: bool) -> bool | None:
    """tqdm's `disable` for a job asked to show progress: None lets tqdm hide the bar when its stream
    is not a terminal; True hides it always."""
    return None if progress else True
