"""Benchmark: reprojecting a route task's points, one pyproj call against the threaded split.

    python bench/bench_reproject.py                 # 5 M points per CRS pair, best of 3
    python bench/bench_reproject.py --points 1e6 --repeats 2

A point cloud whose CRS is not the project's UTM has every point reprojected while it is routed
(``extract.route.Reprojection``): 3DEP's Entwine datasets are in Web Mercator (EPSG:3857), many
LAZ tiles in a state plane CRS in US feet (here EPSG:2286, whose transformation to WGS 84 UTM
adds a datum step).  For each pair, in this one process and interleaved: points per second of
one ``Transformer.transform`` call on the whole array, and of ``Reprojection`` with as many
threads as cores (the chunk split into contiguous runs, PROJ releasing the GIL), the outputs
compared bit for bit.  Writes ``bench/results/reproject.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: (name, source EPSG, target EPSG, lower-left corner in the source CRS, side in its units)
PAIRS = [
    ("web mercator (3DEP EPT) -> UTM 10N", 3857, 32610, (-13_610_000.0, 5_700_000.0), 20_000.0),
    ("WA south state plane, US ft -> UTM 10N", 2286, 32610, (1_145_000.0, 95_000.0), 60_000.0),
]


def interleaved(transformers, x, y, repeats: int) -> tuple[list[float], list]:
    """Points per second of each ``t.transform(x, y)``, best of ``repeats`` runs taken in turn
    (one, the other, one, ...), and each one's output."""
    best, outs = [float("inf")] * len(transformers), [None] * len(transformers)
    for _ in range(repeats):
        for i, t in enumerate(transformers):
            t0 = time.perf_counter()
            outs[i] = t.transform(x, y)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [len(x) / b for b in best], outs


def main() -> None:
    from pyproj import Transformer

    from als_datasets.kinds.als.extract.route import Reprojection

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=float, default=5e6)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, cores = int(args.points), os.cpu_count() or 1
    rng = np.random.default_rng(0)
    rows = []
    for name, src, dst, (x0, y0), side in PAIRS:
        x, y = x0 + rng.random(n) * side, y0 + rng.random(n) * side
        one = Transformer.from_crs(src, dst, always_xy=True)
        with Reprojection(src, dst, cores) as split:
            split.transform(x[:100_000], y[:100_000])  # threads started, PROJ's tables loaded
            one.transform(x[:100_000], y[:100_000])
            (r1, r2), (a, b) = interleaved((one, split), x, y, args.repeats)
        same = all(np.asarray(u).tobytes() == np.asarray(v).tobytes() for u, v in zip(a, b))
        rows.append({"pair": name, "src": src, "dst": dst, "points": n, "one_call_pts_s": r1,
                     "threaded_pts_s": r2, "threads": cores, "speedup": r2 / r1, "identical": same})
        print(f"{name}: one call {r1 / 1e6:.2f} M points/s, {cores} threads {r2 / 1e6:.2f} M/s "
              f"({r2 / r1:.2f}x); outputs {'identical' if same else 'DIFFER'}", flush=True)
    res = {"cpu_count": cores, "load_avg": os.getloadavg(), "rows": rows}
    out = HERE / "results" / "reproject.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
