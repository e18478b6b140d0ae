"""Embedded synthetic satellite and DEM inputs for the raster builder (``kind: satellite|dem``).

:func:`ensure_satellite_demo` / :func:`ensure_dem_demo` generate, on first use and into the cache
(``$ALS_DATASETS_CACHE``, like :func:`~als_datasets.demo.generator.ensure_demo`), a folder of
GeoTIFF scenes plus a recipe, so that a raster build works on a fresh machine with no download.
EVERYTHING IS SYNTHETIC: only the rough places are real.  Every byte is a pure function of the
seed (no timestamps in the GeoTIFF tags; same seed => identical files).

Satellite scenes.  Each scene is a landscape of land-cover classes (water, forest, grass,
cropland parcels at different crop stages, bare soil, desert, urban, shrub, rock, snow) drawn
from smooth seeded random fields, rendered with class-typical reflectance spectra (vegetation
red-edge / NIR jump and SWIR dip, dark water in NIR/SWIR, bright flat desert, snow dark in SWIR),
textures, terrain shading, pixel mixing and sensor noise.  Homogeneous water / desert / snow
patches have few distinct values and a low per-sample spectral entropy; urban and field mosaics a
high one.  The scenes mirror the layouts and traps of the real examples (``shared/data/SOURCES.md``):

* ``europe_s2l2a`` (a) -- Sentinel-2 L2A folder (Element 84 COG style ``B01.tif`` ... ``B12.tif``,
  ``B8A.tif``, ``SCL.tif``): one file per band at *mixed resolutions* (10 / 20 / 60 m, the coarse
  bands are block means of the fine surface), uint16 reflectance x 10000, nodata 0 declared;
  ``SCL`` at 20 m with cloud (8 / 9), cirrus (10) and cloud-shadow (3) patches that are also
  visible in the bands.  UTM 32N, SW Germany.
* ``europe_s2l2a_later`` (e) -- the same sensor and landscape six weeks later (crops ripened or
  harvested, other clouds), shifted so that ~39 % of its area overlaps (a); a nodata-0 wedge at a
  swath edge away from the overlap.  Exercises the cross-scene overlap check.
* ``africa_s2l1c`` (b) -- one 13-band Sentinel-2 L1C GeoTIFF in **EPSG:4326** (9e-5 deg, ~10 m),
  band descriptions B1..B12 with B8A in S2 order, **int16** TOA reflectance x 10000 (path
  radiance added, B9 water-vapour and B10 cirrus absorption), 20 / 60 m bands resampled to 10 m
  by block replication like Sen1Floods11; nodata 0 declared but 100 % valid.  Nile valley, Sudan.
* ``southamerica_s2l1c`` -- the same product as uint16 in UTM 21S (Mato Grosso deforestation
  frontier) with a few small clouds and *no* cloud mask, as real L1C.
* ``asia_landsat8`` (c) -- Landsat-8 OLI L1 folder ``LC08_..._B1.tif`` ... ``_B7.tif`` (+ an MTL
  text file that readers must skip), uint16 DN = (TOA + 0.1) / 2e-5, 30 m, with ~25 % **zero fill
  and no nodata tag** outside a rotated (WRS-2-like) footprint whose edge moves by a pixel or two
  from band to band.  Almaty: snowy mountains, forest, steppe, fields, city.
* ``oceania_landsat5`` (d) -- Landsat-5 TM NBAR-like 6-band multiband file (bands 1, 2, 3, 4, 5, 7)
  **without band descriptions** (the recipe names them), int16 reflectance x 10000, declared
  nodata **-999** in a swath-edge corner, and slightly *negative valid* values over water.
  Riverina, NSW.
* ``northamerica_s2l2a`` -- a Sentinel-2 L2A folder at the Colorado Front Range with snow (SCL 11,
  not cloud) on the mountains and a few clouds.

DEM scenes (float32 metres, nodata -9999, 30 m): ``alps`` (UTM 32N, ridged mountains, broad
valleys, with SRTM-like voids on steep slopes), ``texas_coast`` (UTM 15N, flat coastal plain, an
incised river and sea at exactly 0 m) and ``rwanda_hills`` (EPSG:4326, 1 arc-second, rolling hills
with flat valley swamps).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .raster_synth import (
    BARE,
    DEM_NODATA,
    DESERT,
    FOREST,
    GRASS,
    SHRUB,
    _apply_clouds,
    _block_mean,
    _noise,
    _quantise,
    at_wavelengths,
    clouds,
    dem_terrain,
    landscape,
    scl,
    surface,
    toa,
)

__all__ = ["generate_satellite_demo", "ensure_satellite_demo", "generate_dem_demo", "ensure_dem_demo",
           "SATELLITE_SCENES", "DEM_SCENES"]

RASTER_DEMO_VERSION = "v1"

# (name, centre wavelength nm, native resolution m) of each sensor's bands
S2_BANDS = [("B1", 443, 60), ("B2", 490, 10), ("B3", 560, 10), ("B4", 665, 10), ("B5", 705, 20),
            ("B6", 740, 20), ("B7", 783, 20), ("B8", 842, 10), ("B8A", 865, 20), ("B9", 945, 60),
            ("B10", 1375, 60), ("B11", 1610, 20), ("B12", 2190, 20)]
L8_BANDS = [("B1", 443), ("B2", 482), ("B3", 561), ("B4", 655), ("B5", 865), ("B6", 1609), ("B7", 2201)]
TM_BANDS = [("B1", 485), ("B2", 560), ("B3", 660), ("B4", 830), ("B5", 1650), ("B7", 2215)]


# ---------------------------------------------------------------------------------------------
# writers and grids
# ---------------------------------------------------------------------------------------------
def _write(path: Path, arr: np.ndarray, transform, crs: int, nodata=None, descriptions=None) -> None:
    """GeoTIFF like :func:`~als_datasets.demo.synth.write_geotiff` (deflate + predictor, tiled 256 when
    large, no timestamps), with several bands and band descriptions."""
    import rasterio
    from rasterio.crs import CRS

    arr = arr[None] if arr.ndim == 2 else arr
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                   dtype=arr.dtype.name, crs=CRS.from_epsg(crs), transform=transform, compress="deflate",
                   predictor=3 if arr.dtype.kind == "f" else 2)
    if nodata is not None:
        profile["nodata"] = nodata
    if arr.shape[1] > 256 and arr.shape[2] > 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)


def grid(crs: int, lonlat: tuple[float, float], shape: tuple[int, int], res: float, snap: float):
    """North-up grid transform: ``shape`` pixels of ``res`` centred near ``lonlat``, origin on ``snap``."""
    from affine import Affine
    from pyproj import Transformer

    if crs == 4326:
        cx, cy = lonlat
    else:
        cx, cy = Transformer.from_crs(4326, crs, always_xy=True).transform(*lonlat)
    x0 = round((cx - shape[1] * res / 2) / snap) * snap
    y0 = round((cy + shape[0] * res / 2) / snap) * snap
    return Affine(res, 0.0, round(x0, 9), 0.0, -res, round(y0, 9))


def _affine(t, row: int = 0, col: int = 0, f: int = 1):
    """The grid ``t`` shifted to start at (``row``, ``col``) with pixels ``f`` times larger."""
    from affine import Affine

    return Affine(t.a * f, 0.0, round(t.c + col * t.a, 9), 0.0, t.e * f, round(t.f + row * t.e, 9))


# ---------------------------------------------------------------------------------------------
# the satellite scenes
# ---------------------------------------------------------------------------------------------
_DEG10 = 9e-5  # ~10 m in degrees (Sen1Floods11 uses 8.98e-5)
PLACES = {  # canvas: crs, lon/lat of its centre, shape, resolution, landscape profile, terrain shading
    "europe": dict(crs=32632, lonlat=(9.25, 48.55), shape=(840, 810), res=10.0, snap=60.0, shading=0.3,
                   profile=dict(background=GRASS, river=7, water=0.05, forest=0.28, forest_level=0.7, towns=3,
                                urban=0.10, crop=0.40, parcel_px=25, extra=[(BARE, 0.02, 15)])),
    "africa": dict(crs=4326, lonlat=(33.6, 16.6), shape=(560, 560), res=_DEG10, snap=_DEG10, shading=0.0,
                   profile=dict(background=DESERT, river=28, crop_near_river=True, crop=0.22, parcel_px=14,
                                towns=2, urban=0.04, extra=[(SHRUB, 0.05, 12), (BARE, 0.04, 10)])),
    "southamerica": dict(crs=32721, lonlat=(-55.7, -12.5), shape=(540, 540), res=10.0, snap=60.0, shading=0.0,
                         profile=dict(background=FOREST, river=6, river_vertical=True, towns=1, urban=0.02,
                                      crop=0.30, parcel_px=60, extra=[(GRASS, 0.10, 30), (BARE, 0.04, 20)])),
    "asia": dict(crs=32643, lonlat=(76.95, 43.35), shape=(720, 720), res=30.0, snap=30.0, shading=1.0,
                 profile=dict(background=SHRUB, gradient=(-1.2, 0.0), water=0.03, snow=0.08, rock=0.07,
                              forest=0.14, forest_level=0.78, towns=3, urban=0.15, crop=0.25, parcel_px=12,
                              extra=[(BARE, 0.04, 10)])),
    "oceania": dict(crs=32755, lonlat=(146.1, -34.4), shape=(600, 600), res=30.0, snap=30.0, shading=0.0,
                    profile=dict(background=SHRUB, river=3, water=0.05, forest=0.05, towns=1, urban=0.03,
                                 crop=0.45, parcel_px=15, extra=[(BARE, 0.08, 12)])),
    "northamerica": dict(crs=32613, lonlat=(-105.2, 39.95), shape=(600, 600), res=10.0, snap=60.0,
                         shading=1.0,
                         profile=dict(background=GRASS, gradient=(0.0, -1.3), water=0.03, snow=0.07,
                                      rock=0.06, forest=0.25, forest_level=0.72, towns=3, urban=0.20,
                                      crop=0.12, parcel_px=20)),
}

#: the scenes: place, window (row, col, height, width) of the place's canvas, layout, recipe keys
SATELLITE_SCENES = [
    dict(name="europe_s2l2a", place="europe", window=(240, 0, 600, 600), layout="s2l2a", t=0.0,
         clouds=dict(cover=0.05, cirrus=0.02), sensor="sentinel-2-l2a", date="2021-06-01"),
    dict(name="europe_s2l2a_later", place="europe", window=(0, 210, 600, 600), layout="s2l2a", t=0.12,
         clouds=dict(cover=0.07), wedge=0.12, sensor="sentinel-2-l2a", date="2021-07-16"),
    dict(name="africa_s2l1c", place="africa", layout="s2l1c", dtype="int16", t=0.3, file="africa_s2l1c.tif",
         sensor="sentinel-2-l1c", date="2019-09-18"),
    dict(name="southamerica_s2l1c", place="southamerica", layout="s2l1c", dtype="uint16", t=0.5,
         clouds=dict(cover=0.03), file="southamerica_s2l1c.tif", sensor="sentinel-2-l1c", date="2020-08-10"),
    dict(name="asia_landsat8", place="asia", layout="l8", t=0.4, footprint=0.75,
         stem="LC08_L1TP_149030_20200728_20200807_01_T1", sensor="landsat-8-l1", date="2020-07-28"),
    dict(name="oceania_landsat5", place="oceania", layout="tm", t=0.7, file="oceania_landsat5_nbar.tif",
         sensor="landsat-5-tm", date="1992-03-23"),
    dict(name="northamerica_s2l2a", place="northamerica", layout="s2l2a", t=0.1, clouds=dict(cover=0.04),
         sensor="sentinel-2-l2a", date="2021-05-20"),
]
_CLOUD_MASK = {"band": "SCL", "classes": [3, 8, 9, 10]}


def _wedge(h: int, w: int, share: float, corner: str = "sw") -> np.ndarray:
    """Boolean triangle of ~``share`` of the canvas in a corner (a swath edge)."""
    yy, xx = np.mgrid[0:h, 0:w]
    u = (h - 1 - yy) / h if corner.startswith("s") else yy / h
    v = xx / w if corner.endswith("w") else (w - 1 - xx) / w
    return u + v < math.sqrt(2 * share)


def _write_s2l2a(folder: Path, refl: np.ndarray, cls: np.ndarray, cl, nodata, transform, crs, rng) -> None:
    """Sentinel-2 L2A folder: one uint16 COG-like file per band at 10 / 20 / 60 m, SCL at 20 m."""
    for name, wl, res in S2_BANDS:
        if name == "B10":  # no cirrus band in L2A
            continue
        f = int(res // 10)
        band = at_wavelengths(refl, [wl])[0]
        band = _block_mean(band, f) if f > 1 else band
        dn = _quantise(_noise(rng, band, 0.00015, 0.0005 / f) * 10000, "uint16", 1)
        if nodata is not None:
            dn[_block_mean(nodata.astype(np.float32), f) > 0 if f > 1 else nodata] = 0
        fname = f"B{name[1:].zfill(2)}.tif" if name != "B8A" else "B8A.tif"
        _write(folder / fname, dn, _affine(transform, f=f), crs, nodata=0)
    code = scl(cls, cl)[::2, ::2]
    if nodata is not None:
        code[nodata[::2, ::2] | nodata[1::2, 1::2]] = 0
    _write(folder / "SCL.tif", code, _affine(transform, f=2), crs, nodata=0)


def _write_s2l1c(path: Path, refl: np.ndarray, transform, crs, dtype: str, rng) -> list[str]:
    """13-band Sentinel-2 L1C GeoTIFF at 10 m (coarse bands block-replicated), TOA x 10000."""
    names = [b[0] for b in S2_BANDS]
    top = toa(at_wavelengths(refl, [b[1] for b in S2_BANDS]), [b[1] for b in S2_BANDS])
    h, w = refl.shape[1:]
    out = np.empty((len(S2_BANDS), h, w), dtype=dtype)
    for j, (_, _, res) in enumerate(S2_BANDS):
        f = int(res // 10)
        band = _block_mean(top[j], f) if f > 1 else top[j]
        band = _noise(rng, band, 0.00015, 0.0005 / f) * 10000
        if f > 1:
            band = np.repeat(np.repeat(band, f, axis=0), f, axis=1)
            band = np.pad(band, ((0, h - band.shape[0]), (0, w - band.shape[1])), mode="edge")
        out[j] = _quantise(band, dtype, 1)
    _write(path, out, transform, crs, nodata=0, descriptions=names)
    return names


def _footprint(h: int, w: int, share: float, angle_deg: float = 12.5, shift: tuple = (0, 0)) -> np.ndarray:
    """Rotated square footprint (WRS-2-like scene) covering ~``share`` of the raster."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    dx, dy = w / 2 + shift[1], h / 2 + shift[0]
    half = 0.5 * math.sqrt(share * h * w)
    return (np.abs((xx - dx) * c + (yy - dy) * s) < half) & (np.abs((yy - dy) * c - (xx - dx) * s) < half)


