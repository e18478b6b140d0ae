"""Deterministic, DDP-safe loader of a build's WebDataset shards, with safe decoders only (DESIGN.md §9).

Order of operations for one (epoch, rank):

1. **Shard shuffle** — every rank permutes the split's shard list with ``default_rng([seed, epoch])``
   (identical everywhere, no communication).  ``train=False`` keeps the stored order.
2. **Split by global worker** — ``g = rank × workers + worker_id`` of ``G = world_size × workers``
   (``workers`` = ``max(1, num_workers)``).  With at least ``G`` shards, worker ``g`` reads shards
   ``g, g+G, …`` of the permuted list; with fewer, it reads them all and keeps every ``G``-th
   sample (sample ``i`` of the shuffled stream goes to worker ``i mod G``).  A worker whose share
   is empty (fewer samples than global workers) reads the whole stream instead.
3. **Shuffle buffer** in the worker, seeded from ``(seed, epoch, g, pass)``.
4. **Fixed length** — every rank yields exactly ``len(loader) = num_samples // (world_size ×
   batch_size)`` batches (at least 1 when the split has a sample): a worker that runs out of
   samples wraps around into its own stream again (next ``pass``), so DDP ranks never wait on
   each other.  torch's DataLoader takes batches from its workers round-robin; rank batch ``b``
   is made by logical worker ``b mod workers``, and each worker yields exactly that many.
5. **Batches are built in the worker**: ``collate(samples, rng)`` with
   ``rng = default_rng([seed, epoch, rank, worker, b])`` (``b``: the rank's batch number).

**Exact resume**: ``start_batch=k`` yields batches ``k, k+1, …`` identical to an uninterrupted
iteration.  Each worker skips the samples it would have used for the earlier batches *before*
decoding them (raw member bytes go through the shuffle buffer; arrays are decoded only for the
samples that reach ``collate``), and DataLoader worker ``j`` plays logical worker
``(k + j) mod workers`` so that the round-robin order is unchanged.  Resuming needs the same
seed, epoch, world size, number of workers and batch size.

**Safe decoding**: shards are read and decoded by :mod:`.decode` (re-exported here:
:func:`iter_raw`, :func:`decode_sample`, :func:`decode_npy`, :func:`iter_shard`,
:func:`iter_samples`) — ``.npy`` and ``.json`` members only; any other member is refused with an
:class:`~als_datasets.errors.InputError` naming the shard, and so is a truncated or corrupt tar —
also when raised in a DataLoader worker process.

**Throughput**: with ``persistent_workers=True`` the worker processes survive from one epoch to
the next (:meth:`ShardLoader.set_epoch`, :meth:`ShardLoader.at`) — the batches are the same either way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import InputError
from .decode import decode_npy, decode_sample, iter_raw, iter_samples, iter_shard
from .info import DatasetInfo

__all__ = ["make_loader", "loader_for", "iter_samples", "iter_shard", "iter_raw", "decode_sample", "decode_npy",
           "pad_collate", "batch_array", "ShardLoader", "batches_per_rank", "worker_batch_counts"]


# --------------------------------------------------------------------------------------------
# Pure bookkeeping: how many batches, which worker
# --------------------------------------------------------------------------------------------
def batches_per_rank(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Batches every rank yields per epoch: ``num_samples // (world_size × batch_size)``, ≥ 1 if any."""
    if batch_size < 1 or world_size < 1:
        raise ValueError("batch_size and world_size must be ≥ 1")
    if num_samples <= 0:
        return 0
    return max(1, num_samples // (world_size * batch_size))


def worker_batch_counts(n_batches: int, workers: int, start_batch: int = 0) -> list[tuple[int, int]]:
    """Per logical worker ``w``: ``(batches made before start_batch, batches from start_batch on)``.

    Rank batch ``b`` belongs to worker ``b mod workers`` (torch's round-robin order).
    """
    out = []
    for w in range(workers):
        total = len(range(w, n_batches, workers))
        done = len(range(w, min(start_batch, n_batches), workers))
        out.append((done, total - done))
    return out


def _shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(n_shards))
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n_shards)]


