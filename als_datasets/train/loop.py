"""The pre-training loop (DESIGN.md §9): one function, :func:`train`, on one CPU, one GPU or under
``torchrun`` (DDP: gloo on CPU, nccl on CUDA).

What it does, and why:

* **Optimiser** — AdamW; norms, biases and learned tokens get no weight decay (as MAE does).
  Learning rate from the model's config: ``lr``, or ``blr`` × global batch / 256 (MAE's rule;
  global batch = ``batch_size`` per process × ``accum_steps`` × processes); per-step schedule:
  linear warmup then cosine to ``min_lr`` (``schedule: cosine``), OpenPCDet's one-cycle
  (``onecycle`` with ``pct_start``, ``div_factor``, ``final_div_factor`` and the ``moms`` beta1
  cycle: what BEV-MAE and the ALS paper used) or ``constant``; gradient clipping
  (``clip_grad``); gradient accumulation over ``accum_steps`` micro-batches (DDP syncs on the
  last one only), so that a paper's effective batch fits on fewer GPUs.
* **Precision** — bf16 autocast only when the device is CUDA; the same code path on CPU.
* **Checkpoints** — ``out/last.pt`` written atomically (temp file + ``os.replace``) with the
  model, optimiser, scheduler, loader position (step → epoch, batch in epoch), config, model
  name, dataset fingerprint (name + sha256 of every shard) and RNG states; only tensors and plain
  types, so it loads with ``torch.load(weights_only=True)``. A run restarted with the same
  command continues at the exact loader position (the loader's ``start_batch``): the next loss
  equals the uninterrupted run's. A checkpoint from a different model, config, dataset, seed or
  number of processes is refused with a one-line error.
* **Metrics** — ``out/metrics.jsonl``: step, epoch, loss and the model's other scalars (mean over
  the logging window and the ranks), lr, samples/s, step time, data-wait time per step (did the
  step wait on the loader?), and on CUDA the MFU from the model's ``flops_per_sample`` against
  :data:`PEAK_FLOPS`.
* **DDP** — ranks see the same number of batches by construction (the loader's fixed epoch
  length, checked at start); no ``find_unused_parameters``: every parameter must receive a
  gradient every step; only rank 0 writes files.

The schedule spans ``max_steps`` (or ``epochs`` × batches per epoch, or the config's ``epochs``);
``stop_after`` ends a run early *without* changing the schedule (a time-limited job slice, or a
test of exact resume).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from ..errors import InputError
from .autobatch import parse_batch_size, resolve_auto
from .info import DatasetInfo
from .models import get_config, get_model_module, with_dataset_statistics

CHECKPOINT_FORMAT = "als-datasets-pretrain-v1"

#: dense bf16 tensor-core peak FLOP/s by device-name substring (first match wins; vendor data sheets)
PEAK_FLOPS = [
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12),
]


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU from its name (``torch.cuda.get_device_name``), or None."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0, *,
              pct_start: float = 0.4, div_factor: float = 10.0, final_div_factor: float = 1e4) -> float:
    """Multiplier of the peak learning rate *for* optimiser step ``step`` (0-based).

    ``cosine``: linear warmup over ``warmup`` steps, then half a cosine down to ``min_ratio``;
    ``constant``: warmup, then flat; ``onecycle``: OpenPCDet's ``adam_onecycle`` (what BEV-MAE
    and the ALS paper used): cosine up from 1/``div_factor`` to 1 over the first ``pct_start``
    of the steps, then cosine down to 1/(``div_factor`` × ``final_div_factor``).
    """
    total = max(int(total), 1)
    if schedule == "onecycle":
        up = max(int(pct_start * total), 1)
        low = 1.0 / div_factor
        if step < up:
            return low + (1 - low) * (1 - math.cos(math.pi * step / up)) / 2
        end = low / final_div_factor
        t = min((step - up) / max(total - up, 1), 1.0)
        return end + (1 - end) * (1 + math.cos(math.pi * t)) / 2
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r} (cosine, onecycle or constant)")
    t = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * t)) / 2


def onecycle_beta1(step: int, total: int, moms: tuple[float, float], pct_start: float = 0.4) -> float:
    """OpenPCDet's one-cycle momentum (AdamW beta1): cosine ``moms[0]`` → ``moms[1]`` while the lr
    rises, back to ``moms[0]`` while it falls."""
    total = max(int(total), 1)
    up = max(int(pct_start * total), 1)
    hi, lo = float(moms[0]), float(moms[1])
    if step < up:
        return lo + (hi - lo) * (1 + math.cos(math.pi * step / up)) / 2
    t = min((step - up) / max(total - up, 1), 1.0)
    return hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2


def resolve_lr(cfg: dict, global_batch: int) -> float:
    """Peak lr: the config's ``lr``, else ``blr`` × global batch / 256 (MAE's linear scaling rule)."""
    if cfg.get("lr") is not None:
        return float(cfg["lr"])
    if cfg.get("blr") is not None:
        return float(cfg["blr"]) * global_batch / 256
    return 1e-3


def resolve_accum(cfg: dict, batch: int, world: int) -> int:
    """Micro-batches per optimiser step: ``effective_batch`` / (batch × world) when the config states
    an effective batch, else ``accum_steps`` (default 1)."""
    eff = cfg.get("effective_batch")
    if eff:
        per_step = batch * world
        if int(eff) % per_step:
            raise InputError(None, f"effective batch {eff} is not a multiple of batch_size {batch} × {world} "
                                   f"process(es); choose --batch-size or --accum-steps")
        return max(int(eff) // per_step, 1)
    return max(int(cfg.get("accum_steps") or 1), 1)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay for biases, norm weights (1-d), tokens and position embeddings (MAE)."""
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip or "token" in name or "pos_embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def make_optimizer(net: torch.nn.Module, cfg: dict, lr: float) -> torch.optim.AdamW:
    """AdamW of the config (betas, weight decay, no decay on norms/biases/tokens), one fused kernel
    for all parameters where torch has one (CPU and CUDA), so a step is not ~20 ops per tensor."""
    betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.95)))
    groups = param_groups(net, float(cfg.get("weight_decay", 0.05)))
    devs = {p.device.type for g in groups for p in g["params"]}
    fused = devs <= {"cpu", "cuda"} and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
                                           for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


