"""Micro-batching: crops from concurrent requests for one model go through onnxruntime together.

A request thread hands its crops to the model's batcher and waits; the batcher's thread takes the
first waiting job, keeps gathering others for at most `max_wait_ms` (or until `max_batch` crops), runs
one preprocessing + inference for all of them, and hands each job its rows. It waits only while
requests are arriving together (the last run carried several, or more are queued), so a lone client
pays nothing; many concurrent requests share each run, so throughput grows with concurrency
on graphs that accept a batch. Preprocessing is per crop, so results equal unbatched ones.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from facebridge.vision.recognizer import Recognizer, l2_normalize


class MicroBatcher:
    def __init__(self, recognizer: Recognizer, max_batch: int = 32, max_wait_ms: float = 2.0):
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.runs = 0  # inference runs so far, and the crops they carried (observability, tests)
        self.crops = 0
        self._last_jobs = 0
        self._jobs: queue.Queue[tuple[list[np.ndarray], Future[np.ndarray]]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{recognizer.entry.id}", daemon=True)
        self._thread.start()

    def embed(self, crops_bgr: list[np.ndarray], normalize: bool = True) -> np.ndarray:
        """Raw or unit embeddings for the crops, computed together with other waiting requests'."""
        if not crops_bgr:
            return np.empty((0, self.recognizer.dim), dtype=np.float32)
        future: Future[np.ndarray] = Future()
        self._jobs.put((crops_bgr, future))
        vectors = future.result()
        return l2_normalize(vectors) if normalize else vectors

    def _run(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            crops = len(jobs[0][0])
            # wait for company only when the last run had some: a lone client pays no waiting time
            wait = self.max_wait_s if self._last_jobs > 1 or not self._jobs.empty() else 0.0
            deadline = time.monotonic() + wait
            while crops < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._jobs.get(timeout=remaining)
                except queue.Empty:
                    break
                jobs.append(job)
                crops += len(job[0])
            try:
                batch = [crop for job_crops, _ in jobs for crop in job_crops]
                vectors = self.recognizer.run(self.recognizer.preprocess(batch))
                self.runs += 1
                self._last_jobs = len(jobs)
                self.crops += len(batch)
                start = 0
                for job_crops, future in jobs:
                    future.set_result(vectors[start : start + len(job_crops)])
                    start += len(job_crops)
            except Exception as exc:  # every waiting request learns of the failure
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