def _write_l8(folder: Path, stem: str, refl: np.ndarray, transform, crs, share: float, date: str,
              rng) -> None:
    """Landsat-8 L1 folder: uint16 DN per band, zero fill (no nodata tag) outside a rotated footprint."""
    h, w = refl.shape[1:]
    wls = [b[1] for b in L8_BANDS]
    top = toa(at_wavelengths(refl, wls), wls)
    for j, (name, _) in enumerate(L8_BANDS):
        dn = _quantise(_noise(rng, top[j], 0.0001, 0.0005) / 2e-5 + 0.1 / 2e-5, "uint16", 1)
        dn[~_footprint(h, w, share, shift=(j % 3 - 1, (j * 2) % 3 - 1))] = 0  # band edges differ by a pixel
        _write(folder / f"{stem}_{name}.tif", dn, transform, crs)
    (folder / f"{stem}_MTL.txt").write_text(
        "GROUP = L1_METADATA_FILE\n  GROUP = PRODUCT_METADATA\n    SPACECRAFT_ID = \"LANDSAT_8\"\n"
        f"    DATE_ACQUIRED = {date}\n    DATA_TYPE = \"L1TP\"\n  END_GROUP = PRODUCT_METADATA\n"
        "  COMMENT = \"SYNTHETIC (als-datasets demo): not a real Landsat product\"\n"
        "END_GROUP = L1_METADATA_FILE\nEND\n")


