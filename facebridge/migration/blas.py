"""One BLAS thread for a migration that shares the machine with its database server.

OpenBLAS runs a matmul on every core and then keeps its threads spinning for the next one. A PostgreSQL
migration translates a batch, then waits while the server takes it in and reads the next: the spinning
threads burn the cores the server needs. On 200k templates (2 cores) one thread halved the client's CPU
time (4.2 s to 2.1 s) for the same wall time, and left that core to the server. The migration and
each of its workers set the OpenBLAS numpy loaded through its own `*openblas_set_num_threads*` entry
point (what threadpoolctl does), found in /proc/self/maps; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager


def _openblas() -> tuple[ctypes.CDLL, str] | None:
    """The OpenBLAS numpy loaded and the name prefix of its entry points, or None."""
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


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one OpenBLAS thread in this process (nothing where none is found)."""
    found = _openblas()
    if found is None:
        yield
        return
    library, name = found
    get, set_ = getattr(library, name % "get_num_threads"), getattr(library, name % "set_num_threads")
    before = int(get())
    set_(1)
    try:
        yield
    finally:
        set_(before)
