"""Seeded synthetic build folders for the pre-training harness tests (no network, < 1 s).

:func:`write_dataset` writes a small but *valid* build folder (DESIGN.md §4) of one kind:

* ``als`` — point-cloud tiles (a few thousand points) with terrain, flat-roofed buildings, trees
  and low vegetation; the labels ``landcover`` (developed|forest|other), ``slope_class``
  (flat|sloped|steep) and ``stratum`` are *learnable from the points*: developed tiles carry flat
  single-return roofs (class 6), forest tiles tall multi-return vegetation (class 5), other tiles
  mostly bare ground with low vegetation; the terrain gradient follows the slope class.
* ``satellite`` — uint16 ``pixels.npy`` (C, H, W) from two "sensors" with different band sets
  (Sentinel-2, 13 bands, and Landsat-8 OLI, 7 bands) with ``bands``/``common_bands``; ``biome``
  sets the spectral profile (desert, forest, tundra/snow, wetland/water) and ``continent`` is
  correlated with the biome; some patches carry nodata (0) and bright cloud blobs.
* ``dem`` — float32 (1, H, W) elevation in metres with NaN nodata blocks; ``slope_class`` and
  ``continent`` follow the relief.

Everything is a deterministic function of ``seed``: the same call writes the same bytes.  The
samples themselves are available without I/O through :func:`make_samples`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from als_datasets import SCHEMA_VERSION, __version__
from als_datasets.shards.writer import write_tar_shard
from als_datasets.stats import satmae_entropy

__all__ = ["write_dataset", "make_samples", "S2_BANDS", "L8_BANDS", "LANDCOVERS", "SLOPES", "BIOMES"]

LANDCOVERS = ("developed", "forest", "other")
SLOPES = {"flat": 2.0, "sloped": 10.0, "steep": 25.0}  # representative terrain slope in degrees
#: (source band, STAC common name, nominal wavelength µm)
S2_BANDS = [("B1", "coastal", 0.44), ("B2", "blue", 0.49), ("B3", "green", 0.56), ("B4", "red", 0.665),
            ("B5", "rededge1", 0.705), ("B6", "rededge2", 0.74), ("B7", "rededge3", 0.783),
            ("B8", "nir", 0.842), ("B8A", "nir08", 0.865), ("B9", "nir09", 0.945), ("B10", "cirrus", 1.375),
            ("B11", "swir16", 1.61), ("B12", "swir22", 2.19)]
L8_BANDS = [("B1", "coastal", 0.443), ("B2", "blue", 0.482), ("B3", "green", 0.561), ("B4", "red", 0.655),
            ("B5", "nir08", 0.865), ("B6", "swir16", 1.609), ("B7", "swir22", 2.201)]
#: biome → (continent it mostly lies on, land cover, reflectance as a function of wavelength µm)
BIOMES = {
    "Deserts & Xeric Shrublands": ("Africa", "bare", lambda w: 0.18 + 0.12 * np.clip(w - 0.4, 0, 1.3)),
    "Temperate Broadleaf & Mixed Forests": (
        "Europe", "tree cover", lambda w: np.where(w < 0.69, 0.03 + 0.05 * np.exp(-((w - 0.56) / 0.04) ** 2),
                                                   np.where(w < 1.3, 0.35, 0.12))),
    "Tundra": ("North America", "snow and ice", lambda w: np.where(w < 1.0, 0.75 - 0.2 * (w - 0.4), 0.08)),
    "Flooded Grasslands & Savannas": ("South America", "herbaceous wetland",
                                      lambda w: np.where(w < 0.6, 0.06, 0.02) + 0.0 * w),
}
CONTINENTS = sorted({v[0] for v in BIOMES.values()})


# --------------------------------------------------------------------------------------------
# ALS
# --------------------------------------------------------------------------------------------
def _als_sample(i: int, landcover: str, slope_class: str, rng: np.random.Generator, *, n_points: int,
                tile_size_m: float, split: str, project: str) -> dict:
    t = float(tile_size_m)
    n = int(rng.integers(int(n_points * 0.8), int(n_points * 1.2) + 1))
    deg = SLOPES[slope_class] * rng.uniform(0.7, 1.3)
    aspect = rng.uniform(0, 2 * np.pi)
    grad = math.tan(math.radians(deg))
    gx, gy = grad * math.cos(aspect), grad * math.sin(aspect)
    z0 = rng.uniform(100.0, 1500.0)
    wave = rng.uniform(0.5, 2.0)

    def ground(x, y):
        return z0 + gx * (x - t / 2) + gy * (y - t / 2) + wave * np.sin(x / 23.0) * np.cos(y / 31.0)

    share = {"developed": (0.5, 0.45, 0.05), "forest": (0.35, 0.0, 0.65), "other": (0.8, 0.0, 0.2)}[landcover]
    n_obj = [int(n * s) for s in share]
    n_obj[0] = n - n_obj[1] - n_obj[2]
    xs, ys, zs, cls, rn, nr, inten = [], [], [], [], [], [], []

    # ground (class 2); under forest, part of it is the last of several returns
    x, y = rng.uniform(0, t, n_obj[0]), rng.uniform(0, t, n_obj[0])
    z = ground(x, y) + rng.normal(0, 0.08, n_obj[0])
    k = rng.integers(2, 5, n_obj[0]) if landcover == "forest" else np.ones(n_obj[0], np.int64)
    xs.append(x), ys.append(y), zs.append(z), cls.append(np.full(n_obj[0], 2)), rn.append(k), nr.append(k)
    inten.append(rng.normal(700 if landcover != "forest" else 350, 80, n_obj[0]))

    # flat roofs (class 6): rectangles at a constant height above the ground at their centre
    if n_obj[1]:
        nb = int(rng.integers(4, 9))
        cx, cy = rng.uniform(0.15 * t, 0.85 * t, nb), rng.uniform(0.15 * t, 0.85 * t, nb)
        hw, hh = rng.uniform(0.03, 0.07, nb) * t, rng.uniform(0.03, 0.07, nb) * t
        h = rng.uniform(4.0, 15.0, nb)
        b = rng.integers(0, nb, n_obj[1])
        x = cx[b] + rng.uniform(-1, 1, n_obj[1]) * hw[b]
        y = cy[b] + rng.uniform(-1, 1, n_obj[1]) * hh[b]
        z = ground(cx[b], cy[b]) + h[b] + rng.normal(0, 0.03, n_obj[1])
        xs.append(x), ys.append(y), zs.append(z), cls.append(np.full(n_obj[1], 6))
        rn.append(np.ones(n_obj[1], np.int64)), nr.append(np.ones(n_obj[1], np.int64))
        inten.append(rng.normal(1600, 120, n_obj[1]))

    # vegetation: tall multi-return crowns (forest, class 5) or low single-return grass (class 3)
    if n_obj[2]:
        m = n_obj[2]
        if landcover == "forest":
            nt = int(rng.integers(30, 70))
            cx, cy = rng.uniform(0, t, nt), rng.uniform(0, t, nt)
            rad, h = rng.uniform(2.0, 5.0, nt), rng.uniform(10.0, 25.0, nt)
            b = rng.integers(0, nt, m)
            r = rad[b] * np.sqrt(rng.uniform(0, 1, m))
            a = rng.uniform(0, 2 * np.pi, m)
            x, y = np.clip(cx[b] + r * np.cos(a), 0, t - 1e-3), np.clip(cy[b] + r * np.sin(a), 0, t - 1e-3)
            top = h[b] * (1 - 0.4 * (r / rad[b]) ** 2)
            above = top * rng.uniform(0.45, 1.0, m)
            k = rng.integers(2, 5, m)
            ret = np.minimum(1 + ((top - above) / np.maximum(top, 1e-3) * k).astype(np.int64), k)
            z = ground(x, y) + above
            c = np.full(m, 5)
            inten.append(rng.normal(250, 60, m))
        else:
            x, y = rng.uniform(0, t, m), rng.uniform(0, t, m)
            z = ground(x, y) + rng.uniform(0.1, 0.6, m)
            k = ret = np.ones(m, np.int64)
            c = np.full(m, 3)
            inten.append(rng.normal(450, 60, m))
        xs.append(x), ys.append(y), zs.append(z), cls.append(c), rn.append(ret), nr.append(k)

    xyz = np.stack([np.concatenate(xs), np.concatenate(ys), np.concatenate(zs)], 1).astype(np.float32)
    order = rng.permutation(len(xyz))  # sources are not sorted by class
    xyz = xyz[order]
    col, row = 10 + i % 7, 20 + i // 7
    tile_id = f"{project}_c{col}_r{row}"
    ox, oy = 500000.0 + col * t, 4000000.0 + row * t
    meta = {
        "project": project, "tile_id": tile_id, "crs": 32610, "origin": [ox, oy],
        "bounds_utm": [ox, oy, ox + t, oy + t], "lon": -123.0 + 0.01 * col, "lat": 44.0 + 0.01 * row,
        "landcover": landcover, "landcover_fractions": {landcover: 1.0}, "slope_class": slope_class,
        "slope_mean_deg": round(deg, 3), "stratum": f"{landcover}/{slope_class}", "point_count": int(len(xyz)),
        "density": round(len(xyz) / (t * t), 6), "strategy": "geospatial", "draw_rank": i, "weight": 1.0,
        "tile_size_m": t, "split": split, "source_files": [f"{project}.laz"], "points_dropped_noise": 0,
    }
    return {
        "__key__": tile_id, "json": meta, "xyz.npy": xyz,
        "intensity.npy": np.clip(np.concatenate(inten)[order], 0, 65535).astype(np.uint16),
        "return_number.npy": np.concatenate(rn)[order].astype(np.uint8),
        "number_of_returns.npy": np.concatenate(nr)[order].astype(np.uint8),
        "classification.npy": np.concatenate(cls)[order].astype(np.uint8),
    }


# --------------------------------------------------------------------------------------------
# Rasters
# --------------------------------------------------------------------------------------------
def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1]: bilinear upsampling of a coarse uniform grid."""
    g = rng.uniform(0, 1, (cells + 1, cells + 1))
    yy, xx = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(yy.astype(int), cells - 1), np.minimum(xx.astype(int), cells - 1)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    a, b = g[y0][:, x0], g[y0][:, x0 + 1]
    c, d = g[y0 + 1][:, x0], g[y0 + 1][:, x0 + 1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx)


