"""Remote and COPC point clouds: ranged reads over HTTP(S), fsspec (``s3://``) or a local file.

3DEP is served today as COPC (Cloud Optimized Point Cloud: one LAZ 1.4 file whose points are
stored as an octree of independently compressed chunks, with a hierarchy that says where each
chunk lies).  Reading a tile box out of such a file needs the header (a few KB), the hierarchy
pages that cover the box, and the chunks of the octree nodes that overlap it: a small share of
the file.  This module gives the rest of the toolkit:

* :func:`is_remote`, :func:`redact`, :func:`source_name` — URL helpers (messages and names
  never carry the query string, where signed URLs keep their tokens);
* :func:`open_source` — a seekable, read-only file object over ranged fetches (``Range:
  bytes=a-b`` for ``http(s)://``, ``fs.cat_file`` for any fsspec protocol such as ``s3://``,
  ``os.pread`` for a local file) that counts the bytes and requests it made;
* :func:`read_header` — a LAS/LAZ/COPC header (with its VLRs) without downloading the file;
* :func:`iter_copc_boxes` — the points of a COPC file inside a list of boxes (in the file's
  CRS), fetched node by node, as the same chunk dicts that
  :func:`als_datasets.sources.pointcloud.iter_point_chunks` yields, in file order.

laspy's own HTTP reader (``laspy.copc.HttpRangeStream``) needs ``requests``, sends one request
per ``read`` call (many small ones for a header) and does not check that the server answered
``206 Partial Content`` — a server that ignores ``Range`` makes it read whole files.  Ours uses
the standard library, reads ahead in blocks, refuses such servers with a one-line error, and is
handed to laspy's :class:`~laspy.CopcReader` as a file object.

EPT (Entwine Point Tiles, ``ept.json`` — the USGS ``usgs-lidar-public`` bucket) is not read:
neither laspy nor any installed library reads it (PDAL's ``readers.ept`` does; PDAL is not a
dependency).  Such inputs are refused with a one-line error pointing at the COPC copies.
"""

from __future__ import annotations

import io
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from als_datasets.errors import InputError

__all__ = [
    "FetchStats",
    "RangeFile",
    "RemoteHeader",
    "is_remote",
    "is_ept",
    "redact",
    "source_name",
    "check_supported",
    "open_source",
    "read_header",
    "iter_copc_boxes",
]

#: read-ahead for small reads (hierarchy pages, VLRs past the first block)
BLOCK_SIZE = 16 * 1024
LARGE_CACHE = 8 * 1024 * 1024  # larger single reads are kept as the cache too (hierarchy pages)
#: first request to a remote file: the header and, usually, every VLR (it gives the file size too)
FIRST_BLOCK = 4096
#: parallel range requests of one batch of octree nodes (remote sources only)
HTTP_THREADS = 4
_RETRY_STATUS = {429, 500, 502, 503, 504}
#: fsspec protocol -> the package that implements it (for the "pip install" hint)
_FSSPEC_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                    "abfss": "adlfs"}


# --------------------------------------------------------------------------- names


def _scheme(path) -> str:
    text = os.fspath(path) if not isinstance(path, str) else path
    if "://" not in text:
        return ""
    return text.split("://", 1)[0].lower()


def is_remote(path) -> bool:
    """True for ``scheme://...`` inputs other than ``file://`` (http, https, s3, gs, ...)."""
    s = _scheme(path)
    return bool(s) and s != "file"


def redact(path) -> str:
    """The path or URL for messages and names: no query string, fragment or user:password
    (a signed URL's token must not land in error messages, logs or a published dataset)."""
    text = os.fspath(path) if not isinstance(path, str) else path
    if not is_remote(text):
        return text
    u = urllib.parse.urlsplit(text)
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    return urllib.parse.urlunsplit((u.scheme, host, u.path, "", ""))


def source_name(path) -> str:
    """The file name of a local path or URL (without a query string)."""
    return redact(path).rstrip("/").rsplit("/", 1)[-1]


def is_ept(path) -> bool:
    """True for an Entwine Point Tiles dataset (its ``ept.json``)."""
    return source_name(path).lower() == "ept.json"


def check_supported(path) -> None:
    """Refuse inputs no installed library can read (EPT) with a one-line :class:`InputError`."""
    if is_ept(path):
        raise InputError(redact(path), "EPT (Entwine Point Tiles) is not supported: neither laspy nor any installed "
                         "library reads it; use the project's COPC files (e.g. Planetary Computer 3dep-lidar-copc)")


# --------------------------------------------------------------------------- fetchers


@dataclass
class FetchStats:
    """Bytes and requests fetched from a source (shared by every file object opened on it)."""

    bytes_fetched: int = 0
    requests: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_fetched += nbytes
            self.requests += 1


