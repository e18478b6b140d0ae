"""Shard tasks: pure functions that write one shard (in every output format) and return its
manifest entries.  An executor only maps them (``--workers K``: a process pool).

A task is a kind's (:meth:`als_datasets.registry.Kind.shard_tasks`): a frozen dataclass with
everything it needs in its spec, deriving from :class:`ShardOutputs` and adding ``features()``
and ``iter_samples()``.  :func:`run_shard_task` writes the WebDataset tar and the Parquet part
from the *same* samples in one pass: the samples are produced once and fed to both writers in
lockstep, so memory holds about one sample whatever the shard size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from als_datasets.shards.writer import commit_writes, write_parquet_shard, write_tar_shard


class ShardOutputs:
    """What every shard task shares: where its files go.  A task type adds ``features()`` and
    ``iter_samples()``; :func:`run_shard_task` does the rest (one copy of the writing machinery
    for every kind)."""

    def paths(self) -> dict[str, str]:
        """Relative output path per format."""
        p = {}
        if "webdataset" in self.formats:
            p["webdataset"] = f"webdataset/{self.split}/shard-{self.index:06d}.tar"
        if "parquet" in self.formats:
            p["parquet"] = f"parquet/{self.split}/part-{self.index:06d}.parquet"
        return p


class _Aborted(Exception):
    pass


def _lockstep(samples: Iterable[dict], sinks: list[Callable[[Iterable[dict]], dict]]) -> list[dict]:
    """Feed one stream of samples to several writers at once (each in its own thread except the
    first), each holding at most a couple of samples: the samples are computed only once.

    If producing the samples or any writer fails, every writer is aborted (their atomic writes
    leave nothing behind) and the first error is raised.
    """
    if len(sinks) == 1:
        return [sinks[0](samples)]
    end, abort = object(), object()
    queues = [queue.Queue(maxsize=2) for _ in sinks[1:]]
    results: list = [None] * len(sinks)
    errors: list[BaseException] = []

    def drain(q: queue.Queue) -> Iterator[dict]:
        while (item := q.get()) is not end:
            if item is abort:
                raise _Aborted
            yield item

    def run(i: int, q: queue.Queue) -> None:
        try:
            results[i] = sinks[i](drain(q))
        except _Aborted:
            pass
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)
            while (item := q.get()) is not end and item is not abort:  # keep the producer unblocked
                pass

    threads = [threading.Thread(target=run, args=(i + 1, q), daemon=True) for i, q in enumerate(queues)]
    for t in threads:
        t.start()

    finished = []

    def tee() -> Iterator[dict]:
        ok = False
        finished.append(True)
        try:
            for s in samples:
                if errors:
                    raise errors[0]
                for q in queues:
                    q.put(s)
                yield s
            ok = True
        finally:
            for q in queues:
                q.put(end if ok else abort)

    gen = tee()
    try:
        results[0] = sinks[0](gen)
    finally:
        gen.close()  # a writer that failed mid-stream leaves the generator suspended: finish it (abort)
        if not finished:  # the first writer failed before it read a sample: abort the others
            for q in queues:
                q.put(abort)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def run_shard_task(task: ShardOutputs, features=None) -> list[dict]:
    """Write the shard in every format; return one manifest entry per file written."""
    out = Path(task.out_dir)
    features = features or task.features()
    paths = task.paths()
    for rel in paths.values():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sinks, kinds, pending = [], [], []  # every format written first, then all renamed into place together
    if "webdataset" in paths:
        sinks.append(lambda s, p=out / paths["webdataset"]: write_tar_shard(p, s, features, commit=pending))
        kinds.append("webdataset")
    if "parquet" in paths:
        # one row group per sample: an ALS tile can hold millions of points, so memory stays at one sample
        rg = getattr(task, "row_group_size", 1)
        sinks.append(lambda s, p=out / paths["parquet"]: write_parquet_shard(p, s, features, row_group_size=rg,
                                                                               commit=pending))
        kinds.append("parquet")
    ok = False
    try:
        entries = _lockstep(task.iter_samples(), sinks)
        ok = True
    finally:
        commit_writes(pending, ok)  # a failure of one format leaves the other's previous file in place too
    return [{**e, "path": paths[k], "format": k, "split": task.split, "shard": task.index}
            for k, e in zip(kinds, entries)]
