"""Ranged reads of any input: HTTP(S) with ``Range``, fsspec URLs (``s3://``) or local files.

Every archive the toolkit reads (COPC and EPT point clouds, STAC assets, remote rasters) is read
by ranges, and only what a build needs is fetched:

* :func:`is_remote`, :func:`redact`, :func:`source_name` — URL helpers (messages and names
  never carry the query string, where signed URLs keep their tokens);
* :func:`open_source` — a seekable, read-only file object over ranged fetches (``Range:
  bytes=a-b`` for ``http(s)://``, ``fs.cat_file`` for any fsspec protocol such as ``s3://``,
  ``os.pread`` for a local file) that counts the bytes and requests it made.

laspy's own HTTP reader (``laspy.copc.HttpRangeStream``) needs ``requests``, sends one request
per ``read`` call (many small ones for a header) and does not check that the server answered
``206 Partial Content`` — a server that ignores ``Range`` makes it read whole files.  Ours uses
the standard library, reads ahead in blocks, retries 429/5xx and network errors with backoff,
refuses such servers with a one-line error, and is handed to laspy as a file object.
"""

from __future__ import annotations

import http.client
import io
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from als_datasets.errors import InputError, redact_url

__all__ = [
    "FetchStats",
    "RangeFile",
    "is_remote",
    "redact",
    "source_name",
    "open_source",
    "read_whole",
]

#: read-ahead for small reads (hierarchy pages, VLRs past the first block)
BLOCK_SIZE = 16 * 1024
LARGE_CACHE = 8 * 1024 * 1024  # larger single reads are kept as the cache too (hierarchy pages)
#: first request to a remote file: the header and, usually, every VLR (it gives the file size too)
FIRST_BLOCK = 4096
#: parallel range requests of one batch of octree nodes (remote sources only)
HTTP_THREADS = 4
_RETRY_STATUS = {429, 500, 502, 503, 504}
#: seconds before the first retry of a failed request; doubled for each further one
RETRY_BASE_S = 0.5
#: retries of a failed request (429/5xx, network error, timeout, truncated body) before giving up
RETRIES = 3
#: seconds a request may wait for the server (connect, or between bytes of the answer)
TIMEOUT_S = 60.0
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
    return redact_url(text) if is_remote(text) else text


def source_name(path) -> str:
    """The file name of a local path or URL (without a query string)."""
    return redact(path).rstrip("/").rsplit("/", 1)[-1]


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


class _Truncated(Exception):
    """A body shorter than announced (a dropped connection): retried like a network error."""


