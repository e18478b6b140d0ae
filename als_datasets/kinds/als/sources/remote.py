"""Remote and COPC point clouds: LAS headers by ranged reads, and point clouds' names.

3DEP is served today as COPC (Cloud Optimized Point Cloud: one LAZ 1.4 file whose points are
stored as an octree of independently compressed chunks, with a hierarchy that says where each
chunk lies).  Reading a tile box out of such a file needs the header (a few KB), the hierarchy
pages that cover the box, and the chunks of the octree nodes that overlap it: a small share of
the file.  The ranged reads are the core's :mod:`als_datasets.remote` (re-exported here); this
module adds :func:`read_header` (a LAS/LAZ/COPC header with its VLRs without downloading the
file).  The COPC bounds queries are :mod:`.copc`; EPT datasets (Entwine Point Tiles,
``ept.json`` — the USGS ``usgs-lidar-public`` bucket) are read by bounds by :mod:`.ept`.
"""

from __future__ import annotations

from dataclasses import dataclass

from als_datasets.kinds.als.sources.ept import dataset_name, is_ept
from als_datasets.remote import (  # noqa: F401 - re-exported: the ALS sources' one import point
    BLOCK_SIZE,
    FIRST_BLOCK,
    HTTP_THREADS,
    FetchStats,
    RangeFile,
    _HttpFetcher,
    is_remote,
    redact,
    source_name,
)
from als_datasets.remote import open_source as _open_source

__all__ = [
    "FetchStats",
    "RangeFile",
    "RemoteHeader",
    "is_remote",
    "is_ept",
    "redact",
    "source_name",
    "source_label",
    "open_source",
    "read_header",
]


def source_label(path) -> str:
    """A point cloud's name in samples and cards: the file name, or for an EPT dataset the folder
    holding its ``ept.json`` (in the 3DEP archive, the project's name); never a query string."""
    return dataset_name(path) if is_ept(path) else source_name(path)


def open_source(path, stats: FetchStats | None = None, block_size: int = BLOCK_SIZE) -> RangeFile:
    """:func:`als_datasets.remote.open_source` (kept here: the ALS sources' one import point)."""
    return _open_source(path, stats, block_size)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class RemoteHeader:
    header: object  # laspy.LasHeader, VLRs parsed (EVLRs too unless a COPC with a CRS VLR)
    is_copc: bool
    size: int
    stamp: str  # size and, where the server gives them, ETag / Last-Modified
    stats: FetchStats


def _has_crs_vlr(header) -> bool:
    import laspy

    known = (laspy.vlrs.known.WktCoordinateSystemVlr, laspy.vlrs.known.GeoKeyDirectoryVlr)
    return any(isinstance(v, known) for v in header.vlrs)


def read_header(path, stats: FetchStats | None = None) -> RemoteHeader:
    """Read the header and VLRs of a LAS/LAZ/COPC file by ranged reads (no point data).

    EVLRs are read too, except for a COPC file whose VLRs already hold its CRS (its EVLRs
    are the octree hierarchy, which can be large and is read page by page when querying).
    Errors other than :class:`InputError` (a non-LAS body...) are left to the caller.
    """
    import laspy

    with open_source(path, stats) as src:
        header = laspy.LasHeader.read_from(src, read_evlrs=False)
        is_copc = any(v.user_id == "copc" and v.record_id == 1 for v in header.vlrs)
        if header.number_of_evlrs and not (is_copc and _has_crs_vlr(header)):
            header.read_evlrs(src)
        return RemoteHeader(header, is_copc, src.size, src.stamp, src.stats)
