"""Benchmark: training throughput of the pre-training harness, per model, through the real loop.

    python bench/bench_train.py                          # tiny configs on the CPU
    python bench/bench_train.py --device cuda            # tiny and base configs on a GPU (bf16, MFU)
    python bench/bench_train.py --models dem-mae --steps 40 --num-workers 2
    python bench/bench_train.py --threads 1 2                 # each config with 1 and with 2 torch threads

For each model it writes a synthetic build folder of its kind (``tests/train_data.py``: ALS
tiles, Sentinel-2/Landsat patches, DEM patches; sizes below), runs
:func:`als_datasets.train.loop.train` for ``--steps`` optimiser steps with one metrics row per
step, drops the first ``--warmup`` steps (allocator, autotuning, worker start) and reports from
the rest: median step time, samples/s (batch / median step time), the share of the step spent
waiting on the loader (``data_wait_s / step_time_s``: near 0 means the loader keeps up), and on
CUDA the MFU from the model's ``flops_per_sample`` (analytic, fwd + bwd) against the bf16 dense
peak of the device (:data:`als_datasets.train.loop.PEAK_FLOPS`). BEV-MAE has no FLOP model
(sparse convolutions): no MFU for it.

Writes ``bench/results/train.json`` (or ``--out``) with the machine's description.

``--events`` measures instead what CI can check on any machine: torch-profiler ``aten::`` events
per BEV-MAE training step on the CPU (``--events-config base``, batch 2, synthetic tiles of
``--events-points`` ~30 k points, ``--threads`` 2), all of them and those of the convolution path
(names containing index_select, gather, index_add, scatter, index_put, mm, addmm, bmm or
matmul), and the step time without the profiler (steps of the backends interleaved), for the
default backend (on the CPU in float32: the compiled kernel of ``train/rulebook_cpu.py``), the
per-tap path (``torch-loop``) and the fused torch path (``torch-fused``, what a GPU runs) on the
same batch and weights; then (``--layer-repeats``) each distinct convolution of that step alone,
forward + backward at its real pair count and widths, per method, interleaved; into
``bench/results/train_events.json``.  ``--collate`` times BEV-MAE's per-sample preparation
(``prepare_sample``) and the whole loader-worker path per sample (shard bytes, decode, prepare,
batch) for the pre-issue-16, the previous and the current implementation (``bench_collate.py``),
interleaved, into ``bench/results/train_collate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the synthetic build folders of the test suite

KIND = {"bev-mae": "als", "satmae": "satellite", "dem-mae": "dem"}
#: synthetic data per (kind, config): samples and sizes close to what the config expects
DATA = {
    ("als", "tiny"): {"n_points": 3000, "tile_size_m": 150.0},
    ("als", "base"): {"n_points": 90000, "tile_size_m": 150.0},  # ~4 pts/m², a 144 m crop fits
    ("satellite", "tiny"): {"patch_size_px": 32},
    ("satellite", "base"): {"patch_size_px": 96},
    ("dem", "tiny"): {"patch_size_px": 32},
    ("dem", "base"): {"patch_size_px": 224},
}


def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "device": device,
            "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg_1m": os.getloadavg()[0]}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def bench_one(model: str, config: str, root: Path, *, steps: int, warmup: int, device: str, num_workers: int,
              batch_size: int | None) -> dict:
    from train_data import write_dataset

    from als_datasets.train.loop import train
    from als_datasets.train.models import get_config

    kind = KIND[model]
    cfg = get_config(model, config, batch_size=batch_size)
    bs = int(cfg["batch_size"])
    n_train = max(bs * (steps + 2), 64)  # one epoch covers the run: no epoch boundary in the timing
    data = write_dataset(root / f"{kind}-{config}", kind, n_train=n_train, n_val=0, shard_size=max(bs * 4, 16),
                         seed=0, **DATA[(kind, config)])
    t0 = time.perf_counter()
    s = train(data, model, config, out=root / f"run-{model}-{config}", max_steps=steps, batch_size=batch_size,
              num_workers=num_workers, device=device, log_every=1, ckpt_every=10**9, progress=False, resume=False,
              accum_steps=1)  # one micro-batch per step: the figures are per micro-batch
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (root / f"run-{model}-{config}" / "metrics.jsonl").read_text().splitlines()]
    rows = rows[warmup:] or rows
    step_t = statistics.median(r["step_time_s"] for r in rows)
    wait = sum(r["data_wait_s"] for r in rows) / max(sum(r["step_time_s"] for r in rows), 1e-12)
    out = {"model": model, "config": config, "batch_size": bs, "global_batch": s["global_batch"],
           "steps_timed": len(rows), "median_step_s": round(step_t, 5),
           "samples_per_s": round(s["global_batch"] / step_t, 2), "data_wait_share": round(wait, 4),
           "final_loss": s["final_loss"], "run_wall_s": round(wall, 2), "num_workers": num_workers}
    mfu = [r["mfu"] for r in rows if "mfu" in r]
    if mfu:
        out["mfu"] = round(statistics.median(mfu), 4)
    mem = [r["max_mem_gib"] for r in rows if "max_mem_gib" in r]
    if mem:
        out["max_mem_gib"] = round(max(mem), 2)
    return out


CONV_PATH = ("index_select", "gather", "index_add", "scatter", "index_put", "mm", "addmm", "bmm", "matmul")


def step_events(net, batch, opt, clip: float | None) -> tuple[int, int, dict]:
    """``aten::`` events of one training step (forward, backward, clip, optimiser): all, conv path, by name."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    from als_datasets.train.loop import clip_gradients

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.zero_grad(set_to_none=True)
        net(batch)["loss"].backward()
        if clip:
            clip_gradients([p for p in net.parameters() if p.requires_grad], clip)
        opt.step()
    names = [e.name for e in prof.events() if e.name.startswith("aten::")]
    conv = sum(any(c in n for c in CONV_PATH) for n in names)
    return len(names), conv, dict(Counter(names).most_common(12))


