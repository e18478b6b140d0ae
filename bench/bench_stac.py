"""Benchmark: satellite scenes from a STAC archive over loopback against the same files on disk.

    python bench/bench_stac.py                      # a 2048 x 2048 px Sentinel-2 L2A scene, 1024 px COG tiles
    python bench/bench_stac.py --size 1024 --block 256

Generates one Sentinel-2 L2A scene as the archive publishes it (COGs ``B02/B03/B04/B08.tif`` at
10 m, ``SCL.tif`` at 20 m, DEFLATE, internal tiles of ``--block`` px — Earth Search's
``sentinel-cogs`` use 1024 — with overviews) and a STAC item for it (``tests/sat_products.py``),
serves the files from a Range-serving loopback server and the item from the loopback STAC API of
``tests/``, and measures in this one run:

* **bytes fetched per patch**: a ``build`` from the archive with ``candidate_patches`` candidates
  per scene — bytes the server sent (plan + shards) per sample written and per candidate read,
  against the patch's own pixel bytes (4 bands × 96 × 96 × 2 B);
* **patches/s**: the same recipe with every patch of the scene a candidate, from the archive and
  from the local folder (the item JSON beside the files), samples written per second of build.

Writes ``bench/results/stac.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def make_scene(folder: Path, size: int, block: int) -> None:
    import numpy as np
    from cog_fixtures import write_cog
    from rasterio.transform import from_origin
    from sat_products import scene_reflectance

    folder.mkdir(parents=True, exist_ok=True)
    refl, cloud, shadow = scene_reflectance(5, (size, size), 0.08, bands=5)
    for band, k in (("B02", 1), ("B03", 2), ("B04", 3), ("B08", 4)):
        dn = np.clip(np.round((refl[k] + 0.1) * 10000), 1, 65535).astype(np.uint16)
        write_cog(folder / f"{band}.tif", dn, "EPSG:32632", from_origin(500000.0, 5600040.0, 10, 10), nodata=0,
                  block=block)
    scl = np.where(cloud, 9, np.where(shadow, 3, 4)).astype(np.uint8)[::2, ::2]
    write_cog(folder / "SCL.tif", scl, "EPSG:32632", from_origin(500000.0, 5600040.0, 20, 20), nodata=0,
              block=block // 2)


def item(base: str, size: int) -> dict:
    from sat_products import stac_item_s2_l2a

    it = stac_item_s2_l2a("S2B_32UNA_20210614_0_L2A", base, (size, size), 500000.0, 5600040.0, 32632,
                          datetime="2021-06-14T10:30:31.024000Z", cloud=8.0)
    keep = {"blue", "green", "red", "nir", "scl"}
    it["assets"] = {k: v for k, v in it["assets"].items() if k in keep}
    return it


def recipe(path: Path, samples: int, **extra) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"kind": "satellite", "name": "bench-stac", "strategy": "random",
                                    "samples": samples, "patch_size_px": 96, "max_cloud_fraction": 0.2,
                                    "output": {"formats": ["webdataset"]}, **extra}))
    return path


def build(r: Path, out: Path) -> float:
    from als_datasets.cli import main

    t = time.perf_counter()
    main(["build", str(r), "--out", str(out), "-q"])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=64)
    args = ap.parse_args()
    from range_server import RangeServer
    from stac_server import StacServer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = tmp / "scene"
        make_scene(scene, args.size, args.block)
        files = {f"scene/{f.name}": f for f in scene.iterdir()}
        total = sum(f.stat().st_size for f in files.values())
        cells = (args.size // 96) ** 2
        pixel_bytes = 4 * 96 * 96 * 2
        res = {"size_px": args.size, "block_px": args.block, "samples": args.samples, "candidates": args.candidates,
               "cells": cells, "archive_bytes": total, "patch_pixel_bytes": pixel_bytes, "runs": {}}
        with RangeServer(files) as srv:
            base = srv.url("scene").rstrip("/")
            with StacServer([item(base, args.size)]) as api:
                stac = {"api": api.url, "collections": ["sentinel-2-l2a"], "bbox": [-180, -90, 180, 90]}
                b0 = srv.bytes_sent
                r0 = srv.requests
                sec = build(recipe(tmp / "a.yaml", args.samples, stac={**stac, "candidate_patches": args.candidates}),
                            tmp / "a")
                got = srv.bytes_sent - b0
                res["runs"]["stac, sampled candidates"] = {
                    "seconds": round(sec, 2), "bytes": got, "requests": srv.requests - r0,
                    "bytes_per_sample": round(got / args.samples), "bytes_per_candidate": round(got / args.candidates),
                    "ratio_per_sample_to_pixels": round(got / args.samples / pixel_bytes, 2),
                    "ratio_per_candidate_to_pixels": round(got / args.candidates / pixel_bytes, 2)}
                b0 = srv.bytes_sent
                sec = build(recipe(tmp / "b.yaml", args.samples, stac={**stac, "candidate_patches": cells}), tmp / "b")
                got = srv.bytes_sent - b0
                res["runs"]["stac, every patch a candidate"] = {
                    "seconds": round(sec, 2), "bytes": got, "samples_per_s": round(args.samples / sec, 2),
                    "ratio_bytes_to_archive": round(got / total, 2)}
        (scene / "item.json").write_text(json.dumps(item(str(scene), args.size)))
        sec = build(recipe(tmp / "c.yaml", args.samples, scenes=[{"path": str(scene), "name": "S2B_32UNA_20210614_0_L2A"}]),
                    tmp / "c")
        res["runs"]["local files, every patch a candidate"] = {"seconds": round(sec, 2),
                                                               "samples_per_s": round(args.samples / sec, 2)}
        res["stac_over_local_speed"] = round(res["runs"]["local files, every patch a candidate"]["seconds"]
                                             / res["runs"]["stac, every patch a candidate"]["seconds"], 3)
    res["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    print(json.dumps(res, indent=1))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "stac.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
