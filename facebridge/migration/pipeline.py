"""Reading ahead: an iterator run in a thread, a few items ahead of its consumer.

Migrations overlap reading the next chunk (Parquet decoding, a database's COPY out) with translating
and writing the current one; both sides release the GIL for most of their work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """Run `items` in a thread, `depth` ahead of the consumer; its exceptions re-raise here."""
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            slots.put(("error", exc))

    thread = threading.Thread(target=produce, name="gallery-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