def _conv_method(backend: str) -> str:
    """What a float32 CPU layer runs under ``backend`` (``torch``: the compiled kernel where available)."""
    if backend == "torch":
        from als_datasets.train import rulebook_cpu

        return "cpu" if rulebook_cpu.available() else "fused or loop by layer size"
    return {"torch-loop": "loop", "torch-fused": "fused"}.get(backend, backend)


def bench_events(config: str, points: int, threads: int, steps: int, backends) -> list[dict]:
    """Events per step and step time of each backend on the same batch and initial weights; the
    timed steps of the backends alternate (A B A B ...) so that a shared machine's changing load
    falls on all of them alike."""
    import numpy as np
    import torch
    from train_data import make_samples

    from als_datasets.train.loop import clip_gradients, make_optimizer
    from als_datasets.train.models import bev_mae, get_config

    torch.set_num_threads(threads)
    runs = {}
    for backend in backends:
        cfg = get_config("bev-mae", config, backend=backend)
        batch = bev_mae.collate(make_samples("als", 2, seed=0, n_points=points), np.random.default_rng(0), cfg)
        torch.manual_seed(0)
        net = bev_mae.build_model(cfg)
        net.train()
        runs[backend] = (cfg, batch, net, make_optimizer(net, cfg, 1e-4), [])
    for i in range(steps + 1):  # the first step of each (allocator, caches) is left out
        for backend, (cfg, batch, net, opt, times) in runs.items():
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            res = net(batch)
            res["loss"].backward()
            clip_gradients([p for p in net.parameters() if p.requires_grad], float(cfg.get("clip_grad") or 1e9))
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
            print(f"  {backend} step {i}: {time.perf_counter() - t0:.2f} s, loss {float(res['loss'].detach()):.4f}",
                  flush=True)
    out = []
    for backend, (cfg, batch, net, opt, times) in runs.items():
        total, conv, top = step_events(net, batch, opt, cfg.get("clip_grad"))
        r = {"config": config, "backend": backend, "voxels": len(batch["coords"]), "points_per_tile": points,
             "torch_threads": threads, "aten_events_per_step": total, "conv_path_events_per_step": conv,
             "conv_method": _conv_method(backend), "step_s": round(statistics.median(times), 3),
             "step_s_min": round(min(times), 3), "step_s_all": [round(t, 3) for t in times],
             "top_events": top}
        print(f"bev-mae {config} {backend:<10} {r['voxels']} voxels: {total:>6} aten events/step, conv path {conv:>6},"
              f" step {r['step_s']:.2f} s (median of {len(times)})", flush=True)
        out.append(r)
    a = out[0]
    for b in out[1:]:
        print(f"{a['backend']} against {b['backend']}: {b['aten_events_per_step'] / a['aten_events_per_step']:.1f}x "
              f"fewer events, conv path {b['conv_path_events_per_step'] / max(a['conv_path_events_per_step'], 1):.1f}x; "
              f"step time {b['step_s'] / a['step_s']:.2f}x as fast (min {min(b['step_s_all']) / min(a['step_s_all']):.2f}x)",
              flush=True)
    return out