def _shuffle_buffer(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Classic reservoir-style buffer: emit a random element once the buffer is full."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        buf[j], item = item, buf[j]
        yield item
    for j in rng.permutation(len(buf)):
        yield buf[int(j)]


# --------------------------------------------------------------------------------------------
# The iterable dataset (runs in each DataLoader worker)
# --------------------------------------------------------------------------------------------
class _Failure:
    """An InputError raised in a worker, carried back intact (torch would re-raise it as a
    RuntimeError with the worker's traceback, since InputError takes two arguments)."""

    def __init__(self, path, reason):
        self.path, self.reason = path, reason


class _ShardStream(IterableDataset):
    def __init__(self, shards: list[str], lengths: list[int], batch_size: int, collate: Callable, *, seed: int,
                 epoch: int, rank: int, world_size: int, workers: int, shuffle_buffer: int, start_batch: int,
                 n_batches: int, train: bool, info_path: str, position: torch.Tensor | None = None):
        super().__init__()
        self.shards, self.lengths, self.batch_size, self.collate = shards, lengths, batch_size, collate
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.workers, self.shuffle_buffer, self.start_batch = workers, shuffle_buffer, start_batch
        self.n_batches, self.train, self.info_path = n_batches, train, info_path
        # persistent workers: a shared-memory (epoch, start_batch) that the main process sets
        # before each iteration; a worker keeps its own copy of this object between epochs
        self.position = position

    def _share(self, g: int) -> tuple[list[int], int, int]:
        """(shard indices in order, sample stride, sample offset) of global worker ``g``."""
        order = _shard_order(len(self.shards), self.seed, self.epoch, self.train)
        G = self.world_size * self.workers
        if len(order) >= G:
            mine = order[g::G]
            if sum(self.lengths[i] for i in mine) > 0:
                return mine, 1, 0
        elif g < sum(self.lengths):
            return order, G, g
        return order, 1, 0  # empty share: fall back to the whole stream

    def _raw_stream(self, g: int) -> Iterator[tuple[str, str, dict]]:
        """(shard, key, raw fields) of worker ``g``, shuffled, wrapping around forever."""
        shard_ids, stride, offset = self._share(g)
        n_pass = 0
        while True:
            def one_pass():
                i = 0
                for s in shard_ids:
                    for key, fields in iter_raw(self.shards[s]):
                        if i % stride == offset:
                            yield self.shards[s], key, fields
                        i += 1
            items = one_pass()
            if self.train and self.shuffle_buffer > 1:
                rng = np.random.default_rng([self.seed, self.epoch, g, n_pass])
                items = _shuffle_buffer(items, self.shuffle_buffer, rng)
            got = 0
            for item in items:
                got += 1
                yield item
            if got == 0:
                raise InputError(self.info_path, "the split's shards hold no samples")
            n_pass += 1

    def _batches(self, phys: int) -> Iterator:
        w = (self.start_batch + phys) % self.workers  # logical worker (keeps torch's round-robin order)
        g = self.rank * self.workers + w
        done, todo = worker_batch_counts(self.n_batches, self.workers, self.start_batch)[w]
        if todo == 0:
            return
        stream = self._raw_stream(g)
        for _ in range(done * self.batch_size):  # skip at sample level: nothing decoded, no collate
            next(stream)
        for j in range(done, done + todo):
            b = w + j * self.workers
            samples = [decode_sample(*next(stream)) for _ in range(self.batch_size)]
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, w, b])
            yield self.collate(samples, rng)

    def __iter__(self):
        wi = get_worker_info()
        phys = 0 if wi is None else wi.id
        if self.position is not None:
            self.epoch, self.start_batch = (int(v) for v in self.position.tolist())
        try:
            yield from self._batches(phys)
        except InputError as exc:
            if wi is None:
                raise
            yield _Failure(exc.path, exc.reason)


