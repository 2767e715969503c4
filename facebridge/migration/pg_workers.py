"""Where a PostgreSQL migration's parts run: in this process (one worker), in worker processes
(spawned once per run and kept across passes) or as tasks on a Dask cluster, and the progress bar
that follows the batches worker processes commit. The job record, its parts and their cursors are the
same for all three (facebridge/migration/postgres.py); this module only decides where a part's pass
runs.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from facebridge.blas import one_blas_thread
from facebridge.migration.pg_common import BATCHES, MigrationError

if TYPE_CHECKING:
    from facebridge.migration.postgres import Part, PartOutcome, PostgresMigration


def part_task(arguments: dict[str, Any], task: str, part: Part, pass_number: int) -> PartOutcome:
    """One part's pass, in a worker process or a Dask task."""
    from facebridge.migration.postgres import PostgresMigration

    job = PostgresMigration(**arguments, progress=False)
    with job.connect() as conn:
        job.inspect(conn)
    with one_blas_thread():
        return job.run_part(task, part, pass_number)


class PartRunner:
    """Runs part passes: in this process (one worker), in worker processes (spawned once per run and
    kept across passes) or as tasks on a Dask cluster (a LocalCluster unless given a scheduler)."""

    def __init__(self, job: PostgresMigration) -> None:
        self.job = job
        self.pool: ProcessPoolExecutor | None = None
        self.client: Any = None
        self.cluster: Any = None

    def __enter__(self) -> PartRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def run(self, tasks: list[tuple[str, Part, int]]) -> list[PartOutcome]:
        job = self.job
        if not tasks:
            return []
        if job.engine == "dask":
            return self._dask(tasks)
        # processes for a first pass; a later pass (mostly a join finding little) reuses them, or runs
        # here when the first pass was done by an earlier run
        fill = any(task == "fill" for task, _, _ in tasks)
        if job.workers == 1 or len(tasks) == 1 or (self.pool is None and not fill):
            return [job.run_part(*task) for task in tasks]
        if self.pool is None:
            import multiprocessing

            self.pool = ProcessPoolExecutor(job.workers, mp_context=multiprocessing.get_context("spawn"))
        arguments = job.worker_arguments()
        futures: list[Future[PartOutcome]] = [self.pool.submit(part_task, arguments, *t) for t in tasks]
        try:
            return [future.result() for future in futures]
        except BrokenProcessPool as exc:
            raise MigrationError(
                "a worker process died; the parts' committed batches are kept: run the same command "
                "again to resume"
            ) from exc

    def _dask(self, tasks: list[tuple[str, Part, int]]) -> list[PartOutcome]:
        from dask.distributed import Client, LocalCluster

        job = self.job
        if self.client is None:
            if job.scheduler is None:
                self.cluster = LocalCluster(n_workers=job.workers, threads_per_worker=1, processes=True)
            self.client = Client(job.scheduler or self.cluster)
        # the arguments are a few short strings: sent with each task. (Scattering the dict would
        # scatter each value under its key name, and the next pass's scatter would release the
        # previous pass's data while its tasks still wait on it.)
        arguments = job.worker_arguments()
        futures = [self.client.submit(part_task, arguments, *t, pure=False) for t in tasks]
        return list(self.client.gather(futures))

    def watching(self, bar: tqdm, done_before: int) -> AbstractContextManager[None]:
        """While worker processes run, move `bar` by the rows their committed batches record."""
        return ProgressWatch(self.job, bar, done_before, enabled=not bar.disable and self.job.workers > 1)


class ProgressWatch:
    """A thread that moves the progress bar by the rows worker processes' committed batches record
    (their own bars are off), polled every half second from the job's batch table."""

    def __init__(self, job: PostgresMigration, bar: tqdm, done_before: int, enabled: bool) -> None:
        self.job, self.bar, self.done_before, self.enabled = job, bar, done_before, enabled
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> None:
        if self.enabled:
            self.thread = threading.Thread(target=self._poll, name="progress", daemon=True)
            self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def _poll(self) -> None:
        with self.job.connect() as conn, conn.cursor() as cursor:
            while not self.stop.wait(0.5):
                cursor.execute(
                    f"SELECT coalesce(sum(rows), 0) FROM {BATCHES} WHERE job = %s", (self.job.job,)
                )
                done = int(cursor.fetchone()[0])
                self.bar.update(max(0, min(done, self.bar.total) - self.bar.n))