def bench_layers(config: str, points: int, threads: int, repeats: int, methods=("cpu", "loop", "fused")) -> list[dict]:
    """Forward + backward time of each distinct sparse convolution of a BEV-MAE step (its real
    rulebook, channel widths and pair count; random float32 features, weights and output
    gradients), per method of :func:`als_datasets.train.rulebook.rulebook_conv`, the methods
    interleaved, ``repeats`` timed rounds after one warm round: min and median (s)."""
    import numpy as np
    import torch
    from train_data import make_samples

    from als_datasets.train import rulebook, sparse
    from als_datasets.train.models import bev_mae, get_config

    torch.set_num_threads(threads)
    if "cpu" in methods:
        from als_datasets.train import rulebook_cpu

        if not rulebook_cpu.available():
            methods = tuple(m for m in methods if m != "cpu")
    cfg = get_config("bev-mae", config, backend="torch-loop")
    batch = bev_mae.collate(make_samples("als", 2, seed=0, n_points=points), np.random.default_rng(0), cfg)
    torch.manual_seed(0)
    net = bev_mae.build_model(cfg)
    layers, orig = {}, sparse.rulebook_conv

    def record(feats, weight, rb, dtype, method="fused"):
        layers.setdefault((id(rb), tuple(weight.shape)), [rb, tuple(weight.shape), 0])[2] += 1
        return orig(feats, weight, rb, dtype, method)

    sparse.rulebook_conv = record
    try:
        with torch.no_grad():
            net(batch)
    finally:
        sparse.rulebook_conv = orig
    out = []
    for rb, shape, uses in layers.values():
        g = torch.Generator().manual_seed(0)
        f = torch.randn(rb.n_in, shape[1], generator=g)
        w = torch.randn(shape, generator=g) * 0.05
        go = torch.randn(rb.n_out, shape[0], generator=g)
        times = {m: [] for m in methods}
        for r in range(repeats + 1):
            for m in methods:
                fr, wr = f.clone().requires_grad_(True), w.clone().requires_grad_(True)
                t0 = time.perf_counter()
                rulebook.rulebook_conv(fr, wr, rb, torch.float32, m).backward(go)
                if r:
                    times[m].append(time.perf_counter() - t0)
        row = {"weight": list(shape), "pairs": rb.pairs(), "n_in": rb.n_in, "n_out": rb.n_out, "uses_per_step": uses,
               **{f"{m}_s_min": round(min(v), 4) for m, v in times.items()},
               **{f"{m}_s_median": round(statistics.median(v), 4) for m, v in times.items()}}
        print("  layer " + json.dumps(row), flush=True)
        out.append(row)
    return out