def _retrying(name: str, req, timeout: float, retries: int, body, what: str = ""):
    """``body(resp)`` of ``urlopen(req)``, retrying 429/5xx, network errors, timeouts and truncated
    bodies ``retries`` times with exponential backoff (:data:`RETRY_BASE_S`, doubled each time);
    then a one-line :class:`InputError` naming ``name`` (a redacted URL)."""
    for attempt in range(retries + 1):
        last = attempt >= retries
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return body(resp)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in _RETRY_STATUS and not last:
                time.sleep(RETRY_BASE_S * 2 ** attempt)
                continue
            reason = "file not found (HTTP 404)" if e.code == 404 else f"HTTP {e.code} {e.reason}"
            tries = f" after {attempt + 1} tries" if attempt else ""
            raise InputError(name, f"{reason}{f' (fetching {what})' if what else ''}{tries}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, _Truncated) as e:
            if not last:
                time.sleep(RETRY_BASE_S * 2 ** attempt)
                continue
            reason = getattr(e, "reason", None) or e
            if isinstance(e, (_Truncated, http.client.IncompleteRead)):
                reason = f"truncated body: {e}"
            elif isinstance(e, TimeoutError) or "timed out" in str(reason):
                reason = f"timed out after {timeout:g} s"
            tries = f" after {attempt + 1} tries" if attempt else ""
            raise InputError(name, f"cannot fetch{' ' + what if what else ''} ({' '.join(str(reason).split())}){tries}")\
                from None
    raise AssertionError("unreachable")


class _HttpFetcher:
    """``GET`` with ``Range: bytes=a-b``; every answer must be ``206`` with a matching
    ``Content-Range``.  The first block is fetched on open (it gives the file size too)."""

    parallel = True

    def __init__(self, url: str, first: int, timeout: float | None = None, retries: int | None = None):
        self.url, self.name = signed(url), redact(url)
        self.timeout = TIMEOUT_S if timeout is None else timeout
        self.retries = RETRIES if retries is None else retries
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
        return _retrying(self.name, req, self.timeout, self.retries, lambda resp: self._body(resp, start, stop),
                         f"bytes {start}-{stop - 1}")

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
        if b - a + 1 != want:
            raise InputError(self.name, f"the server answered range {cr!r} to a request for bytes={start}-{stop - 1}")
        data = resp.read(want)
        if len(data) != want:  # a truncated body: retried
            raise _Truncated(f"short read: got {len(data)} of {want} bytes at offset {start}")
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


def read_whole(path, stats: FetchStats | None = None, timeout: float | None = None, retries: int | None = None) -> bytes:
    """The whole content of a small file (a JSON document, an EPT node) in one request.

    ``http(s)://``: one ``GET`` (no ``Range``), retried like ranged reads (429/5xx, network errors,
    timeouts, a body shorter than its ``Content-Length``), then a one-line :class:`InputError`
    naming the redacted URL; 404 says "file not found".  fsspec URLs: ``cat_file``; local paths
    and ``file://``: read.  ``stats`` counts the bytes and the request.  ``timeout`` and
    ``retries`` default to :data:`TIMEOUT_S` and :data:`RETRIES`."""
    text = os.fspath(path) if not isinstance(path, str) else path
    scheme = _scheme(text)
    timeout = TIMEOUT_S if timeout is None else timeout
    retries = RETRIES if retries is None else retries
    if scheme in ("http", "https"):
        name = redact(text)
        req = urllib.request.Request(signed(text), headers={"Accept-Encoding": "identity",
                                                            "User-Agent": "als-datasets"})

        def body(resp) -> bytes:
            length = resp.headers.get("Content-Length")
            data = resp.read()
            if length is not None and length.isdigit() and len(data) != int(length):
                raise _Truncated(f"got {len(data)} of {length} bytes")
            return data

        data = _retrying(name, req, timeout, retries, body)
    elif scheme and scheme != "file":
        f = _FsspecFetcher(text)
        data = f.fetch(0, f.size) if f.size else b""
    else:
        local = urllib.request.url2pathname(urllib.parse.urlsplit(text).path) if scheme == "file" else text
        try:
            with open(local, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise InputError(text, "file not found") from None
        except OSError as e:
            raise InputError(text, f"cannot read: {e.strerror}") from None
    if stats is not None:
        stats.add(len(data))
    return data


# --------------------------------------------------------------------------- URL signing

#: URL prefix -> dotted name of a signing hook; mirrored in the environment so that worker
#: processes started after the recipe was read sign the same URLs
ENV_SIGNERS = "ALS_DATASETS_URL_SIGNERS"
_SIGNERS: dict[str, str] = {}


def load_callable(dotted: str):
    """The callable named ``package.module:attr`` or ``package.module.attr``."""
    import importlib

    mod_name, sep, attr = dotted.partition(":")
    if not sep:
        mod_name, _, attr = dotted.rpartition(".")
    if not mod_name or not attr:
        raise InputError(None, f"signing hook {dotted!r} is not a dotted name such as 'package.module:function'")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise InputError(None, f"signing hook {dotted!r}: cannot import {mod_name} ({e.name or e})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InputError(None, f"signing hook {dotted!r}: {mod_name} has no {attr}")
    if not callable(obj):
        raise InputError(None, f"signing hook {dotted!r} is not callable")
    return obj


def register_signer(prefix: str, hook: str) -> None:
    """Sign every URL starting with ``prefix`` with ``hook`` (a dotted callable: href -> signed
    href) when it is fetched.  URLs are named, stored and printed unsigned; only the request
    carries the token."""
    import json

    load_callable(hook)  # fail now, at recipe time, on a hook that does not import
    _SIGNERS[prefix] = hook
    os.environ[ENV_SIGNERS] = json.dumps(_signers())


def _signers() -> dict[str, str]:
    import json

    out = {}
    try:
        out.update(json.loads(os.environ.get(ENV_SIGNERS) or "{}"))
    except ValueError:
        pass
    out.update(_SIGNERS)
    return out


def signed(url: str) -> str:
    """``url`` signed by the hook registered for its longest matching prefix (else unchanged)."""
    if not is_remote(url):
        return url
    signers = _signers()
    if not signers:
        return url
    match = max((p for p in signers if url.startswith(p)), key=len, default=None)
    if match is None:
        return url
    return apply_signer(signers[match], url)


def apply_signer(hook: str, url: str) -> str:
    """``url`` through the signing hook named ``hook`` (``pkg.mod:func``); one-line errors that
    name the URL without its token when the hook fails or returns something that is not a URL."""
    try:
        out = load_callable(hook)(url)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the hook is the user's code
        raise InputError(redact(url), f"signing hook {hook} failed ({type(e).__name__})") from None
    if not isinstance(out, str) or not out:
        raise InputError(redact(url), f"signing hook {hook} returned {type(out).__name__}, not a URL")
    return out
