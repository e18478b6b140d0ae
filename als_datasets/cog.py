"""Rasters by window from local files or URLs: GDAL's ranged reads with the settings that keep them small.

A URL (``https://``, ``s3://``, ``gs://``, ``az://``) is opened through GDAL's ranged-read
handlers (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``) under :data:`GDAL_HTTP_OPTIONS`, so
a window of a cloud-optimised GeoTIFF fetches about the bytes of the internal tiles it overlaps
(plus the header), never the whole file, and never lists the bucket's folder.  Signed URLs are
signed only when opened (:func:`als_datasets.remote.signed`); messages name the URL without its
query string.  Every kind that reads rasters (land cover and DEM of ALS builds, satellite scenes
from STAC) opens them here.
"""

from __future__ import annotations

from pathlib import Path

from als_datasets.errors import InputError
from als_datasets.remote import is_remote, redact

__all__ = ["GDAL_HTTP_OPTIONS", "raster_path", "gdal_env", "gdal_reason", "open_raster"]

#: GDAL settings for remote rasters: no directory listing on open (sidecar files are not looked
#: for), adjacent tile ranges merged into one request, a block cache so a tile read twice (two
#: reprojections, the unit probe) is fetched once, retries with backoff on 429/5xx
GDAL_HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024 * 1024),
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "20",
}
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


def raster_path(path: str | Path) -> str:
    """The path GDAL opens: a local path as is, a URL through its ``/vsi*`` ranged-read handler."""
    text = str(path)
    if not is_remote(text):
        return text
    scheme, rest = text.split("://", 1)
    prefix = _VSI.get(scheme.lower())
    if prefix is None:
        raise InputError(redact(text), f"rasters cannot be read from {scheme}:// URLs (use https://, s3:// or gs://)")
    return prefix + (text if prefix == "/vsicurl/" else rest)


def gdal_env(path: str | Path):
    """A ``rasterio.Env`` with :data:`GDAL_HTTP_OPTIONS` for a URL (and only the URL's own file
    extension allowed, so GDAL never probes ``.aux.xml``/``.ovr`` sidecars); plain for a file."""
    import contextlib
    import os

    import rasterio

    if not is_remote(str(path)):
        return contextlib.nullcontext()
    opts = dict(GDAL_HTTP_OPTIONS)
    suffix = Path(redact(str(path))).suffix
    if suffix:  # the file's own extension, and GeoTIFF (the tiles a remote VRT names)
        opts["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = ",".join(sorted({suffix, suffix.lower(), suffix.upper(), ".tif",
                                                                    ".tiff", ".TIF", ".TIFF"}))
    if str(path).lower().startswith("s3://") and not os.environ.get("AWS_ACCESS_KEY_ID") \
            and not os.environ.get("AWS_PROFILE"):
        opts["AWS_NO_SIGN_REQUEST"] = "YES"  # public buckets (3DEP, NLCD) without credentials
    return rasterio.Env(**opts)


def gdal_reason(exc: BaseException) -> str:
    """GDAL's message, one line, without any URL (a signed URL's token must not show)."""
    import re

    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r"(/vsi\w+/)?[a-z0-9+.-]+://\S+|/vsi\w+/\S+", "<url>", text)[:200]


def open_raster(path: str | Path, what: str):
    """A rasterio dataset over a local file or URL (call inside :func:`gdal_env`); one-line errors."""
    import rasterio

    name = redact(str(path))
    if not is_remote(str(path)) and not Path(path).is_file():
        raise InputError(name, f"{what} raster not found")
    try:
        return rasterio.open(raster_path(path))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(name, f"cannot read {what} raster: {gdal_reason(exc)}") from None