class _LocalFetcher:
    parallel = False

    def __init__(self, path: str):
        self.name = path
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise InputError(path, "file not found") from None
        except OSError as e:
            raise InputError(path, f"cannot open: {e.strerror}") from None
        st = os.fstat(self._fd)
        self.size = st.st_size
        self.stamp = f"size={st.st_size};mtime_ns={st.st_mtime_ns}"
        self.first_block = b""

    def fetch(self, start: int, stop: int) -> bytes:
        return os.pread(self._fd, stop - start, start)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _HttpFetcher:
    """``GET`` with ``Range: bytes=a-b``; every answer must be ``206`` with a matching
    ``Content-Range``.  The first block is fetched on open (it gives the file size too)."""

    parallel = True

    def __init__(self, url: str, first: int, timeout: float = 60.0, retries: int = 3):
        self.url, self.name = url, redact(url)
        self.timeout, self.retries = timeout, retries
        self.size = -1
        self.first_block, total, headers = self._get(0, first)
        self.size = total
        self.stamp = ";".join(f"{k}={headers[k]}" for k in ("ETag", "Last-Modified") if headers.get(k)) \
            + f";size={total}"

    def fetch(self, start: int, stop: int) -> bytes:
        return self._get(start, stop)[0]

    def _get(self, start: int, stop: int) -> tuple[bytes, int, dict]:
        req = urllib.request.Request(self.url, headers={
            "Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity", "User-Agent": "als-datasets"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return self._body(resp, start, stop)
            except urllib.error.HTTPError as e:
                e.close()
                if e.code in _RETRY_STATUS and attempt < self.retries:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                raise InputError(self.name, f"HTTP {e.code} {e.reason} (fetching bytes {start}-{stop - 1})") from None
            except (urllib.error.URLError, OSError) as e:
                if attempt < self.retries:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                reason = getattr(e, "reason", None) or e
                raise InputError(self.name, f"cannot fetch ({' '.join(str(reason).split())})") from None
        raise AssertionError("unreachable")

    def _body(self, resp, start: int, stop: int) -> tuple[bytes, int, dict]:
        status = getattr(resp, "status", None) or resp.getcode()
        if status != 206:
            raise InputError(self.name, f"the server does not honour HTTP Range requests (answered {status} "
                             "instead of 206 Partial Content); remote point clouds need ranged reads")
        cr = resp.headers.get("Content-Range", "")
        try:
            unit, rest = cr.split(" ", 1)
            span, total_s = rest.split("/", 1)
            a, b = (int(v) for v in span.split("-", 1))
            total = int(total_s) if total_s != "*" else self.size
        except ValueError:
            raise InputError(self.name, f"bad Content-Range {cr!r} in a 206 answer") from None
        if unit != "bytes" or a != start or total is None or total < 0:
            raise InputError(self.name, f"the server answered range {cr!r} to a request for bytes={start}-{stop - 1}")
        want = min(stop, total) - start
        data = resp.read(want)
        if len(data) != want or b - a + 1 != want:
            raise InputError(self.name, f"short read: got {len(data)} of {want} bytes at offset {start}")
        return data, total, dict(resp.headers)

    def close(self) -> None:
        pass


class _FsspecFetcher:
    """Any fsspec filesystem (``s3://`` through s3fs, ``gs://`` through gcsfs...)."""

    parallel = True

    def __init__(self, url: str):
        self.name = redact(url)
        scheme = _scheme(url)
        pkg = _FSSPEC_PACKAGES.get(scheme, f"the fsspec implementation of {scheme}://")
        try:
            import fsspec

            self.fs, self.path = fsspec.core.url_to_fs(url)
        except ImportError:
            hint = f"pip install {pkg}" if scheme in _FSSPEC_PACKAGES else f"install {pkg}"
            raise InputError(self.name, f"reading {scheme}:// URLs needs {pkg.split()[-1]} ({hint})") from None
        except ValueError as e:
            raise InputError(self.name, f"no fsspec filesystem for {scheme}:// ({e})") from None
        try:
            info = self.fs.info(self.path)
        except FileNotFoundError:
            raise InputError(self.name, "file not found") from None
        except Exception as e:  # noqa: BLE001 - credentials, network: every backend raises its own
            raise InputError(self.name, f"cannot open ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
        self.size = int(info.get("size") or info.get("Size") or 0)
        tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or ""
        self.stamp = f"etag={tag};size={self.size}"
        self.first_block = b""

    def fetch(self, start: int, stop: int) -> bytes:
        try:
            return self.fs.cat_file(self.path, start=start, end=stop)
        except Exception as e:  # noqa: BLE001
            raise InputError(self.name, f"cannot fetch bytes {start}-{stop - 1} ({type(e).__name__})") from None

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- file object


class RangeFile(io.RawIOBase):
    """A seekable, read-only file over ranged fetches, with a one-block read-ahead cache.

    Reads smaller than ``block_size`` fetch a whole block (headers and VLRs are read field by
    field); larger reads fetch exactly what is asked.  ``stats`` counts bytes and requests.
    """

    def __init__(self, fetcher, stats: FetchStats | None = None, block_size: int = BLOCK_SIZE):
        super().__init__()
        self._f = fetcher
        self.stats = stats if stats is not None else FetchStats()
        self.block_size = block_size
        self._pos = 0
        self._cache_start, self._cache = 0, b""
        if fetcher.first_block:
            self.stats.add(len(fetcher.first_block))
            self._cache = fetcher.first_block

    @property
    def name(self) -> str:
        return self._f.name

    @property
    def size(self) -> int:
        return self._f.size

    @property
    def stamp(self) -> str:
        return self._f.stamp

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + pos < 0:
            raise ValueError("negative seek position")
        self._pos = base + pos
        return self._pos

    def fetch(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` in one request (counted), bypassing the cache."""
        data = self._f.fetch(start, stop)
        self.stats.add(len(data))
        if len(data) != stop - start:
            raise InputError(self.name, f"short read: got {len(data)} of {stop - start} bytes at offset {start}")
        return data

    def fetch_many(self, ranges: Sequence[tuple[int, int]], threads: int = HTTP_THREADS) -> list[bytes]:
        """Several ``(start, stop)`` ranges, in order; in parallel for remote sources."""
        if len(ranges) > 1 and self._f.parallel and threads > 1:
            with ThreadPoolExecutor(max_workers=min(threads, len(ranges))) as pool:
                return list(pool.map(lambda r: self.fetch(*r), ranges))
        return [self.fetch(a, b) for a, b in ranges]

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(b).cast("B")
        n = min(len(out), max(self.size - self._pos, 0))
        if n <= 0:
            return 0
        pos, c0 = self._pos, self._cache_start
        if not (c0 <= pos and pos + n <= c0 + len(self._cache)):
            if n >= self.block_size:
                data = self.fetch(pos, pos + n)
                if n <= LARGE_CACHE:  # a hierarchy page laspy reads twice is fetched once
                    self._cache_start, self._cache = pos, data
                out[:n] = data
                self._pos += n
                return n
            self._cache_start, self._cache = pos, self.fetch(pos, min(pos + self.block_size, self.size))
            c0 = pos
        out[:n] = self._cache[pos - c0: pos - c0 + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def open_source(path, stats: FetchStats | None = None, block_size: int = BLOCK_SIZE) -> RangeFile:
    """A :class:`RangeFile` over a local path, an ``http(s)://`` URL or an fsspec URL (``s3://``).

    Raises a one-line :class:`InputError` naming the (redacted) URL when the source is missing,
    unreachable, ignores ``Range``, or needs a package that is not installed.
    """
    text = os.fspath(path) if not isinstance(path, str) else path
    check_supported(text)
    scheme = _scheme(text)
    if scheme in ("http", "https"):
        fetcher = _HttpFetcher(text, min(FIRST_BLOCK, block_size))
    elif scheme == "file":
        fetcher = _LocalFetcher(urllib.request.url2pathname(urllib.parse.urlsplit(text).path))
    elif scheme:
        fetcher = _FsspecFetcher(text)
    else:
        fetcher = _LocalFetcher(text)
    return RangeFile(fetcher, stats, block_size)


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


# --------------------------------------------------------------------------- COPC queries


def _box_bounds(box):
    from laspy.copc import Bounds

    minx, miny, maxx, maxy = (float(v) for v in box)
    # z unbounded: the tiles are 2D, and a header's z range may be rounded
    return Bounds(np.array([minx, miny, -np.inf]), np.array([maxx, maxy, np.inf]))


def copc_nodes(reader, boxes: Iterable) -> list:
    """The octree nodes (with points) of an open :class:`laspy.CopcReader` that overlap any of
    ``boxes`` (minx, miny, maxx, maxy in the file's CRS); each node once, in file order.

    Hierarchy pages are fetched as the traversal reaches them, once per reader."""
    from laspy.copc import load_octree_for_query

    seen: dict = {}
    for box in boxes:
        for node in load_octree_for_query(reader.source, reader.copc_info, reader.root_page, _box_bounds(box)):
            if node.point_count > 0 and node.key not in seen:
                seen[node.key] = node
    return sorted(seen.values(), key=lambda n: n.offset)


def _batches(nodes: list, chunk_size: int) -> Iterator[list]:
    batch, count = [], 0
    for node in nodes:
        if batch and count + node.point_count > chunk_size:
            yield batch
            batch, count = [], 0
        batch.append(node)
        count += node.point_count
    if batch:
        yield batch


def _decode(reader, src: RangeFile, nodes: list, threads: int):
    """Fetch (contiguous nodes in one range) and decompress the points of ``nodes``."""
    import lazrs
    from laspy.point.record import PackedPointRecord, ScaleAwarePointRecord

    groups: list[list[int]] = []
    for node in nodes:
        if groups and groups[-1][1] == node.offset:
            groups[-1][1] += node.byte_size
        else:
            groups.append([node.offset, node.offset + node.byte_size])
    compressed = b"".join(src.fetch_many([tuple(g) for g in groups], threads))
    npts = sum(n.point_count for n in nodes)
    h = reader.header
    raw = np.zeros(npts * h.point_format.size, dtype=np.uint8)
    lazrs.decompress_points_with_chunk_table(compressed, reader.laszip_vlr.record_data, raw,
                                             [(n.point_count, n.byte_size) for n in nodes],
                                             reader.decompression_selection)
    rec = PackedPointRecord.from_buffer(raw, h.point_format)
    return ScaleAwarePointRecord(rec.array, rec.point_format, h.scales, h.offsets)


def _box_mask(x: np.ndarray, y: np.ndarray, boxes: list, node_bounds) -> np.ndarray:
    """Points inside any box; boxes not overlapping the node are skipped, a box holding the
    whole node keeps every point without comparing."""
    keep = np.zeros(len(x), dtype=bool)
    (nx0, ny0, _), (nx1, ny1, _) = node_bounds.mins, node_bounds.maxs
    for minx, miny, maxx, maxy in boxes:
        if maxx < nx0 or minx > nx1 or maxy < ny0 or miny > ny1:
            continue
        if minx <= nx0 and miny <= ny0 and maxx >= nx1 and maxy >= ny1:
            keep[:] = True
            break
        keep |= (x >= minx) & (x <= maxx) & (y >= miny) & (y <= maxy)
    return keep


def iter_copc_boxes(info, boxes: Sequence, chunk_size: int = 1_000_000, stats: FetchStats | None = None,
                    threads: int = HTTP_THREADS) -> Iterator[dict[str, np.ndarray]]:
    """The points of COPC file ``info.path`` (local path or URL) inside any of ``boxes``.

    ``boxes`` are (minx, miny, maxx, maxy) in the file's horizontal CRS and units (edges
    included).  Only the header, the hierarchy pages and the chunks of the octree nodes that
    overlap a box are fetched; each node once, even where boxes overlap, so that no point
    comes out twice.  Points come in file order (the order a full read gives), as chunk dicts
    of at most about ``chunk_size`` points (a node is never split): ``x``, ``y`` float64 in
    native units, ``z`` float64 metres (``info.z_to_m``), ``intensity`` uint16,
    ``return_number``, ``number_of_returns``, ``classification`` uint8.  ``stats`` receives
    the bytes and requests fetched.
    """
    import laspy

    from .pointcloud import _check_inside_header, _short

    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    boxes = [tuple(float(v) for v in b) for b in boxes]
    if not boxes:
        return
    name = redact(info.path)
    src = open_source(info.path, stats)
    try:
        try:
            reader = laspy.CopcReader(src, close_fd=False)
            nodes = copc_nodes(reader, boxes)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - laspy raises many types for a bad COPC
            raise InputError(name, f"not a readable COPC file ({_short(e)})") from None
        for batch in _batches(nodes, chunk_size):
            try:
                pts = _decode(reader, src, batch, threads)
                x = np.asarray(pts.x, dtype=np.float64)
                y = np.asarray(pts.y, dtype=np.float64)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - lazrs decode errors
                raise InputError(name, f"truncated or corrupt COPC data: {_short(e)}") from None
            keep = np.zeros(len(x), dtype=bool)
            start = 0
            for node in batch:
                s = slice(start, start + node.point_count)
                keep[s] = _box_mask(x[s], y[s], boxes, node.bounds)
                start += node.point_count
            if not keep.any():
                continue
            chunk = {
                "x": x[keep],
                "y": y[keep],
                "z": np.asarray(pts.z, dtype=np.float64)[keep] * info.z_to_m,
                "intensity": np.asarray(pts.intensity, dtype=np.uint16)[keep],
                "return_number": np.asarray(pts.return_number, dtype=np.uint8)[keep],
                "number_of_returns": np.asarray(pts.number_of_returns, dtype=np.uint8)[keep],
                "classification": np.asarray(pts.classification, dtype=np.uint8)[keep],
            }
            _check_inside_header(info, chunk)
            yield chunk
    finally:
        src.close()