def clip_gradients(params: list, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` (total L2 norm of all gradients, scaled down to ``max_norm``) with
    multi-tensor ops and no per-tensor device moves; returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.cat([n.view(1) for n in norms]))
    torch._foreach_mul_(grads, (float(max_norm) / (total + 1e-6)).clamp(max=1.0))
    return total


def plain(obj):
    """``obj`` as JSON types (tuples → lists), so configs compare and store the same everywhere."""
    return json.loads(json.dumps(obj, sort_keys=True))


def dataset_fingerprint(info: DatasetInfo) -> str:
    """Name + sha256 of every shard the loader reads (from ``manifest.json``): changes with the data."""
    manifest = json.loads((Path(info.root) / "manifest.json").read_text())
    wanted = {f for s in info.splits.values() for f in s.get("filenames", [])}
    rows = sorted((s["path"], s.get("sha256", "")) for s in manifest.get("shards", [])
                  if not wanted or s.get("path") in wanted)
    h = hashlib.sha256(info.name.encode())
    for path, sha in rows:
        h.update(f"\n{path}\t{sha}".encode())
    return h.hexdigest()


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``device`` or CUDA (this process's local rank) when available, else CPU."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(None, f"device {device!r} requested but torch sees no CUDA device")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
        return dev
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the ``torchrun`` environment (1 process without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def default_workers(world_size: int = 1) -> int:
    """Loader worker processes per rank: the cores per rank minus the training process, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) // max(world_size, 1) - 1))


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a killed process never leaves half a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`train` (tensors and plain types only: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, a pickle with code in it, not a torch file...
        raise InputError(path, f"not a readable checkpoint: {str(exc)[:200] or 'truncated or not a torch file'}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, f"not an als-datasets pretraining checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def check_resume(ckpt: dict, expect: dict, path) -> None:
    """Refuse (one line) to resume from a checkpoint of another run: model, data, config, seed...
    (the data before the config: a config can hold values measured on the data)."""
    what = {"model_name": "model", "fingerprint": "dataset (name or shards)", "config": "config",
            "seed": "seed", "world_size": "number of processes",
            "num_workers": "loader workers per process (--num-workers)", "steps_per_epoch": "batches per epoch",
            "total_steps": "schedule length (--max-steps / --epochs)"}
    for key, label in what.items():
        if ckpt.get(key) != expect[key]:
            if key == "config":
                diff = sorted(k for k in set(ckpt[key]) | set(expect[key]) if ckpt[key].get(k) != expect[key].get(k))
                detail = f"keys {', '.join(diff)} differ"
            elif key == "fingerprint":
                detail = "the shards differ"
            else:
                detail = f"{ckpt.get(key)!r} there, {expect[key]!r} now"
            raise InputError(path, f"checkpoint is from another run: {label} differs ({detail}); "
                                   "use another --out or --no-resume")


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _make_loader(info, module, cfg, *, seed, epoch, rank, world_size, num_workers, start_batch, pin=False):
    from . import loader

    return loader.loader_for(info, "train", module, cfg, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                             num_workers=num_workers, start_batch=start_batch, train=True, pin_memory=pin,
                             shuffle_buffer=int(cfg.get("shuffle_buffer", 256)))


class _Progress:
    """A rich bar (steps, loss) on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, done: int, title: str):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=Console(stderr=True))
            self.bar.__enter__()
            self.task = self.bar.add_task(title, total=total, completed=done, info="")

    def update(self, step: int, info: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def train(data, model: str, config: str | dict = "tiny", out=None, max_steps: int | None = None,
          epochs: int | None = None, seed: int = 0, batch_size: int | None = None, lr: float | None = None,
          num_workers: int | None = None, resume: bool = True, device=None, log_every: int = 10,
          ckpt_every: int | None = 500, keep_every: int | None = None, stop_after: int | None = None,
          progress: bool = True, accum_steps: int | None = None, effective_batch: int | None = None) -> dict:
    """Pretrain ``model`` (``bev-mae`` | ``satmae`` | ``dem-mae``) on the build folder ``data``.

    ``batch_size`` is per process and micro-batch (global batch = batch_size × the config's
    ``accum_steps`` × world size), or ``"auto"``: the largest that fits the GPU (:mod:`.autobatch`;
    the config's on a CPU); ``lr`` overrides the config's ``lr``/``blr``.
    ``accum_steps`` overrides the config's; ``effective_batch`` (or the config's, when neither
    ``accum_steps`` is given) sets it to effective batch / (batch_size × world size), which must
    be a whole number: a paper's effective batch on however many GPUs (lr from ``blr`` follows it).
    The resolved config (with ``accum_steps``, ``global_batch``, ``peak_lr``) is written to
    ``out/config.json``.
    ``max_steps``/``epochs`` set the schedule's length (both: the shorter; neither: the config's
    ``epochs``); ``stop_after`` stops at that step without changing the schedule.
    ``ckpt_every``: steps between ``last.pt`` writes (and always at the end); ``keep_every``: also
    keep ``step-N.pt``. ``resume``: continue from ``out/last.pt`` if present. Returns a summary
    (also written to ``out/summary.json`` by rank 0) including every rank's step count.
    """
    import torch.distributed as dist

    info = DatasetInfo.from_folder(data)
    try:
        batch_size = parse_batch_size(batch_size)
        auto = batch_size == "auto"
        module = get_model_module(model)
        cfg = get_config(model, config, batch_size=None if auto else batch_size, lr=lr, accum_steps=accum_steps,
                         effective_batch=effective_batch)
        if accum_steps is not None and effective_batch is None and cfg.get("effective_batch"):
            cfg["effective_batch"] = None  # an explicit accumulation wins over the config's effective batch
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if module.KIND != info.kind:
        raise InputError(Path(info.root) / "manifest.json",
                         f"model {model} trains on {module.KIND} data but this dataset is {info.kind}")
    config_name = config if isinstance(config, str) else "custom"
    cfg = with_dataset_statistics(module, cfg, info)
    cfg = plain(cfg)
    out = Path(out) if out is not None else info.run_dir(f"{model}-{config_name}")

    rank, world, local_rank = dist_env()
    dev = resolve_device(device, local_rank)
    owns_pg = world > 1 and not (dist.is_available() and dist.is_initialized())
    if owns_pg:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    distributed = world > 1
    if num_workers is None:
        num_workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    try:
        card = {"batch_size_auto": False}
        if auto:  # resumed: the checkpoint's batch, no re-probe (the config must match)
            last = out / "last.pt"
            recorded = load_checkpoint(last)["config"]["batch_size"] if resume and last.is_file() else None
            cfg, card = resolve_auto(module, cfg, info, dev, world=world, recorded=recorded,
                                     note=(lambda m: print(m, file=sys.stderr, flush=True)) if rank == 0 else str)
        result = _run(info, module, model, cfg, config_name, out, max_steps, epochs, seed, num_workers, resume, dev,
                      rank, world, distributed, max(int(log_every), 1), ckpt_every, keep_every, stop_after,
                      progress and rank == 0, card)
        if owns_pg:  # every rank tears gloo down together (a peer exiting mid-teardown can abort the other)
            dist.barrier()
        return result
    finally:
        if owns_pg and dist.is_initialized():
            dist.destroy_process_group()


def _run(info, module, model_name, cfg, config_name, out, max_steps, epochs, seed, num_workers, resume, dev,
         rank, world, distributed, log_every, ckpt_every, keep_every, stop_after, show_progress, card) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    batch = int(cfg.get("batch_size", 8))
    accum = resolve_accum(cfg, batch, world)
    probe = _make_loader(info, module, cfg, seed=seed, epoch=0, rank=rank, world_size=world,
                         num_workers=num_workers, start_batch=0)
    n_batches = len(probe)
    del probe
    spe = n_batches // accum  # optimiser steps per epoch; the loader's leftover batches are skipped
    if spe <= 0:
        raise InputError(Path(info.root) / "_info.json",
                         f"train split has {info.num_samples('train')} samples: fewer than {accum} batch(es) of "
                         f"{batch} per process × {world} process(es); lower --batch-size or accum_steps")
    if distributed:  # equal epochs per rank or DDP hangs: check it once instead of deadlocking later
        t = torch.tensor([spe, -spe], dtype=torch.int64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise RuntimeError(f"ranks disagree on steps per epoch ({-int(t[1])}..{int(t[0])})")
    if max_steps is not None:
        total = int(max_steps) if epochs is None else min(int(max_steps), int(epochs) * spe)
    else:
        total = int(epochs if epochs is not None else cfg.get("epochs", 1)) * spe
    total = max(total, 1)
    warmup = int(cfg["warmup_steps"]) if cfg.get("warmup_steps") is not None else \
        int(round(float(cfg.get("warmup_epochs", 0)) * spe))
    warmup = min(warmup, total // 2)
    global_batch = batch * accum * world
    peak_lr = resolve_lr(cfg, global_batch)
    min_ratio = float(cfg.get("min_lr", 0.0)) / peak_lr if peak_lr else 0.0
    schedule = str(cfg.get("schedule", "cosine"))
    shape = {k: float(cfg[k]) for k in ("pct_start", "div_factor", "final_div_factor") if cfg.get(k) is not None}
    moms = cfg.get("moms") if schedule == "onecycle" else None
    if str(cfg.get("optimizer", "adamw")).lower() != "adamw":
        raise InputError(None, f"optimizer {cfg['optimizer']!r} is not supported (adamw)")
    lr_factor(0, total, warmup, schedule, min_ratio, **shape)  # unknown schedule names fail before any work

    torch.manual_seed(seed)  # same initial weights on every rank and every run
    net = module.build_model(cfg, info).to(dev)
    betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.95)))
    opt = make_optimizer(net, cfg, peak_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, schedule, min_ratio, **shape))
    expect = {"model_name": model_name, "config": cfg, "fingerprint": dataset_fingerprint(info), "seed": seed,
              "world_size": world, "num_workers": max(1, num_workers), "steps_per_epoch": spe, "total_steps": total}

    step, resumed_from = 0, None
    last = out / "last.pt"
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        check_resume(ckpt, expect, last)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if dev.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], dev)
        step = resumed_from = int(ckpt["step"])
    ddp = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) if distributed else net

    def state() -> dict:
        return {"format": CHECKPOINT_FORMAT, **expect, "config_name": config_name, "model": net.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                "epoch": step // spe, "batch_in_epoch": (step % spe) * accum,
                "dataset": {"name": info.name, "kind": info.kind, "root": str(Path(info.root).resolve())},
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    fps = getattr(module, "flops_per_sample", None)
    flops = float(fps(cfg, info)) if (fps is not None and dev.type == "cuda") else None
    peak = peak_flops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    clip = cfg.get("clip_grad")
    params = [p for p in net.parameters() if p.requires_grad]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        metrics = _open_metrics(out / "metrics.jsonl", step)
        (out / "config.json").write_text(json.dumps(
            {"model": model_name, "config_name": config_name, "world_size": world, "accum_steps": accum,
             "global_batch": global_batch, "peak_lr": peak_lr, "batch_size": batch, **card, "config": cfg},
            indent=2, default=str) + "\n")
    bar = _Progress(show_progress, total, step, f"{model_name} ({config_name})")
    stop_at = total if stop_after is None else min(total, int(stop_after))
    start_step, steps_run, t_start = step, 0, time.perf_counter()
    win = {"sums": {}, "n": 0, "wait": 0.0, "t0": time.perf_counter()}
    last_loss, updating = None, False
    net.train()
    try:
        while step < stop_at:
            epoch, s0 = divmod(step, spe)
            loader = _make_loader(info, module, cfg, seed=seed, epoch=epoch, rank=rank, world_size=world,
                                  num_workers=num_workers, start_batch=s0 * accum, pin=dev.type == "cuda")
            it = iter(loader)
            for _ in range(s0, spe):
                if step >= stop_at:
                    break
                if moms is not None:
                    beta1 = onecycle_beta1(step, total, moms, shape.get("pct_start", 0.4))
                    for g in opt.param_groups:
                        g["betas"] = (beta1, betas[1])
                opt.zero_grad(set_to_none=True)
                scalars: dict = {}
                for m in range(accum):
                    t0 = time.perf_counter()
                    try:
                        batch_data = next(it)
                    except StopIteration:
                        raise RuntimeError(f"loader ended early in epoch {epoch} (step {step})") from None
                    win["wait"] += time.perf_counter() - t0
                    batch_data = _to_device(batch_data, dev)
                    sync = not distributed or m == accum - 1  # all-reduce gradients on the last micro-batch only
                    with contextlib.nullcontext() if sync else ddp.no_sync():
                        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                            res = ddp(batch_data)
                        (res["loss"] / accum if accum > 1 else res["loss"]).backward()
                    for k, v in res.items():
                        if isinstance(v, torch.Tensor) and v.numel() == 1:
                            v = v.detach().float().reshape(())
                        elif isinstance(v, (int, float)) and not isinstance(v, bool):
                            v = torch.tensor(float(v), device=dev)
                        else:
                            continue
                        scalars[k] = scalars.get(k, 0.0) + v / accum
                if clip:
                    scalars["grad_norm"] = clip_gradients(params, float(clip)).detach().float()
                lr_now = opt.param_groups[0]["lr"]
                updating = True  # an interrupt in here leaves a half-updated model: no checkpoint then
                opt.step()
                sched.step()
                step += 1
                updating = False
                steps_run += 1
                for k, v in scalars.items():
                    win["sums"][k] = win["sums"].get(k, 0.0) + v
                win["n"] += 1
                if step % log_every == 0 or step == stop_at:
                    row = _flush(win, step, spe, lr_now, global_batch, world, distributed, dev, flops, peak)
                    last_loss = row.get("loss")
                    if last_loss is not None and not math.isfinite(last_loss):
                        raise FloatingPointError(f"loss is {last_loss} at step {step}: "
                                                 "lower the lr or check the data")
                    if rank == 0:
                        metrics.write(json.dumps(row) + "\n")
                        metrics.flush()
                    bar.update(step, f"loss {last_loss:.4f}" if last_loss is not None else "")
                if rank == 0 and ((ckpt_every and step % int(ckpt_every) == 0) or step == stop_at):
                    save_checkpoint(last, state())
                if rank == 0 and keep_every and step % int(keep_every) == 0:
                    save_checkpoint(out / f"step-{step}.pt", state())
            del it, loader
    except KeyboardInterrupt:
        if rank == 0 and not distributed and step > start_step and not updating:
            save_checkpoint(last, state())  # the step boundary is consistent: resume continues from here
        raise
    finally:
        bar.close()
        if rank == 0:
            metrics.close()

    elapsed = time.perf_counter() - t_start
    per_rank = [steps_run]
    if distributed:
        gathered = [None] * world
        dist.all_gather_object(gathered, {"rank": rank, "steps_run": steps_run, "step": step})
        per_rank = [g["steps_run"] for g in sorted(gathered, key=lambda g: g["rank"])]
        dist.barrier()
    summary = {"model": model_name, "config": config_name, "data": str(info.root), "out": str(out),
               "device": str(dev), "world_size": world, "step": step, "total_steps": total, "epoch": step // spe,
               "steps_per_epoch": spe, "accum_steps": accum, "steps_run": steps_run, "steps_per_rank": per_rank,
               "resumed_from": resumed_from, "final_loss": last_loss, "global_batch": global_batch,
               "peak_lr": peak_lr,
               "elapsed_s": round(elapsed, 3),
               "samples_per_s": round(steps_run * global_batch / elapsed, 3) if steps_run and elapsed > 0 else None,
               "checkpoint": str(last), "complete": step >= total}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _open_metrics(path: Path, step: int):
    """``metrics.jsonl`` for appending, cut back to the rows up to ``step`` (the checkpoint's): a run
    that died after logging steps it never checkpointed, or a ``--no-resume`` restart (step 0),
    leaves no stale or duplicated rows."""
    if path.is_file():
        keep = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["step"]) <= step:
                    keep.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(keep))
        os.replace(tmp, path)
    return path.open("a")


def _flush(win: dict, step, spe, lr_now, global_batch, world, distributed, dev, flops, peak) -> dict:
    """One metrics row from the logging window (mean over its steps and over the ranks); resets it."""
    import torch.distributed as dist

    keys = sorted(win["sums"])
    vals = torch.stack([win["sums"][k] for k in keys]) / win["n"] if keys else torch.zeros(0, device=dev)
    timing = torch.tensor([time.perf_counter() - win["t0"], win["wait"]], device=dev, dtype=torch.float64)
    if distributed:
        dist.all_reduce(vals)
        vals /= world
        dist.all_reduce(timing, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    dt, wait = (float(x) for x in timing.tolist())
    n = win["n"]
    row = {"step": step, "epoch": (step - 1) // spe, "lr": lr_now}
    row.update({k: float(v) for k, v in zip(keys, vals.tolist())})
    row.update({"step_time_s": dt / n, "data_wait_s": wait / n, "data_wait_share": wait / dt if dt > 0 else 0.0,
                "samples_per_s": n * global_batch / dt if dt > 0 else None})
    if dev.type == "cuda":
        row["max_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        if flops and peak and dt > 0:
            row["mfu"] = flops * (n * global_batch / world) / dt / peak
    win.update(sums={}, n=0, wait=0.0, t0=time.perf_counter())
    return row
