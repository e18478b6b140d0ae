"""Benchmark: the raster frame pass (windowed strip reads + nodata/cloud quality + per-sample
spectral entropy of every patch) against a plain rasterio read of the same pixels.

    python bench/bench_spectral.py                 # a 6000 x 6000 px, 13-band uint16 scene (~0.9 GB raw)
    python bench/bench_spectral.py --size 2000     # quick look

Generates a tiled, deflate-compressed GeoTIFF (Sentinel-2-like: 13 bands, uint16, textured
land-cover fields), then measures in this one run, each best of ``--repeat``:

* ``read``: rasterio reading every band of the scene in 96-px-high strips (``ds.read(window=...)``),
  nothing else — the I/O and decompression floor;
* ``entropy only``: :func:`als_datasets.kinds.raster.entropy.spectral_entropy` over all patches of
  pixels already in memory (the vectorised histogram code by itself);
* ``frame pass``: :func:`als_datasets.kinds.raster.frame.scan_scene` — what ``als-datasets build``
  does per scene to score every candidate patch.

Prints patches/s, MB/s (of raw pixel data) and ratios to the plain read, and writes
``bench/results/spectral.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PATCH = 96


def make_scene(path: Path, size: int, bands: int = 13, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    spectra = rng.integers(300, 4000, (6, bands))  # six surface classes
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(500000, 4500000, 10, 10), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", nodata=0)
    step = 512
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            yy, xx = np.mgrid[r0:r0 + h, 0:size]
            cls = ((np.sin(xx / 170.0) + np.cos(yy / 230.0) + np.sin((xx + yy) / 97.0)) * 1.2 + 3).astype(int) % 6
            block = spectra[cls].transpose(2, 0, 1) + rng.integers(0, 400, (bands, h, size))
            ds.write(block.astype("uint16"), window=rasterio.windows.Window(0, r0, size, h))


def plain_read(path: Path) -> float:
    import rasterio
    from rasterio.windows import Window

    t = time.perf_counter()
    with rasterio.open(path) as ds:
        rows = ds.height // PATCH
        for r in range(rows):
            ds.read(window=Window(0, r * PATCH, (ds.width // PATCH) * PATCH, PATCH))
    return time.perf_counter() - t


def entropy_only(path: Path) -> float:
    import rasterio

    from als_datasets.kinds.raster.entropy import spectral_entropy

    with rasterio.open(path) as ds:
        n = ds.width // PATCH
        a = ds.read(window=rasterio.windows.Window(0, 0, n * PATCH, PATCH * min(8, ds.height // PATCH)))
    c, h, w = a.shape
    patches = a.reshape(c, h // PATCH, PATCH, w // PATCH, PATCH).transpose(1, 3, 0, 2, 4).reshape(-1, c, PATCH, PATCH)
    t = time.perf_counter()
    spectral_entropy(patches, patches[:, 0] != 0)
    return (time.perf_counter() - t) / len(patches)


def frame_pass(path: Path) -> float:
    from als_datasets.kinds.raster.frame import scan_scene
    from als_datasets.kinds.raster.scenes import open_scene

    scene = open_scene({"path": str(path), "sensor": "sentinel-2"})
    t = time.perf_counter()
    scan_scene(scene, PATCH, PATCH)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=6000, help="scene width = height in pixels")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "spectral.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.tif"
        t0 = time.perf_counter()
        make_scene(path, a.size)
        print(f"generated {a.size}x{a.size} px x 13 bands in {time.perf_counter() - t0:.1f} s "
              f"({path.stat().st_size / 2**20:.0f} MiB on disk)")
        n_patches = (a.size // PATCH) ** 2
        mb = n_patches * 13 * PATCH * PATCH * 2 / 1e6
        frame_pass(path)  # warm the page cache once
        read_s = min(plain_read(path) for _ in range(a.repeat))
        frame_s = min(frame_pass(path) for _ in range(a.repeat))
        ent_s = min(entropy_only(path) for _ in range(a.repeat)) * n_patches
    rows = {
        "plain rasterio read": read_s,
        "entropy only (in memory)": ent_s,
        "frame pass (read + quality + entropy)": frame_s,
    }
    print(f"{n_patches} patches of 13 x {PATCH} x {PATCH} uint16 = {mb:.0f} MB of pixels")
    print(f"{'run':40s} {'s':>8s} {'patches/s':>10s} {'MB/s':>8s} {'ratio to read':>14s}")
    result = {"size_px": a.size, "bands": 13, "patch_px": PATCH, "patches": n_patches, "megabytes": mb, "runs": {},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    for name, s in rows.items():
        ratio = read_s / s
        print(f"{name:40s} {s:8.2f} {n_patches / s:10.0f} {mb / s:8.1f} {ratio:14.2f}")
        result["runs"][name] = {"seconds": round(s, 3), "patches_per_s": round(n_patches / s, 1),
                                "mb_per_s": round(mb / s, 1), "throughput_ratio_to_read": round(ratio, 3)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