def bev_gpu_profile(points: int, batch: int, steps: int = 5, backend: str | None = None) -> dict:
    """BEV-MAE base on CUDA (bf16 autocast) on one fixed batch: step time, samples/s, peak memory and
    the share of the step the GPU is busy (sum of CUDA kernel times / wall time, profiler)."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile
    from train_data import make_samples

    from als_datasets.train.loop import _to_device, clip_gradients, make_optimizer
    from als_datasets.train.models import bev_mae, get_config

    dev = torch.device("cuda")
    cfg = get_config("bev-mae", "base", batch_size=batch, backend=backend)
    data = bev_mae.collate(make_samples("als", batch, seed=0, n_points=points), np.random.default_rng(0), cfg)
    data = _to_device(data, dev)
    torch.manual_seed(0)
    net = bev_mae.build_model(cfg).to(dev)
    opt = make_optimizer(net, cfg, 1e-4)
    params = list(net.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = net(data)["loss"]
        loss.backward()
        clip_gradients(params, 10.0)
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t1 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t1
    kernels = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6
    return {"points": points, "batch": batch, "backend": backend or "torch", "voxels": int(len(data["coords"])),
            "step_s": round(dt, 4), "samples_per_s": round(batch / dt, 2),
            "gpu_busy_share": round(min(kernels / wall, 1.0), 3),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(KIND), choices=list(KIND))
    p.add_argument("--configs", nargs="+", default=None, help="default: tiny on cpu, tiny and base on cuda")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the figures")
    p.add_argument("--num-workers", type=int, default=None, help="loader workers (default: cores - 1, ≤ 8)")
    p.add_argument("--batch-size", type=int, default=None, help="override every config's batch size")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch intra-op thread counts to measure (default: torch's own)")
    p.add_argument("--out", default=None, help="default bench/results/train.json (train_events.json, "
                                                "train_collate.json)")
    p.add_argument("--events", action="store_true", help="aten events per BEV-MAE CPU step, fused vs per-tap")
    p.add_argument("--events-config", default="base")
    p.add_argument("--events-points", type=int, default=30000)
    p.add_argument("--events-steps", type=int, default=2, help="timed steps per path (after one warm-up step)")
    p.add_argument("--backends", nargs="+", default=["torch", "torch-loop", "torch-fused"])
    p.add_argument("--layer-repeats", type=int, default=3,
                   help="--events: timed rounds of each distinct convolution, per method (0: none)")
    p.add_argument("--collate", action="store_true",
                   help="time BEV-MAE per-sample preparation and the whole loader-worker path (old, main, new)")
    p.add_argument("--collate-repeats", type=int, default=7, help="interleaved repeats of --collate")
    p.add_argument("--bev-gpu", action="store_true",
                   help="CUDA: BEV-MAE base at 90 k and 200 k points, batch 2 and 8: samples/s, GPU busy share, "
                        "peak memory (and with --backends spconv if installed) into train_bev_gpu.json")
    a = p.parse_args(argv)
    if a.bev_gpu:
        rows = []
        for backend in a.backends:
            for pts in (90000, 200000):
                for bs in (2, 8):
                    r = bev_gpu_profile(pts, bs, backend=None if backend == "torch" else backend)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
        out = Path(a.out or HERE / "results" / "train_bev_gpu.json")
        out.write_text(json.dumps({"machine": machine("cuda"), "results": rows}, indent=2) + "\n")
        print(f"written: {out}")
        return
    if a.events or a.collate:
        import torch

        threads = (a.threads or [2])[0]
        doc = {"machine": machine("cpu")}
        if a.events:
            doc["events"] = bench_events(a.events_config, a.events_points, threads, a.events_steps, a.backends)
            if a.layer_repeats:
                doc["layers"] = bench_layers(a.events_config, a.events_points, threads, a.layer_repeats)
            doc["load_avg_1m_end"] = os.getloadavg()[0]
        if a.collate:
            from bench_collate import bench_collate

            doc["collate"] = bench_collate(a.events_config, repeats=a.collate_repeats)
        name = "train_events.json" if a.events else "train_collate.json"
        out = Path(a.out or HERE / "results" / name)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"written: {out}")
        return
    a.out = a.out or str(HERE / "results" / "train.json")
    import torch

    from als_datasets.train.loop import default_workers

    configs = a.configs or (["tiny"] if a.device == "cpu" else ["tiny", "base"])
    nw = default_workers() if a.num_workers is None else a.num_workers
    load_start = os.getloadavg()[0]  # a shared machine's load changes the figures: keep it with them
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for threads in a.threads or [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            for model in a.models:
                for config in configs:
                    r = bench_one(model, config, Path(tmp), steps=a.steps, warmup=a.warmup, device=a.device,
                                  num_workers=nw, batch_size=a.batch_size)
                    r["torch_threads"] = threads
                    results.append(r)
                    mfu = f"  MFU {r['mfu']:.1%}" if "mfu" in r else ""
                    print(f"{model:<8} {config:<5} {threads} thr  batch {r['global_batch']:>4}  "
                          f"{r['median_step_s'] * 1e3:8.1f} ms/step  {r['samples_per_s']:9.1f} samples/s  "
                          f"data wait {r['data_wait_share']:.1%}{mfu}", flush=True)
    doc = {"machine": {**machine(a.device), "load_avg_1m_start": load_start}, "steps": a.steps,
           "warmup": a.warmup, "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
