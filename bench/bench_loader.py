"""Benchmark: the training loader against a raw read of the same shards, side by side in one run.

    python bench/bench_loader.py                  # ALS demo + synthetic satellite folders (1024 and 4096 patches)
    python bench/bench_loader.py --quick          # about a minute (small folders, 1 round)
    python bench/bench_loader.py --data DIR [--data DIR2]   # existing build folders
    python bench/bench_loader.py --compare-loader OLD/loader.py   # also time another version of loader.py

For each build folder, measured in this one run on the ``train`` split (page cache warmed first
by an untimed raw read; ``--repeat`` rounds, each running every measurement once, interleaved
so that the machine's load hits all of them alike):

* raw: ``tarfile`` + ``np.load(allow_pickle=False)`` / ``json.loads`` of every member of every
  shard, single process, nothing else — the plain way to read them;
* loader, one fresh epoch (the figures of the first version of this benchmark, same definitions):
  :func:`als_datasets.train.loader.make_loader` over the same shards (shard shuffle, shuffle
  buffer, safe decoders, sample grouping) with ``pad_collate`` (stack, or zero-pad with lengths,
  into torch tensors) at ``num_workers`` 0 and 2, and with a no-op collate at 0 workers (to
  separate the loader's own cost from the cost of building the tensors);
* loader, steady state: one loader iterated for ``--epochs`` epochs (``.at(epoch)``; at 2 workers
  with ``persistent_workers=True``, so the worker processes are started once): the first epoch
  and the median of the later ones, each against the raw read of the same round.

Prints samples/s (best round), the ratio loader / raw (median over rounds of the per-round
ratio), and for the fresh epochs samples per CPU second (this process plus its DataLoader
workers; median over rounds: less sensitive to other load on the machine than wall time), and
writes ``bench/results/loader.json`` with the machine's description.  The default ALS folder is
the embedded demo built with ``als-datasets build --strategy geospatial --samples-per-project 40``
(94 tiles, ~1.5 min cold on 2 cores; ``--quick``: the demo's default 10 per project, 30 tiles,
~1 min) and reused from ``--work`` afterwards, like the synthetic satellite folders (96 px
patches, 64 per shard).  With the default shuffle buffer (256) a folder this small is buffered
whole before the first batch: the "1st batch" column shows that latency (plus worker start-up),
"after 1st" the rate once batches flow.

``--compare-loader PATH`` imports another ``loader.py`` (e.g. a copy of an earlier version) as a
module of ``als_datasets.train`` and times its fresh epochs in the same rounds (``before_*``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def raw_read(shards: list[str]) -> tuple[int, int]:
    """Decode every member of every shard the plainest way; (samples, bytes)."""
    keys, nbytes = 0, 0
    for p in shards:
        last = None
        with tarfile.open(p) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                data = tar.extractfile(m).read()
                nbytes += len(data)
                key = m.name.split(".", 1)[0]
                if key != last:
                    keys, last = keys + 1, key
                if m.name.endswith(".npy"):
                    np.load(io.BytesIO(data), allow_pickle=False)
                elif m.name.endswith(".json"):
                    json.loads(data)
    return keys, nbytes


def noop_collate(samples, rng):
    import torch

    return {"n": torch.tensor(len(samples))}


def run_loader(info, batch_size: int, num_workers: int, collate, shuffle_buffer: int, module=None
               ) -> tuple[int, float]:
    """Iterate one epoch of a fresh loader; (samples, seconds to the first batch: worker start +
    buffer fill).  ``module``: the loader module (default :mod:`als_datasets.train.loader`)."""
    if module is None:
        from als_datasets.train import loader as module

    loader = module.make_loader(info, "train", batch_size, collate, seed=0, num_workers=num_workers,
                                shuffle_buffer=shuffle_buffer)
    n, t0, first = 0, time.perf_counter(), None
    for _ in loader:
        n += batch_size
        if first is None:
            first = time.perf_counter() - t0
    return n, first or 0.0


def run_epochs(info, batch_size: int, num_workers: int, collate, shuffle_buffer: int, epochs: int
               ) -> list[tuple[float, int]]:
    """One loader, ``epochs`` epochs in a row (persistent workers when ``num_workers > 0``):
    (seconds, samples) per epoch, the first including the workers' start."""
    from als_datasets.train.loader import make_loader

    loader = make_loader(info, "train", batch_size, collate, seed=0, num_workers=num_workers,
                         shuffle_buffer=shuffle_buffer, persistent_workers=num_workers > 0)
    out = []
    try:
        for epoch in range(epochs):
            t, n = time.perf_counter(), 0
            for _ in loader.at(epoch):
                n += batch_size
            out.append((time.perf_counter() - t, n))
    finally:
        loader.close()
    return out