def _nodata_mask(rng: np.random.Generator, h: int, w: int, p: float = 0.25) -> np.ndarray:
    """A corner block of nodata in a share ``p`` of the patches (as at a scene's edge)."""
    m = np.zeros((h, w), bool)
    if rng.uniform() < p:
        m[: int(rng.integers(1, h // 3 + 2)), : int(rng.integers(1, w // 2 + 2))] = True
    return m


def _sat_sample(i: int, biome: str, rng: np.random.Generator, *, size: int, split: str) -> dict:
    sensor, table = ("sentinel-2-l2a", S2_BANDS) if i % 3 != 2 else ("landsat-8-oli", L8_BANDS)
    continent, landcover, profile = BIOMES[biome]
    if rng.uniform() < 0.2:
        continent = CONTINENTS[int(rng.integers(len(CONTINENTS)))]
    wl = np.array([b[2] for b in table])
    refl = profile(wl)[:, None, None]
    tex = _smooth_field(rng, size, size)[None]
    px = refl * (0.7 + 0.6 * tex) + rng.normal(0, 0.01, (len(table), size, size))
    cloud = np.zeros((size, size), bool)
    if rng.uniform() < 0.3:
        cloud = _smooth_field(rng, size, size, 3) > 0.75
        px[:, cloud] = 0.8 + 0.05 * (wl[:, None] < 1.0)
    dn = np.clip(px * 10000, 1, 65535).astype(np.uint16)
    nod = _nodata_mask(rng, size, size)
    dn[:, nod] = 0
    valid = ~nod
    ent = float(np.mean([satmae_entropy(b[valid]) for b in dn])) if valid.any() else 0.0
    scene = f"{sensor.split('-')[0]}{sensor.split('-')[1]}_{biome.split()[0].lower()}_{i % 5}"
    key = f"{scene}_c{i % 11}_r{i // 11}"
    meta = {
        "scene": scene, "sensor": sensor, "bands": [b[0] for b in table], "common_bands": [b[1] for b in table],
        "crs": 32633, "bounds": [0.0, 0.0, size * 10.0, size * 10.0], "lon": float(rng.uniform(-170, 170)),
        "lat": float(rng.uniform(-60, 70)), "continent": continent, "biome": biome,
        "landcover": landcover if sensor.startswith("sentinel") else None, "spectral_entropy": round(ent, 6),
        "cloud_fraction": round(float(cloud[valid].mean()) if valid.any() else 0.0, 6),
        "nodata_fraction": round(float(nod.mean()), 6), "date": f"2021-0{1 + i % 9}-15", "tile_id": key,
        "split": split,
    }
    return {"__key__": key, "json": meta, "pixels.npy": dn}


def _dem_sample(i: int, biome: str, slope_class: str, rng: np.random.Generator, *, size: int,
                split: str, res_m: float = 30.0) -> dict:
    continent = BIOMES[biome][0]
    deg = SLOPES[slope_class] * rng.uniform(0.7, 1.3)
    g = math.tan(math.radians(deg)) * res_m
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    z = rng.uniform(0, 3000) + g * (np.cos(a) * xx + np.sin(a) * yy)
    z += 0.3 * g * size / 4 * (_smooth_field(rng, size, size) - 0.5)
    z = z.astype(np.float32)[None]
    nod = _nodata_mask(rng, size, size)
    z[0, nod] = np.nan
    key = f"dem_{continent.split()[0].lower()}_c{i % 13}_r{i // 13}"
    meta = {
        "scene": f"cop-dem-{i % 4}", "sensor": "copernicus-dem-glo30", "bands": ["elevation"],
        "common_bands": ["elevation"], "crs": 4326, "bounds": [0.0, 0.0, size * res_m, size * res_m],
        "lon": float(rng.uniform(-170, 170)), "lat": float(rng.uniform(-60, 70)), "continent": continent,
        "biome": biome, "landcover": None, "slope_class": slope_class, "slope_mean_deg": round(deg, 3),
        "nodata_fraction": round(float(nod.mean()), 6), "tile_id": key, "split": split,
    }
    return {"__key__": key, "json": meta, "pixels.npy": z}


# --------------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------------
def make_samples(kind: str, n: int, seed: int = 0, split: str = "train", *, start: int = 0, n_points: int = 3000,
                 tile_size_m: float = 150.0, patch_size_px: int = 32) -> list[dict]:
    """``n`` decoded samples of ``kind`` (as the loader yields them), a function of (seed, split, start).

    Labels are balanced: sample ``j`` gets the ``j``-th entry of a seeded permutation of all label
    combinations repeated, so every class appears when ``n`` ≥ the number of combinations.
    """
    rng = np.random.default_rng([seed, {"train": 0, "validation": 1}.get(split, 2), start])
    out = []
    if kind == "als":
        combos = [(lc, s) for lc in LANDCOVERS for s in SLOPES]
    elif kind == "satellite":
        combos = [(b,) for b in BIOMES]
    elif kind == "dem":
        combos = [(b, s) for b in BIOMES for s in SLOPES]
    else:
        raise ValueError(f"unknown kind {kind!r} (als, satellite or dem)")
    labels = [combos[j % len(combos)] for j in range(n)]
    labels = [labels[j] for j in rng.permutation(n)]
    for j, lab in enumerate(labels):
        i = start + j
        if kind == "als":
            project = ("synth-a", "synth-b", "synth-c")[i % 3]
            out.append(_als_sample(i, *lab, rng, n_points=n_points, tile_size_m=tile_size_m, split=split,
                                   project=project))
        elif kind == "satellite":
            out.append(_sat_sample(i, *lab, rng, size=patch_size_px, split=split))
        else:
            out.append(_dem_sample(i, *lab, rng, size=patch_size_px, split=split))
    return out


def _chunks(n: int, shard_size: int | list[int]) -> list[int]:
    if isinstance(shard_size, int):
        sizes = [shard_size] * (n // shard_size) + ([n % shard_size] if n % shard_size else [])
    else:
        sizes = list(shard_size)
        if sum(sizes) != n:
            raise ValueError(f"shard sizes {sizes} do not add up to {n}")
    return [s for s in sizes if s > 0]


def write_dataset(root, kind: str = "als", n_train: int = 48, n_val: int = 16,
                  shard_size: int | list[int] | dict = 16, seed: int = 0, *, name: str | None = None,
                  n_points: int = 3000, tile_size_m: float = 150.0, patch_size_px: int = 32) -> Path:
    """Write a small valid build folder of ``kind`` under ``root``; return ``root``.

    ``shard_size``: samples per shard (the last one short); or an explicit list of shard sizes of
    the train split (must add up to ``n_train``; validation then uses shards of the largest
    size); or ``{split: int | list}``.  ``n_val=0``: no validation split.
    ALS tiles are ``tile_size_m`` wide (default 150 m, so a 144 m BEV-MAE crop fits and a few
    thousand points stay dense enough); rasters are ``patch_size_px`` square (default 32 px).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kw = {"n_points": n_points, "tile_size_m": tile_size_m, "patch_size_px": patch_size_px}
    info = {"name": name or f"synthetic-{kind}", "version": __version__, "splits": {}}
    shards, start = [], 0
    common_lists, index_rows = [], []
    for split, n in (("train", n_train), ("validation", n_val)):
        if n <= 0:
            continue
        samples = make_samples(kind, n, seed, split, start=start, **kw)
        start += n
        common_lists += [s["json"].get("common_bands", []) for s in samples]
        index_rows += [{"key": s["__key__"], "split": split} for s in samples]
        files, lengths, pos = [], [], 0
        spec = shard_size.get(split, 16) if isinstance(shard_size, dict) else shard_size
        if not isinstance(spec, int) and split != "train":
            spec = max(spec)  # an explicit list describes the train split only
        sizes = _chunks(n, spec)
        for k, size in enumerate(sizes):
            rel = f"webdataset/{split}/shard-{k:06d}.tar"
            entry = write_tar_shard(root / rel, samples[pos:pos + size])
            pos += size
            files.append(rel)
            lengths.append(size)
            shards.append({**entry, "path": rel, "format": "webdataset", "split": split, "shard": k})
        info["splits"][split] = {"name": split, "num_samples": n, "filenames": files, "shard_lengths": lengths}
    if kind == "satellite":
        found = {b for c in common_lists for b in c}
        info["bands"] = [b for _, b, _ in S2_BANDS if b in found] + sorted(found - {b for _, b, _ in S2_BANDS})
        info["patch_size_px"] = patch_size_px
    elif kind == "dem":
        info["bands"] = ["elevation"]
        info["patch_size_px"] = patch_size_px
    manifest = {
        "tool": "als-datasets", "tool_version": __version__, "schema_version": SCHEMA_VERSION, "kind": kind,
        "name": info["name"], "strategy": "synthetic", "seed": seed,
        "splits": {k: v["num_samples"] for k, v in info["splits"].items()}, "shards": shards,
    }
    for fname, obj in (("_info.json", info), ("manifest.json", manifest)):
        (root / fname).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    import pandas as pd  # a catalogue with one row per sample, as a build writes (validate checks it)

    pd.DataFrame(index_rows, columns=["key", "split"]).to_parquet(root / "index.parquet", index=False)
    return root
