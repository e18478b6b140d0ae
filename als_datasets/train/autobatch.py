"""``--batch-size auto``: the largest per-GPU batch that fits the device, found by probing (issue 16).

Why: a config's batch is a paper's (DEM MAE's 256 leaves an H100 mostly idle); the batch that
fills a GPU depends on the GPU, so it is measured there rather than guessed.

How (:func:`probe_batch_size`, pure logic, tested on the CPU with a fake memory budget): one
training step — forward under bf16 autocast, backward, an AdamW step with learning rate 0 — of a
*throwaway* copy of the model at the config's batch, then at each power of two above it, until a
step runs out of memory (``torch.cuda.OutOfMemoryError``: caught, the cache emptied) or its peak
(``torch.cuda.max_memory_allocated``) exceeds ``budget`` (85 %) of the device's memory.  The
largest size that passed is the batch.  When the config's batch itself does not fit, halves of
it are tried down to 1.  Sizes are capped by the train split (a batch per process must exist)
and, when the config states an ``effective_batch``, must divide ``effective_batch / processes``
(so that ``accum_steps`` stays whole: the accumulation, and with it the global batch and the
learning rate, follow the chosen batch exactly as with an explicit ``--batch-size``).
Under ``torchrun`` every rank probes its own GPU and all take the smallest choice.

On the CPU (no CUDA) auto is the config's batch, with a one-line note.  The choice is recorded
in the run's ``config.json`` (``batch_size``, ``batch_size_auto: true``, ``batch_size_probe``:
the sizes tried, their peaks, the device).  A resumed auto run takes the batch from its
checkpoint: no re-probe, so the config matches and resume is exact.
"""

from __future__ import annotations

import gc
import itertools
import re
import sys
from collections.abc import Callable

import numpy as np
import torch

AUTO = "auto"
_OOM_TEXT = re.compile(r"out of memory|ALLOC_FAILED", re.IGNORECASE)
#: share of the device's memory a probe step's peak may reach (allocator slack, fragmentation,
#: pinned loader buffers and other processes' contexts take the rest)
BUDGET = 0.85


def parse_batch_size(value) -> int | str | None:
    """``--batch-size``: a positive integer, ``auto``, or None (the config's)."""
    if value is None or isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    s = str(value).strip().lower()
    if s == AUTO:
        return AUTO
    if s.isdigit() and int(s) >= 1:
        return int(s)
    raise ValueError(f"batch size must be a positive integer or 'auto', not {value!r}")


def candidates(start: int, cap: int | None = None, divides: int | None = None) -> list[int]:
    """Sizes probed upwards: ``start``, then each power of two above it, ≤ ``cap``, dividing ``divides``."""
    out, b = [int(start)], 1
    while b <= int(start):
        b *= 2
    while cap is None or b <= cap:
        out.append(b)
        b *= 2
        if cap is None and b > 2 ** 20:
            break
    return [c for c in out if (cap is None or c <= cap) and (not divides or divides % c == 0)]


def probe_batch_size(step: Callable[[int], int], start: int, total_bytes: int, *, budget: float = BUDGET,
                     cap: int | None = None, divides: int | None = None,
                     oom: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,),
                     after_oom: Callable[[], None] | None = None) -> dict:
    """Largest batch whose training step fits: ``{"batch_size", "tried": [{batch, peak_bytes, fits}],
    "budget_bytes", "total_bytes"}``.

    ``step(b)`` runs one step at batch ``b`` and returns its peak bytes, or raises one of ``oom``
    (then ``after_oom()`` frees what it can).  Sizes: :func:`candidates` upwards while they fit;
    if ``start`` does not fit, ``start // 2``, ``start // 4``, … down to 1.  Raises
    :class:`RuntimeError` when not even a batch of 1 fits.
    """
    limit = int(budget * total_bytes)
    tried: list[dict] = []

    def fits(b: int) -> bool:
        peak = None
        try:
            peak = int(step(b))
        except oom:
            pass
        if peak is None:  # out of the except block: the traceback (and the step's tensors) are gone
            tried.append({"batch": b, "peak_bytes": None, "fits": False})
            gc.collect()
            if after_oom is not None:
                after_oom()
            return False
        tried.append({"batch": b, "peak_bytes": peak, "fits": peak <= limit})
        return peak <= limit

    best = None
    for b in candidates(start, cap, divides):
        if not fits(b):
            break
        best = b
    b = int(start) // 2
    while best is None and b >= 1:
        if (cap is None or b <= cap) and (not divides or divides % b == 0) and fits(b):
            best = b
        b //= 2
    if best is None:
        raise RuntimeError(f"not even a batch of 1 fits in {budget:.0%} of {total_bytes / 2**30:.1f} GiB")
    return {"batch_size": best, "tried": tried, "budget_bytes": limit, "total_bytes": int(total_bytes)}


