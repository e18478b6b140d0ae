"""Benchmark: what recording the card's ``num_bytes`` costs the Parquet shard writer.

    python bench/bench_arrow_bytes.py                      # 4 samples of 1 M points (an ALS-like shard)
    python bench/bench_arrow_bytes.py --samples 8 --points 2e5

``write_parquet_shard`` reads each shard back after writing it (one row group at a time) to record
the Arrow bytes ``datasets`` generates from it (``arrow_bytes`` in manifest.json, the card's
``num_bytes``).  This measures, in one run and best of ``--repeat``, the write without that pass and
the pass by itself, on seeded ALS-like samples (xyz float32, intensity uint16, classification
uint8, one row group per sample as the ALS kind writes), prints the ratio and writes
``bench/results/arrow_bytes.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from als_datasets.dataset.features import features_for_samples
from als_datasets.shards import writer


def samples(n: int, points: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"__key__": f"bench_c{i}_r0", "xyz.npy": rng.random((points, 3), dtype=np.float32) * 500,
             "intensity.npy": rng.integers(0, 65535, points, dtype=np.uint16),
             "classification.npy": rng.integers(0, 20, points, dtype=np.uint8),
             "json": {"project": "bench", "point_count": points}} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--points", type=float, default=1e6)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    data = samples(a.samples, int(a.points))
    feats = features_for_samples(data[0])
    write_s, read_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.parquet"
        recorded = writer.arrow_bytes
        for _ in range(a.repeat):
            writer.arrow_bytes = lambda p: 0  # the write alone
            try:
                t0 = time.perf_counter()
                writer.write_parquet_shard(path, iter(data), feats, row_group_size=1)
                write_s.append(time.perf_counter() - t0)
            finally:
                writer.arrow_bytes = recorded
            t0 = time.perf_counter()
            nbytes = writer.arrow_bytes(path)
            read_s.append(time.perf_counter() - t0)
        size = path.stat().st_size
    result = {"samples": a.samples, "points_per_sample": int(a.points), "parquet_bytes": size, "arrow_bytes": nbytes,
              "write_s": min(write_s), "arrow_bytes_pass_s": min(read_s),
              "ratio_pass_to_write": min(read_s) / min(write_s), "machine": platform.platform(),
              "date": time.strftime("%Y-%m-%d")}
    print(f"{a.samples} x {int(a.points):,} points: Parquet write {result['write_s']:.2f} s, "
          f"read-back for arrow_bytes {result['arrow_bytes_pass_s']:.2f} s "
          f"(ratio {result['ratio_pass_to_write']:.2f} of the write)")
    out = Path(__file__).parent / "results" / "arrow_bytes.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
