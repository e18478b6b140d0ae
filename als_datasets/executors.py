"""Executors: they only map pure tasks (route tasks, shard tasks) and hand back results.

* ``local`` (default): in this process for one worker, else a process pool (forkserver);
* ``dask``: a Dask cluster — ``--scheduler ADDRESS`` for an existing one (every worker must see
  the input and output paths), or a ``LocalCluster`` of ``--workers`` processes when no address
  is given.  Dask is an optional extra (``pip install 'als-datasets[dask]'``).

Both run the same task functions on the same task specs, so they write the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from als_datasets.errors import InputError


def map_local(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int = 1) -> Iterator[tuple[Any, Any]]:
    """Map ``fn`` over ``tasks``; yields ``(task, result)`` as tasks finish.

    ``workers <= 1`` runs in this process (in order); otherwise a process pool of ``workers``.
    The first failure cancels what has not started and is re-raised.
    """
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield t, fn(t)
        return
    import multiprocessing as mp

    # forkserver, not fork: a forked child inherits dead copies of the parent's native thread
    # pools (lazrs' rayon pool, BLAS) and can hang in them; the fork server is a clean process
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["als_datasets.build"])
    else:
        ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        pending = {pool.submit(fn, t): t for t in tasks}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    yield task, fut.result()
        finally:
            for fut in pending:
                fut.cancel()


class Executor:
    """``map(fn, tasks)`` yields ``(task, result)`` as tasks finish; ``close()`` releases workers."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(int(workers), 1)

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        return map_local(fn, tasks, self.workers)

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DaskExecutor(Executor):
    name = "dask"

    def __init__(self, workers: int = 1, scheduler: str | None = None):
        super().__init__(workers)
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError(None, "the dask executor needs Dask: pip install 'als-datasets[dask]'") from None
        self._cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(scheduler, f"cannot reach the Dask scheduler: {exc}") from None
        else:
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self.client = Client(self._cluster)

    def map(self, fn, tasks):
        from distributed import as_completed

        tasks = list(tasks)
        futures = {self.client.submit(fn, t, pure=False): t for t in tasks}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def check_executor(name: str, scheduler: str | None = None) -> None:
    """Refuse an unknown ``--executor`` (or a ``--scheduler`` without dask) before any work."""
    if name not in ("local", "dask"):
        raise InputError("--executor", f"unknown executor {name!r} (local or dask)")
    if name == "local" and scheduler:
        raise InputError("--scheduler", "needs --executor dask")


def make_executor(name: str = "local", workers: int = 1, scheduler: str | None = None) -> Executor:
    check_executor(name, scheduler)
    if name == "local":
        if scheduler:
            raise InputError(None, "--scheduler needs --executor dask")
        return Executor(workers)
    if name == "dask":
        return DaskExecutor(workers, scheduler)
    raise InputError(None, f"unknown executor {name!r} (local or dask)")