def _write_tm(path: Path, refl: np.ndarray, transform, crs, rng) -> list[str]:
    """Landsat-5 TM NBAR-like 6-band int16 file, nodata -999 in a corner, no band descriptions."""
    h, w = refl.shape[1:]
    sr = _noise(rng, at_wavelengths(refl, [b[1] for b in TM_BANDS]), 0.0010, 0.001) * 10000
    out = _quantise(sr, "int16", -998)  # water may go slightly negative: still valid
    out[:, _wedge(h, w, 0.08, "ne")] = -999
    _write(path, out, transform, crs, nodata=-999)
    return [b[0] for b in TM_BANDS]


def _flow(v) -> str:
    """A value as YAML flow text (deterministic; strings quoted when YAML could misread them)."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    if isinstance(v, str):
        return v if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", v) else '"' + v.replace('"', '\\"') + '"'
    return str(v)


_SAT_RECIPE = """\
# Embedded satellite demo (SYNTHETIC scenes generated by als_datasets.demo.raster from seed {seed});
# paths are relative to this file.  See README.txt for what each scene mirrors.
kind: satellite
name: satellite-demo
strategy: global
seed: 41
samples: 120                # total samples drawn
patch_size_px: 96
max_nodata_fraction: 0.05
max_cloud_fraction: 0.1
max_overlap: 0.1            # max share of a patch's area that may overlap an earlier sample
spectral_entropy: {{bins: 256, base: e}}
license: cc0-1.0
sources:
  - {{name: "als-datasets embedded satellite demo: synthetic scenes generated from a seed (no real data)",
     license: CC0-1.0}}
