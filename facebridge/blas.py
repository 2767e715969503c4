"""How many threads OpenBLAS (numpy's matrix products) may use in this process.

OpenBLAS splits a product over every core and then keeps its threads spinning for the next one. A
service answers many small products (a /verify scores one template against a 1,000-row cohort; a
/translate maps a few rows) and streams bulk answers block by block while the event loop sends the
previous block: there, waking and spinning extra threads costs more than it saves, and takes cores
from the event loop and from other requests (docs/translate.md has the measurements). The service sets
`FACEBRIDGE_BLAS_THREADS` (default 1) at start-up through OpenBLAS's own `*openblas_set_num_threads*`
entry point, found in /proc/self/maps (what threadpoolctl does); where numpy uses another BLAS, or no
/proc, nothing changes. A PostgreSQL migration runs with one thread too (`one_blas_thread`): it
translates a batch, then waits while the server takes it in, and spinning threads would burn the cores
the server needs (on 200k templates and 2 cores, one thread halved the client's CPU time, 4.2 s to
2.1 s, for the same wall time).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

log = logging.getLogger(__name__)


@cache
def _openblas() -> tuple[ctypes.CDLL, str] | None:
    """The OpenBLAS numpy loaded and the name pattern of its entry points, or None."""
    import numpy  # noqa: F401  (loads its BLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if hasattr(library, f"{prefix}_get_num_threads{suffix}"):
                    return library, f"{prefix}_%s{suffix}"
    return None


def blas_threads() -> int | None:
    """OpenBLAS's thread count now; None when numpy's BLAS is not an OpenBLAS found here."""
    found = _openblas()
    if found is None:
        return None
    library, name = found
    return int(getattr(library, name % "get_num_threads")())


def set_blas_threads(threads: int) -> int | None:
    """Let OpenBLAS use `threads` threads (0: leave its default); returns the count before, or None
    when there is no OpenBLAS to set."""
    found = _openblas()
    if found is None:
        if threads:
            log.info("BLAS threads: numpy's BLAS is not an OpenBLAS found here; left as it is")
        return None
    before = blas_threads()
    if threads:
        library, name = found
        getattr(library, name % "set_num_threads")(int(threads))
    return before


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one OpenBLAS thread in this process (nothing where none is found)."""
    before = set_blas_threads(1)
    try:
        yield
    finally:
        if before is not None:
            set_blas_threads(before)