def _to_device(batch, dev):
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, dev) for k, v in batch.items()}
    return batch


def cuda_step(module, cfg: dict, info, dev: torch.device,
              n_samples: int = 64) -> tuple[Callable[[int], int], Callable]:
    """``(step, close)``: one bf16 training step of a throwaway model at batch ``b`` on ``dev``,
    returning ``torch.cuda.max_memory_allocated``; batches are collated from the first
    ``n_samples`` training samples, repeated.  AdamW with lr 0: the weights do not move (they
    would not matter either: the run builds its own model).  ``close()`` frees the model."""
    from .decode import iter_samples

    samples = list(itertools.islice(iter_samples(info, "train"), n_samples))
    state = {"net": module.build_model(cfg, info).to(dev).train()}

    def step(b: int) -> int:
        net = state["net"]
        batch = module.collate([samples[i % len(samples)] for i in range(b)], np.random.default_rng(b), cfg, info,
                               True)
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.0)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        try:
            batch = _to_device(batch, dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = net(batch)["loss"]
            loss.backward()
            opt.step()
            torch.cuda.synchronize(dev)
            return int(torch.cuda.max_memory_allocated(dev))
        except RuntimeError as exc:  # cuBLAS/cuDNN workspaces report running out as plain RuntimeErrors
            if isinstance(exc, torch.cuda.OutOfMemoryError) or not _OOM_TEXT.search(str(exc)):
                raise
            raise torch.cuda.OutOfMemoryError(str(exc)) from None
        finally:
            batch = loss = None
            net.zero_grad(set_to_none=True)
            opt = None

    def close() -> None:
        state.clear()
        gc.collect()
        torch.cuda.empty_cache()

    return step, close


def resolve_auto(module, cfg: dict, info, dev: torch.device, *, world: int = 1, recorded: int | None = None,
                 note: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """``(cfg with batch_size set, record for config.json)`` for ``--batch-size auto``.

    ``recorded``: the batch of the checkpoint being resumed (used as it is, no probe)."""
    note = note or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = int(cfg["batch_size"])
    if recorded is not None:
        return {**cfg, "batch_size": int(recorded)}, {"batch_size_auto": True, "batch_size_probe": {
            "device": str(dev), "resumed": True, "note": "batch of the checkpoint resumed (no re-probe)"}}
    if dev.type != "cuda":
        note(f"--batch-size auto: no CUDA device, using the config's batch {start}")
        return cfg, {"batch_size_auto": True, "batch_size_probe": {"device": str(dev), "note": "no CUDA: the "
                                                                   "config's batch"}}
    eff = cfg.get("effective_batch")
    divides = int(eff) // world if eff and int(eff) % world == 0 else None
    cap = max(1, info.num_samples("train") // world)
    step, close = cuda_step(module, cfg, info, dev)
    try:
        rec = probe_batch_size(step, start, torch.cuda.get_device_properties(dev).total_memory, cap=cap,
                               divides=divides, after_oom=torch.cuda.empty_cache)
    finally:
        close()
    chosen = rec["batch_size"]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([chosen], dtype=torch.int64, device=dev)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        chosen = int(t.item())
    rec = {**rec, "batch_size": chosen, "device": torch.cuda.get_device_name(dev), "budget": BUDGET}
    note(f"--batch-size auto: {chosen} per GPU (tried {', '.join(str(t['batch']) for t in rec['tried'])})")
    return {**cfg, "batch_size": chosen}, {"batch_size_auto": True, "batch_size_probe": rec}