scenes:
{scenes}"""


def generate_satellite_demo(out_dir, seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """Write the synthetic satellite scenes and ``satellite.yaml`` into ``out_dir``; returns the recipe.

    No atomicity here (see :func:`ensure_satellite_demo`).  Same seed => byte-identical files.
    """
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lands: dict[str, dict] = {}
    lines = []
    for k, sc in enumerate(SATELLITE_SCENES):
        pl = PLACES[sc["place"]]
        pk = list(PLACES).index(sc["place"])
        if sc["place"] not in lands:
            lands[sc["place"]] = landscape([seed, 11, pk], *pl["shape"], pl["profile"])
        land = lands[sc["place"]]
        transform = grid(pl["crs"], pl["lonlat"], pl["shape"], pl["res"], pl["snap"])
        r0, c0, hh, ww = sc.get("window", (0, 0) + tuple(pl["shape"]))
        if (r0, c0) != (0, 0) or (hh, ww) != tuple(pl["shape"]):
            land = {key: (a[r0:r0 + hh, c0:c0 + ww] if isinstance(a, np.ndarray) and a.ndim == 2 else a)
                    for key, a in land.items()}
            transform = _affine(transform, r0, c0)
        refl = surface([seed, 12, k], land, t=sc.get("t", 0.0), shading=pl["shading"])
        cl = clouds([seed, 13, k], hh, ww, **sc["clouds"]) if sc.get("clouds") else None
        if cl is not None:
            refl = _apply_clouds(refl, cl)
        rng = np.random.default_rng([seed, 14, k])
        spec = {"name": sc["name"]}
        if sc["layout"] == "s2l2a":
            nod = _wedge(hh, ww, sc["wedge"], "sw") if sc.get("wedge") else None
            _write_s2l2a(out / "scenes" / sc["name"], refl, land["cls"], cl, nod, transform, pl["crs"], rng)
            spec["path"] = f"scenes/{sc['name']}"
        elif sc["layout"] == "s2l1c":
            _write_s2l1c(out / "scenes" / sc["file"], refl, transform, pl["crs"], sc["dtype"], rng)
            spec["path"] = f"scenes/{sc['file']}"
        elif sc["layout"] == "l8":
            _write_l8(out / "scenes" / sc["name"], sc["stem"], refl, transform, pl["crs"], sc["footprint"],
                      sc["date"], rng)
            spec["path"] = f"scenes/{sc['name']}"
        else:
            spec["path"] = f"scenes/{sc['file']}"
            spec["bands"] = _write_tm(out / "scenes" / sc["file"], refl, transform, pl["crs"], rng)
        spec.update(sensor=sc["sensor"], date=sc["date"])
        if sc["layout"] == "s2l2a":
            spec["cloud_mask"] = _CLOUD_MASK
        lines.append("  - " + _flow(spec) + "\n")
        say(f"satellite demo: {sc['name']} ({sc['layout']}, EPSG:{pl['crs']})")
    recipe = out / "satellite.yaml"
    recipe.write_text(_SAT_RECIPE.format(seed=seed, scenes="".join(lines)))
    (out / "README.txt").write_text(_readme("satellite", seed))
    say(f"satellite demo: generated in {time.perf_counter() - t0:.1f} s")
    return recipe


# ---------------------------------------------------------------------------------------------
# the DEM scenes
# ---------------------------------------------------------------------------------------------
_ARCSEC = 1.0 / 3600.0
#: name, file, EPSG, lon/lat centre, shape, resolution, terrain kind
DEM_SCENES = [
    dict(name="alps_dem", file="alps.tif", crs=32632, lonlat=(8.3, 46.5), shape=(512, 512), res=30.0,
         terrain="mountains"),
    dict(name="texas_coast_dem", file="texas_coast.tif", crs=32615, lonlat=(-95.3, 29.2), shape=(480, 480),
         res=30.0, terrain="coast"),
    dict(name="rwanda_hills_dem", file="rwanda_hills.tif", crs=4326, lonlat=(29.9, -2.0), shape=(480, 480),
         res=_ARCSEC, terrain="hills"),
]


_DEM_RECIPE = """\
# Embedded DEM demo (SYNTHETIC elevation generated by als_datasets.demo.raster from seed {seed});
# paths are relative to this file.  See README.txt.
kind: dem
name: dem-demo
strategy: random
seed: 41
samples: 60
patch_size_px: 64
max_nodata_fraction: 0.0
license: cc0-1.0
sources:
  - {{name: "als-datasets embedded DEM demo: synthetic terrain generated from a seed (no real data)",
     license: CC0-1.0}}