# --------------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------------
class _WorkerPool:
    """One DataLoader with persistent workers, shared by a loader and the loaders its ``.at()`` makes.

    The workers get the epoch and first batch of each iteration through a shared-memory tensor
    that is written before torch's ``_ResumeIteration`` message is queued to them (so they see
    it when they start the new iteration); everything else about the epoch is fixed.
    """

    def __init__(self):
        self.dl: DataLoader | None = None
        self.position: torch.Tensor | None = None

    def iterate(self, loader: ShardLoader) -> Iterator:
        if self.dl is None:
            self.position = torch.zeros(2, dtype=torch.int64).share_memory_()
            self.dl = DataLoader(loader._dataset(self.position), batch_size=None, num_workers=loader.num_workers,
                                 pin_memory=loader.pin_memory, persistent_workers=True,
                                 multiprocessing_context=loader.multiprocessing_context)
        self.position[0], self.position[1] = loader.epoch, loader.start_batch
        return iter(self.dl)

    def close(self) -> None:
        it = getattr(self.dl, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.dl = self.position = None


class ShardLoader:
    """The rank's batches of one epoch; ``len()`` is the batches per rank per epoch.

    Iterating yields ``len(self) - start_batch`` batches (``remaining``): batches
    ``start_batch … len(self) - 1`` of the epoch.  Each ``iter()`` starts the workers afresh,
    unless ``persistent_workers=True`` (and ``num_workers > 0``): then the worker processes are
    started by the first iteration and reused by later ones — of this loader after
    :meth:`set_epoch`, and of every loader made from it by :meth:`at` — with exactly the batches
    a fresh loader would give for that epoch and first batch.  One iteration at a time per pool:
    starting one abandons the previous (torch drops its pending batches); :meth:`close` stops
    the workers (otherwise they stop when the last loader sharing them is garbage-collected).
    """

    def __init__(self, info: DatasetInfo, split: str, batch_size: int, collate: Callable, *, seed: int,
                 epoch: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 shuffle_buffer: int = 256, start_batch: int = 0, train: bool = True, pin_memory: bool = False,
                 multiprocessing_context=None, persistent_workers: bool = False, _pool: _WorkerPool | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.info, self.split, self.batch_size, self.collate = info, split, int(batch_size), collate
        self.seed, self.epoch, self.rank, self.world_size = int(seed), int(epoch), int(rank), int(world_size)
        self.num_workers, self.shuffle_buffer, self.train = int(num_workers), int(shuffle_buffer), bool(train)
        self.pin_memory, self.multiprocessing_context = pin_memory, multiprocessing_context
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self._pool = (_pool or _WorkerPool()) if self.persistent_workers else None
        self.num_samples = info.num_samples(split)
        self.batches_per_epoch = batches_per_rank(self.num_samples, self.batch_size, self.world_size)
        self.start_batch = 0
        self.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def remaining(self) -> int:
        """Batches that iterating will yield (``len(self) - start_batch``)."""
        return self.batches_per_epoch - self.start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Move this loader to another position (epoch, first batch), keeping its workers."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.batches_per_epoch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def at(self, epoch: int, start_batch: int = 0) -> ShardLoader:
        """The same loader at another position (epoch, first batch); with persistent workers, the
        new loader shares this one's worker processes."""
        return ShardLoader(self.info, self.split, self.batch_size, self.collate, seed=self.seed, epoch=epoch,
                           rank=self.rank, world_size=self.world_size, num_workers=self.num_workers,
                           shuffle_buffer=self.shuffle_buffer, start_batch=start_batch, train=self.train,
                           pin_memory=self.pin_memory, multiprocessing_context=self.multiprocessing_context,
                           persistent_workers=self.persistent_workers, _pool=self._pool)

    def close(self) -> None:
        """Stop persistent worker processes (a later iteration starts new ones); no-op otherwise."""
        if self._pool is not None:
            self._pool.close()

    def _dataset(self, position: torch.Tensor | None = None) -> _ShardStream:
        split = self.info.splits[self.split]
        return _ShardStream(
            self.info.shard_paths(self.split), [int(n) for n in split.get("shard_lengths", [])]
            or [1] * len(split["filenames"]), self.batch_size, self.collate, seed=self.seed, epoch=self.epoch,
            rank=self.rank, world_size=self.world_size, workers=max(1, self.num_workers),
            shuffle_buffer=self.shuffle_buffer, start_batch=self.start_batch, n_batches=self.batches_per_epoch,
            train=self.train, info_path=str(Path(self.info.root) / "_info.json"), position=position)

    def _open(self) -> Iterator:
        if self._pool is not None:
            return self._pool.iterate(self)
        kw = {}
        if self.num_workers > 0:
            kw = {"multiprocessing_context": self.multiprocessing_context, "persistent_workers": False}
        return iter(DataLoader(self._dataset(), batch_size=None, num_workers=self.num_workers,
                               pin_memory=self.pin_memory, **kw))

    def __iter__(self) -> Iterator:
        if self.remaining <= 0:
            return
        n = 0
        # the DataLoader iterator stays off this frame's locals: when an error propagates, a fresh
        # one (and its worker processes) is shut down at once, not when the traceback is freed
        for batch in self._open():
            if isinstance(batch, _Failure):
                raise InputError(batch.path, batch.reason)
            n += 1
            yield batch
        if n != self.remaining:  # never expected: the workers' counts are computed up front
            raise RuntimeError(f"loader yielded {n} batches, expected {self.remaining}")


def make_loader(info: DatasetInfo, split: str, batch_size: int, collate: Callable, *, seed: int, epoch: int = 0,
                rank: int = 0, world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 256,
                start_batch: int = 0, train: bool = True, **kw) -> ShardLoader:
    """The rank's loader for one epoch of ``split`` (see the module doc for the guarantees).

    ``collate(samples: list[dict], rng: numpy.random.Generator) -> dict[str, Tensor]`` runs in
    the worker.  ``train=False``: stored shard order and no shuffle buffer (evaluation).
    Extra keywords: ``pin_memory``, ``multiprocessing_context``, ``persistent_workers`` (reuse
    the worker processes across epochs through :meth:`ShardLoader.set_epoch` / :meth:`ShardLoader.at`).
    """
    return ShardLoader(info, split, batch_size, collate, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                       num_workers=num_workers, shuffle_buffer=shuffle_buffer, start_batch=start_batch,
                       train=train, **kw)


def _model_collate(fn: Callable, samples: list[dict], rng: np.random.Generator, *, config: dict,
                   info: DatasetInfo, train: bool) -> dict:
    return fn(samples, rng, config, info, train)


def loader_for(info: DatasetInfo, split: str, model_module, config: dict, *, batch_size: int | None = None,
               seed: int = 0, train: bool = True, **kw) -> ShardLoader:
    """:func:`make_loader` with a model module's ``collate(samples, rng, config, info, train)`` bound.

    ``batch_size`` defaults to the config's ``batch_size`` (per rank).  A module's optional
    ``warm_up(config)`` runs first, in this process, when there are worker processes (BEV-MAE
    loads its compiled kernels there once instead of in every worker).
    """
    bs = int(batch_size if batch_size is not None else config["batch_size"])
    warm_up = getattr(model_module, "warm_up", None)
    if warm_up is not None and kw.get("num_workers"):  # before the workers fork: they inherit what it loads
        warm_up(config)
    collate = functools.partial(_model_collate, model_module.collate, config=config, info=info, train=train)
    return make_loader(info, split, bs, collate, seed=seed, train=train, **kw)


def batch_array(shape: tuple, dtype: np.dtype) -> tuple[torch.Tensor, np.ndarray]:
    """An uninitialised tensor and its numpy view.  In a DataLoader worker it is allocated in shared
    memory straight away, as torch's ``default_collate`` does, so that sending the batch to the
    main process costs no extra copy."""
    elem = torch.from_numpy(np.empty(0, dtype))  # the torch dtype (raises for unsupported ones)
    if get_worker_info() is not None:
        try:
            storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
            t = elem.new(storage).resize_(shape)
            return t, t.numpy()
        except (AttributeError, RuntimeError):  # private torch API moved: allocate normally
            pass
    t = torch.empty(shape, dtype=elem.dtype)
    return t, t.numpy()


def pad_collate(samples: list[dict], rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
    """A model-free collate: every ``.npy`` field stacked into a tensor, padded with zeros along
    the first axis when lengths differ (then ``"<field>.lengths"`` holds the lengths).  The
    ``json`` members are dropped.  For benchmarks, tests and quick looks."""
    out: dict[str, torch.Tensor] = {}
    fields = sorted({k for s in samples for k in s if k.endswith(".npy")})
    for f in fields:
        arrs = [np.asarray(s[f]) for s in samples]
        dtype = np.result_type(*arrs)
        if all(a.shape == arrs[0].shape for a in arrs):
            out[f], view = batch_array((len(arrs), *arrs[0].shape), dtype)
            np.stack(arrs, out=view)
            continue
        n = max(a.shape[0] for a in arrs)
        out[f], view = batch_array((len(arrs), n, *arrs[0].shape[1:]), dtype)
        for i, a in enumerate(arrs):
            view[i, : a.shape[0]] = a
            view[i, a.shape[0]:] = 0
        out[f"{f}.lengths"] = torch.tensor([a.shape[0] for a in arrs], dtype=torch.int64)
    return out
