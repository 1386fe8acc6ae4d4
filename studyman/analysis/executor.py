"""One executor interface for work that grows: imputations, tipping-point grids, simulations.

Local processes by default (``concurrent.futures.ProcessPoolExecutor``, both cores), a Dask
distributed cluster when an address (or a ``Client``) is given. Each task receives its own
``numpy.random.SeedSequence`` spawned from the plan seed *before* any task is submitted, so the
numbers do not depend on which worker runs which task, or in what order: results are identical
whichever executor runs them.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = [
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "SerialExecutor",
    "make_executor",
    "single_threaded_blas",
    "spawn_seeds",
]

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Maps a picklable function over tasks and returns the results in task order."""

    name: str

    def map(self, function: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        """Run ``function(task)`` for every task; results in the order of *tasks*."""
        ...

    def close(self) -> None:
        """Release workers started by this executor."""
        ...


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the body with BLAS limited to one thread.

    Notes
    -----
    A multi-threaded BLAS splits sums differently with the number of threads, which changes the
    last bits of a result; Dask workers start with one BLAS thread, local processes inherit the
    parent's. Every analysis task runs under this limit, so the bits do not depend on where it
    ran (the work is parallel across tasks instead).
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def spawn_seeds(seed: int, count: int) -> list[np.random.SeedSequence]:
    """Independent per-task seed sequences from one plan seed (NumPy ``SeedSequence.spawn``)."""
    return list(np.random.SeedSequence(seed).spawn(count))


class SerialExecutor:
    """Runs tasks one after another in this process (one core; the benchmark's baseline)."""

    name = "serial"

    def map(self, function: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        """Run the tasks in order."""
        return [function(task) for task in tasks]

    def close(self) -> None:
        """Nothing to release."""


class ProcessExecutor:
    """Local worker processes (default: one per core).

    Notes
    -----
    Workers are forked from a clean ``forkserver`` process that has already imported the
    analysis modules, never from the caller: forking a process that runs other threads (the
    demo's REDCap emulator, a Dask client) can deadlock the child.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.name = f"processes({self.workers})"
        self._pool: ProcessPoolExecutor | None = None

    def map(self, function: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        """Run the tasks on the pool, in chunks so small tasks do not drown in overhead."""
        if self.workers == 1 or len(tasks) <= 1:
            return [function(task) for task in tasks]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context())
        chunk = max(1, len(tasks) // (self.workers * 4))
        return list(self._pool.map(function, tasks, chunksize=chunk))

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


_FORKSERVER_START = threading.Lock()


def _context() -> multiprocessing.context.BaseContext:
    """The start method of local workers: a forkserver started safely, else spawn.

    Notes
    -----
    Spawned workers (``spawn``, and children of the forkserver) take the parent's ``sys.path``,
    so they import the ``studyman`` the parent imported. The forkserver itself does not: it is
    ``python -c ...``, whose ``sys.path`` begins with the current folder, and it imports the
    analysis modules before anything else (Python 3.11 ignores the parent's path there). Run
    from a folder that holds a ``studyman/`` checkout, it imported that one, and every worker
    died with it (``BrokenProcessPool``). It is started here with ``PYTHONSAFEPATH=1``, which
    keeps the current folder off its ``sys.path``.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["studyman.analysis.run", "studyman.stats"])
    _start_forkserver()
    return context


def _start_forkserver() -> None:
    """Start this process's forkserver (once) with the current folder off its ``sys.path``.

    Notes
    -----
    The forkserver inherits ``os.environ`` as it is when it starts, and nothing else lets a
    caller pass it an interpreter option, so ``PYTHONSAFEPATH`` is set for the instant of its
    start and restored at once. A forkserver that is already running is left as it is.
    """
    from multiprocessing import forkserver

    with _FORKSERVER_START:
        previous = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            forkserver.ensure_running()
        finally:
            if previous is None:
                del os.environ["PYTHONSAFEPATH"]
            else:
                os.environ["PYTHONSAFEPATH"] = previous


class DaskExecutor:
    """A Dask distributed cluster, given its scheduler address or an existing ``Client``."""

    def __init__(self, address_or_client: Any) -> None:
        from distributed import Client

        if isinstance(address_or_client, Client):
            self._client = address_or_client
            self._owns_client = False
        else:
            self._client = Client(address_or_client)  # type: ignore[no-untyped-call]
            self._owns_client = True
        self.name = "dask"

    def map(self, function: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        """Submit the tasks (pure=False: equal arguments still run separately), gather in order."""
        futures = self._client.map(function, list(tasks), pure=False)
        results: list[R] = self._client.gather(futures)  # type: ignore[no-untyped-call]
        return results

    def close(self) -> None:
        """Close the client when this executor opened it."""
        if self._owns_client:
            self._client.close()  # type: ignore[no-untyped-call]


def make_executor(workers: int | None = None, dask_address: str | None = None) -> Executor:
    """Dask when *dask_address* is given; else local processes (``workers=1``: serial)."""
    if dask_address:
        return DaskExecutor(dask_address)
    if workers == 1:
        return SerialExecutor()
    return ProcessExecutor(workers)