scenes:
{scenes}"""


def generate_dem_demo(out_dir, seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """Write the synthetic DEM rasters and ``dem.yaml`` into ``out_dir``; returns the recipe."""
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    (out / "dems").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, sc in enumerate(DEM_SCENES):
        z = dem_terrain([seed, 21, k], sc["shape"], sc["terrain"])
        snap = sc["res"] if sc["crs"] == 4326 else 30.0
        transform = grid(sc["crs"], sc["lonlat"], sc["shape"], sc["res"], snap)
        _write(out / "dems" / sc["file"], z, transform, sc["crs"], nodata=DEM_NODATA)
        spec = {"name": sc["name"], "path": f"dems/{sc['file']}", "sensor": "synthetic-dem"}
        lines.append("  - " + _flow(spec) + "\n")
        say(f"dem demo: {sc['name']} ({sc['terrain']}, EPSG:{sc['crs']})")
    recipe = out / "dem.yaml"
    recipe.write_text(_DEM_RECIPE.format(seed=seed, scenes="".join(lines)))
    (out / "README.txt").write_text(_readme("dem", seed))
    return recipe


def _readme(kind: str, seed: int) -> str:
    """README of a demo folder: the module docstring (what each file mirrors) and the seed."""
    title = f"als-datasets embedded {kind} demo (version {RASTER_DEMO_VERSION}, seed {seed})"
    return f"{title}\n{'=' * len(title)}\n\nEVERYTHING IN THIS FOLDER IS SYNTHETIC (CC0).\n\n{__doc__}"


# ---------------------------------------------------------------------------------------------
# cache folders (atomic, like demo.als.generate.ensure_demo)
# ---------------------------------------------------------------------------------------------
def _ensure(kind: str, recipe_name: str, make, ours: set[str], cache_dir, seed: int, progress) -> Path:
    from .cache import default_cache, ensure_generated

    folder = f"{kind}-demo-{RASTER_DEMO_VERSION}-seed{seed}"
    target = Path(cache_dir) if cache_dir is not None else default_cache() / folder
    return ensure_generated(target, recipe_name, ours, lambda tmp: make(tmp, seed=seed, progress=progress),
                            f"als-datasets {kind} demo {RASTER_DEMO_VERSION} seed {seed}\n", what=f"{kind} demo")


def ensure_satellite_demo(cache_dir=None, seed: int = 0,
                          progress: Callable[[str], None] | None = None) -> Path:
    """The satellite demo recipe (``<folder>/satellite.yaml``), generated on first use.

    ``cache_dir`` is the demo folder itself; default ``$ALS_DATASETS_CACHE`` (or
    ``~/.cache/als-datasets``) / ``satellite-demo-v1-seed<seed>``.  Generated into a temporary
    sibling, moved into place with ``os.replace``, ``.complete`` marker written before the move.
    """
    return _ensure("satellite", "satellite.yaml", generate_satellite_demo,
                   {"satellite.yaml", "README.txt", "scenes", ".complete"}, cache_dir, seed, progress)


def ensure_dem_demo(cache_dir=None, seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """The DEM demo recipe (``<folder>/dem.yaml``; default folder ``dem-demo-v1-seed<seed>``)."""
    return _ensure("dem", "dem.yaml", generate_dem_demo, {"dem.yaml", "README.txt", "dems", ".complete"},
                   cache_dir, seed, progress)
