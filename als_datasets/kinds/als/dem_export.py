"""ALS-derived terrain → a ``kind: dem`` build: the DEM MAE pretrains on the very tiles the
geospatial sampler chose (arXiv 2309.03367 pretrains on DEMs; these are 3DEP-quality terrain).

An ALS build with ``terrain_rasters`` stores per sample a DTM and an nDSM (see
:mod:`als_datasets.kinds.als.extract.terrain`).  :func:`export_dem_recipe` reads them back from
the build's WebDataset shards (one sample at a time: memory stays flat), writes each as a
north-up float32 GeoTIFF in the tile's UTM CRS (NaN = no data) and a ``dem.yaml`` recipe whose
scenes are those files; ``als-datasets build DEST/dem-dtm.yaml`` then cuts them into patches like
any DEM.  Tiles are written in sample-key order, so the recipe (and the DEM build) is the same
however the ALS build's shards were scheduled.

    python -m als_datasets.kinds.als.dem_export OUT DEST [--layer dtm|ndsm] [--patch-size-px 64]
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from als_datasets.errors import InputError

LAYERS = {"dtm": "dtm.npy", "ndsm": "ndsm.npy"}


def _iter_terrain(als_out: Path, member: str):
    """(key, raster, json) of every sample of the build's WebDataset shards that has ``member``."""
    tars = sorted((als_out / "webdataset").glob("*/*.tar"))
    if not tars:
        raise InputError(als_out, "no WebDataset shards: build the ALS set with the webdataset format")
    for tar in tars:
        with tarfile.open(tar) as tf:
            cur, parts = None, {}
            for m in tf:
                key, _, ext = m.name.partition(".")
                if key != cur:
                    if cur is not None and member in parts:
                        yield cur, parts[member], parts["json"]
                    cur, parts = key, {}
                if ext in (member, "json"):
                    data = tf.extractfile(m).read()
                    parts[ext] = (json.loads(data) if ext == "json"
                                  else np.load(io.BytesIO(data), allow_pickle=False))
            if cur is not None and member in parts:
                yield cur, parts[member], parts["json"]


def export_dem_recipe(als_out: str | Path, dest: str | Path, layer: str = "dtm", patch_size_px: int = 64,
                      seed: int = 41) -> Path:
    """Write ``DEST/<layer>/<tile>.tif`` for every sample of the ALS build ``als_out`` and the
    recipe ``DEST/dem-<layer>.yaml``; returns the recipe's path."""
    import rasterio
    import yaml
    from rasterio.transform import from_origin

    als_out, dest = Path(als_out), Path(dest)
    if layer not in LAYERS:
        raise InputError(layer, f"layer must be one of {', '.join(LAYERS)}")
    recipe_src = als_out / "recipe.yaml"
    if not recipe_src.is_file():
        raise InputError(als_out, "not an ALS build folder (no recipe.yaml)")
    als_recipe = yaml.safe_load(recipe_src.read_text()) or {}
    folder = dest / layer
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for key, z, meta in _iter_terrain(als_out, LAYERS[layer]):
        if not np.isfinite(z).any():
            continue  # a tile without ground returns has no DTM
        ox, oy = meta["raster_origin_utm"]
        cell = float(meta["raster_cell_m"])
        path = folder / f"{key}.tif"
        tmp = path.with_name(f".{path.name}.tmp")
        with rasterio.open(tmp, "w", driver="GTiff", width=z.shape[1], height=z.shape[0], count=1, dtype="float32",
                           crs=meta["crs"], transform=from_origin(ox, oy, cell, cell), nodata=float("nan")) as d:
            d.write(z.astype(np.float32), 1)
        tmp.replace(path)
        found[key] = (path, z.shape)
    if not found:
        raise InputError(als_out, f"no sample has a {layer} raster: build it with 'terrain_rasters: true'")
    scenes = [{"name": f"{key}-{layer}", "path": f"{layer}/{key}.tif", "sensor": f"als-{layer}"}
              for key in sorted(found)]
    per_tile = sum((h // patch_size_px) * (w // patch_size_px) for _, (h, w) in found.values())
    name = f"{als_recipe.get('name') or 'als'}-{layer}"
    recipe = {
        "kind": "dem", "name": name, "strategy": "random", "seed": seed, "samples": max(per_tile, 1),
        "patch_size_px": patch_size_px, "max_nodata_fraction": 0.0,
        "license": als_recipe.get("license") or "other",
        "sources": [{"name": f"{'DTM' if layer == 'dtm' else 'nDSM'} rasters of the ALS build '{als_recipe.get('name')}'"
                             f" (als-datasets terrain_rasters, {found and meta['raster_cell_m']} m cells)"}],
        "scenes": scenes,
    }
    out = dest / f"dem-{layer}.yaml"
    out.write_text("# written by als_datasets.kinds.als.dem_export; paths relative to this file\n"
                   + yaml.safe_dump(recipe, sort_keys=False))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("als_out", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--layer", choices=sorted(LAYERS), default="dtm")
    ap.add_argument("--patch-size-px", type=int, default=64)
    a = ap.parse_args(argv)
    try:
        print(export_dem_recipe(a.als_out, a.dest, a.layer, a.patch_size_px))
    except InputError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
