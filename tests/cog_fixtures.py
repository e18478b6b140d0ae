"""Cloud-optimised GeoTIFFs for the remote-raster tests and benchmarks, written by rasterio.

``write_cog`` writes a seeded raster through GDAL's COG driver: internal tiles, DEFLATE, and
overviews, as NLCD and the 3DEP DEM are published.  ``landcover`` and ``dem`` give NLCD-like
class patches and a smooth terrain in EPSG:5070 (CONUS Albers, NLCD's CRS) or any CRS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NLCD_CODES = np.array([11, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90], dtype=np.uint8)


def write_cog(path: Path, data: np.ndarray, crs, transform, nodata=None, block: int = 256, units: str | None = None):
    """``data`` (H, W) as a COG at ``path`` (tiled ``block`` px, DEFLATE, overviews)."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
                   crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block)
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
            if units:
                tmp.units = (units,)
        with mem.open() as src:
            rio_copy(src, str(path), driver="COG", BLOCKSIZE=block, COMPRESS="DEFLATE", OVERVIEWS="AUTO",
                     RESAMPLING="NEAREST")
    return path


def landcover(shape: tuple[int, int], seed: int = 0, patch: int = 24) -> np.ndarray:
    """NLCD-like codes in patches of about ``patch`` px (compresses like real land cover)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = rng.integers(0, len(NLCD_CODES), size=(h // patch + 2, w // patch + 2))
    # jitter the patch edges so tiles are not trivially compressible
    rr = (np.arange(h)[:, None] + rng.integers(0, patch // 2, size=(h, 1))) // patch
    cc = (np.arange(w)[None, :] + rng.integers(0, patch // 2, size=(1, w))) // patch
    out = NLCD_CODES[coarse[rr, cc]]
    noise = rng.random(shape) < 0.03
    out[noise] = NLCD_CODES[rng.integers(0, len(NLCD_CODES), size=int(noise.sum()))]
    return out


def dem(shape: tuple[int, int], seed: int = 0, base: float = 300.0, relief: float = 60.0) -> np.ndarray:
    """A smooth float32 terrain (metres) with a little roughness."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    z = base + relief * (np.sin(x / 97.0 + rng.random() * 6) * np.cos(y / 131.0 + rng.random() * 6))
    z += rng.normal(0, 0.3, size=shape)
    return z.astype(np.float32)