def load_module(path: Path):
    """Another version of ``loader.py`` as ``als_datasets.train._loader_compare`` (its relative
    imports resolve against the installed package)."""
    import als_datasets.train  # noqa: F401  (the parent package must be imported first)

    name = "als_datasets.train._loader_compare"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds incl. worker processes, result)."""
    t, c = time.perf_counter(), _cpu()
    out = fn()
    return time.perf_counter() - t, _cpu() - c, out


def ensure_als_demo(work: Path, per_project: int) -> Path:
    out = work / f"demo-geospatial-{per_project}"
    if not (out / "_info.json").is_file():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "als_datasets", "build", "--strategy", "geospatial", "--out", str(out),
                        "--samples-per-project", str(per_project), "-q"], check=True)
        print(f"built the ALS demo in {time.perf_counter() - t:.0f} s: {out}")
    return out


def ensure_satellite(work: Path, n: int) -> Path:
    out = work / f"synthetic-satellite-{n}"
    if not (out / "_info.json").is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from train_data import write_dataset

        t = time.perf_counter()
        write_dataset(out, "satellite", n_train=n, n_val=0, shard_size=64, seed=0, patch_size_px=96)
        print(f"wrote {n} synthetic satellite patches in {time.perf_counter() - t:.0f} s: {out}")
    return out


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "loadavg_1_5_15_at_start": list(os.getloadavg())}


RUNS = (("loader_pad_w0", 0, "pad"), ("loader_pad_w2", 2, "pad"), ("loader_noop_w0", 0, "noop"))
STEADY = (("steady_pad_w0", 0, "pad"), ("steady_pad_w2", 2, "pad"), ("steady_noop_w0", 0, "noop"))
LABELS = {"loader_pad_w0": "loader, pad collate, 0 workers", "loader_pad_w2": "loader, pad collate, 2 workers",
          "loader_noop_w0": "loader, no-op collate, 0 workers",
          "before_pad_w0": "before: pad, 0 workers", "before_pad_w2": "before: pad, 2 workers",
          "before_noop_w0": "before: no-op, 0 workers",
          "steady_pad_w0": "pad, 0 workers", "steady_pad_w2": "pad, 2 persistent workers",
          "steady_noop_w0": "no-op, 0 workers"}


def bench_folder(root: Path, batch_size: int, repeat: int, shuffle_buffer: int, epochs: int, compare=None) -> dict:
    """``repeat`` rounds, each timing the raw read and then every loader run once, so that a
    loader run and the raw read it is compared with see the same machine load; per run: the
    best time, and the median over rounds of (loader samples/s) / (raw samples/s of that round)."""
    from als_datasets.train.info import DatasetInfo
    from als_datasets.train.loader import pad_collate

    info = DatasetInfo.from_folder(root)
    shards = info.shard_paths("train")
    collates = {"pad": pad_collate, "noop": noop_collate}
    if compare is not None:
        collates["pad_before"] = compare.pad_collate
    fresh = [(name, nw, col, None) for name, nw, col in RUNS]
    if compare is not None:
        fresh += [(name.replace("loader_", "before_"), nw, col + "_before" if col == "pad" else col, compare)
                  for name, nw, col in RUNS]
    _, _, (n_raw, nbytes) = timed(lambda: raw_read(shards))  # warms the page cache; untimed
    raw_t, raw_c, runs = [], [], {name: [] for name, *_ in fresh}
    steady = {name: [] for name, _, _ in STEADY}
    for _ in range(repeat):
        t, c, _ = timed(lambda: raw_read(shards))
        raw_t.append(t)
        raw_c.append(c)
        raw_rate = n_raw / t
        for name, nw, col, mod in fresh:
            t, c, (n, first) = timed(lambda nw=nw, col=col, mod=mod: run_loader(info, batch_size, nw, collates[col],
                                                                                 shuffle_buffer, mod))
            runs[name].append((t, n, first, (n / t) / raw_rate, c))
        for name, nw, col in STEADY:
            rows = run_epochs(info, batch_size, nw, collates[col], shuffle_buffer, epochs)
            steady[name].append([(t, n, (n / t) / raw_rate) for t, n in rows])
    t_raw, c_raw = min(raw_t), float(np.median(raw_c))
    res = {"folder": str(root), "kind": info.kind, "samples": n_raw, "shards": len(shards),
           "mib": nbytes / 2**20, "batch_size": batch_size, "shuffle_buffer": shuffle_buffer, "rounds": repeat,
           "raw": {"seconds": t_raw, "samples_per_s": n_raw / t_raw, "seconds_all": raw_t,
                   "cpu_s": c_raw, "samples_per_cpu_s": n_raw / c_raw}}
    for name, rows in runs.items():
        t, n, first, _, _ = min(rows)
        steady_rate = (n - batch_size) / (t - first) if n > batch_size and t > first else float("nan")
        cpu = float(np.median([r[4] for r in rows]))
        res[name] = {"seconds": t, "samples": n, "samples_per_s": n / t, "first_batch_s": first,
                     "after_first_samples_per_s": steady_rate,
                     "ratio_to_raw": float(np.median([r[3] for r in rows])),
                     "ratio_to_raw_all": [r[3] for r in rows], "seconds_all": [r[0] for r in rows],
                     "cpu_s": cpu, "samples_per_cpu_s": n / cpu, "cpu_ratio_to_raw": (n / cpu) / (n_raw / c_raw)}
    res["steady"] = {"epochs": epochs}
    for name, rounds in steady.items():
        first = [r[0] for r in rounds]
        later = [sorted(r[1:])[len(r[1:]) // 2] if len(r) > 1 else r[0] for r in rounds]  # median epoch
        res["steady"][name] = {
            "first_epoch": {"seconds": min(x[0] for x in first), "samples": first[0][1],
                            "samples_per_s": max(x[1] / x[0] for x in first),
                            "ratio_to_raw": float(np.median([x[2] for x in first]))},
            "later_epochs": {"seconds": min(x[0] for x in later), "samples": later[0][1],
                             "samples_per_s": max(x[1] / x[0] for x in later),
                             "ratio_to_raw": float(np.median([x[2] for x in later]))},
            "seconds_all": [[x[0] for x in r] for r in rounds]}
    return res


def report(r: dict) -> None:
    print(f"\n{r['kind']}: {r['folder']} — {r['samples']} samples in {r['shards']} shards, {r['mib']:.0f} MiB")
    print(f"  {'one fresh epoch':34}{'seconds':>9}{'samples/s':>12}{'ratio':>8}{'1st batch s':>13}{'after 1st /s':>14}"
          f"{'per CPU s':>11}{'CPU ratio':>11}")
    x = r["raw"]
    print(f"  {'raw tarfile + np.load':34}{x['seconds']:9.2f}{x['samples_per_s']:12.1f}{1.0:8.2f}{'':27}"
          f"{x['samples_per_cpu_s']:11.1f}{1.0:11.2f}")
    for name in [k for k in LABELS if k in r and not k.startswith("steady")]:
        x = r[name]
        print(f"  {LABELS[name]:34}{x['seconds']:9.2f}{x['samples_per_s']:12.1f}{x['ratio_to_raw']:8.2f}"
              f"{x['first_batch_s']:13.2f}{x['after_first_samples_per_s']:14.1f}{x['samples_per_cpu_s']:11.1f}"
              f"{x['cpu_ratio_to_raw']:11.2f}")
    st = r["steady"]
    print(f"  {'steady state, ' + str(st['epochs']) + ' epochs, one loader':34}{'1st s':>9}{'1st /s':>12}"
          f"{'ratio':>8}{'later s':>13}{'later /s':>14}{'ratio':>11}")
    for name in [k for k in LABELS if k in st]:
        a, b = st[name]["first_epoch"], st[name]["later_epochs"]
        print(f"  {LABELS[name]:34}{a['seconds']:9.2f}{a['samples_per_s']:12.1f}{a['ratio_to_raw']:8.2f}"
              f"{b['seconds']:13.2f}{b['samples_per_s']:14.1f}{b['ratio_to_raw']:11.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append",
                    help="existing build folder(s); default: demo + synthetic satellite")
    ap.add_argument("--work", type=Path, default=Path("/tmp/als-bench-loader"))
    ap.add_argument("--quick", action="store_true", help="small folders, one round, 3 epochs")
    ap.add_argument("--als-per-project", type=int, default=None,
                    help="demo tiles per project (3 projects); default 40, quick 10 (the demo's own default)")
    ap.add_argument("--satellite", type=int, nargs="+", default=None,
                    help="synthetic satellite folder sizes (patches); default 1024 4096, quick 256")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shuffle-buffer", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=None, help="rounds of measurements; default 5, quick 1")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the steady-state runs; default 4, quick 3")
    ap.add_argument("--compare-loader", type=Path, default=None,
                    help="another loader.py to time in the same rounds (fresh epochs)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "loader.json")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 5)
    epochs = args.epochs or (3 if args.quick else 4)
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = args.satellite or ([256] if args.quick else [1024, 4096])
    folders = args.data or [ensure_als_demo(args.work, args.als_per_project or (10 if args.quick else 40)),
                            *(ensure_satellite(args.work, n) for n in sizes)]
    compare = load_module(args.compare_loader) if args.compare_loader else None

    results = {"machine": machine(), "quick": args.quick, "repeat": repeat, "epochs": epochs,
               "compare_loader": str(args.compare_loader) if compare else None, "datasets": []}
    for root in folders:
        r = bench_folder(Path(root), args.batch_size, repeat, args.shuffle_buffer, epochs, compare)
        results["datasets"].append(r)
        report(r)
    results["machine"]["loadavg_1_5_15_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
