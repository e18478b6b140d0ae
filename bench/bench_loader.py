"""Benchmark: the training loader against a raw read of the same shards, side by side in one run.

    python bench/bench_loader.py                  # embedded ALS demo + a synthetic satellite folder
    python bench/bench_loader.py --quick          # about a minute (smaller satellite folder, 1 repeat)
    python bench/bench_loader.py --data DIR [--data DIR2]   # existing build folders

For each build folder, measured in this one run on the ``train`` split (page cache warmed first
by an untimed raw read; ``--repeat`` rounds, each running every measurement once, interleaved
so that the machine's load hits all of them alike):

* raw: ``tarfile`` + ``np.load(allow_pickle=False)`` / ``json.loads`` of every member of every
  shard, single process, nothing else — the floor any loader pays;
* loader: :func:`als_datasets.train.loader.make_loader` over the same shards (shard shuffle,
  shuffle buffer, safe decoders, sample grouping) with ``pad_collate`` (stack, or zero-pad with
  lengths, into torch tensors) at ``num_workers`` 0 and 2, and with a no-op collate at 0 workers
  (to separate the loader's own cost from the cost of building the tensors).

Prints samples/s (best round), the ratio loader / raw (median over rounds of the per-round
ratio), and samples per CPU second (this process plus its DataLoader workers; median over rounds:
less sensitive to other load on the machine than wall time), and writes ``bench/results/loader.json`` with the machine's description.  The default ALS folder is the embedded demo built with ``als-datasets build
--strategy geospatial --samples-per-project 40`` (94 tiles, ~1.5 min cold on 2 cores;
``--quick``: the demo's default 10 per project, 30 tiles, ~1 min) and reused from ``--work`` afterwards.  With the default shuffle
buffer (256) a folder this small is buffered whole before the first batch: the "1st batch"
column shows that latency (plus worker start-up), "after 1st" the rate once batches flow.
"""

from __future__ import annotations

import argparse
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


def run_loader(info, batch_size: int, num_workers: int, collate, shuffle_buffer: int) -> tuple[int, float]:
    """Iterate one epoch; (samples, seconds to the first batch: worker start + buffer fill)."""
    from als_datasets.train.loader import make_loader

    loader = make_loader(info, "train", batch_size, collate, seed=0, num_workers=num_workers,
                         shuffle_buffer=shuffle_buffer)
    n, t0, first = 0, time.perf_counter(), None
    for _ in loader:
        n += batch_size
        if first is None:
            first = time.perf_counter() - t0
    return n, first or 0.0


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

        write_dataset(out, "satellite", n_train=n, n_val=0, shard_size=64, seed=0, patch_size_px=96)
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


def bench_folder(root: Path, batch_size: int, repeat: int, shuffle_buffer: int) -> dict:
    """``repeat`` rounds, each timing the raw read and then every loader run once, so that a
    loader run and the raw read it is compared with see the same machine load; per run: the
    best time, and the median over rounds of (loader samples/s) / (raw samples/s of that round)."""
    from als_datasets.train.info import DatasetInfo
    from als_datasets.train.loader import pad_collate

    info = DatasetInfo.from_folder(root)
    shards = info.shard_paths("train")
    collates = {"pad": pad_collate, "noop": noop_collate}
    _, _, (n_raw, nbytes) = timed(lambda: raw_read(shards))  # warms the page cache; untimed
    raw_t, raw_c, runs = [], [], {name: [] for name, _, _ in RUNS}
    for _ in range(repeat):
        t, c, _ = timed(lambda: raw_read(shards))
        raw_t.append(t)
        raw_c.append(c)
        for name, nw, col in RUNS:
            t, c, (n, first) = timed(lambda nw=nw, col=col: run_loader(info, batch_size, nw, collates[col],
                                                                       shuffle_buffer))
            runs[name].append((t, n, first, (n / t) / (n_raw / raw_t[-1]), c))
    t_raw, c_raw = min(raw_t), float(np.median(raw_c))
    res = {"folder": str(root), "kind": info.kind, "samples": n_raw, "shards": len(shards),
           "mib": nbytes / 2**20, "batch_size": batch_size, "shuffle_buffer": shuffle_buffer, "rounds": repeat,
           "raw": {"seconds": t_raw, "samples_per_s": n_raw / t_raw, "seconds_all": raw_t,
                   "cpu_s": c_raw, "samples_per_cpu_s": n_raw / c_raw}}
    for name, rows in runs.items():
        t, n, first, _, _ = min(rows)
        steady = (n - batch_size) / (t - first) if n > batch_size and t > first else float("nan")
        cpu = float(np.median([r[4] for r in rows]))
        res[name] = {"seconds": t, "samples": n, "samples_per_s": n / t, "first_batch_s": first,
                     "after_first_samples_per_s": steady,
                     "ratio_to_raw": float(np.median([r[3] for r in rows])),
                     "ratio_to_raw_all": [r[3] for r in rows], "seconds_all": [r[0] for r in rows],
                     "cpu_s": cpu, "samples_per_cpu_s": n / cpu, "cpu_ratio_to_raw": (n / cpu) / (n_raw / c_raw)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", help="existing build folder(s); default: demo + satellite")
    ap.add_argument("--work", type=Path, default=Path("/tmp/als-bench-loader"))
    ap.add_argument("--quick", action="store_true", help="small satellite folder, one repeat")
    ap.add_argument("--als-per-project", type=int, default=None,
                    help="demo tiles per project (3 projects); default 40, quick 10 (the demo's own default)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shuffle-buffer", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=None, help="rounds of measurements; default 5, quick 1")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "loader.json")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 5)
    args.work.mkdir(parents=True, exist_ok=True)
    folders = args.data or [ensure_als_demo(args.work, args.als_per_project or (10 if args.quick else 40)),
                            ensure_satellite(args.work, 256 if args.quick else 1024)]

    results = {"machine": machine(), "quick": args.quick, "repeat": repeat, "datasets": []}
    for root in folders:
        r = bench_folder(Path(root), args.batch_size, repeat, args.shuffle_buffer)
        results["datasets"].append(r)
        print(f"\n{r['kind']}: {r['folder']} — {r['samples']} samples in {r['shards']} shards, {r['mib']:.0f} MiB")
        print(f"  {'':34}{'seconds':>9}{'samples/s':>12}{'ratio':>8}{'1st batch s':>13}{'after 1st /s':>14}"
              f"{'per CPU s':>11}{'CPU ratio':>11}")
        x = r["raw"]
        print(f"  {'raw tarfile + np.load':34}{x['seconds']:9.2f}{x['samples_per_s']:12.1f}{1.0:8.2f}{'':27}"
              f"{x['samples_per_cpu_s']:11.1f}{1.0:11.2f}")
        for name, label in (("loader_pad_w0", "loader, pad collate, 0 workers"),
                            ("loader_pad_w2", "loader, pad collate, 2 workers"),
                            ("loader_noop_w0", "loader, no-op collate, 0 workers")):
            x = r[name]
            print(f"  {label:34}{x['seconds']:9.2f}{x['samples_per_s']:12.1f}{x['ratio_to_raw']:8.2f}"
                  f"{x['first_batch_s']:13.2f}{x['after_first_samples_per_s']:14.1f}{x['samples_per_cpu_s']:11.1f}"
                  f"{x['cpu_ratio_to_raw']:11.2f}")
    results["machine"]["loadavg_1_5_15_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
