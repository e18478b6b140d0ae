"""Progress reporting (rich) and the task executor shared by every long step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any


class Reporter:
    """Rich progress bars on stderr; ``enabled=False`` keeps everything silent (tests, --quiet)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> Reporter:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    @contextlib.contextmanager
    def step(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A bar for one step; yields ``advance(n)``."""
        if self._progress is None:
            yield lambda n=1: None
            return
        tid = self._progress.add_task(description, total=total)
        try:
            yield lambda n=1: self._progress.advance(tid, n)
        finally:
            if total is not None:
                self._progress.update(tid, completed=total)
            self._progress.refresh()

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message)


def map_tasks(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int = 1) -> Iterator[tuple[Any, Any]]:
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
