"""Deterministic, atomic, streaming shard writers (WebDataset tar and Parquet).

Every writer writes into a temp file next to the target (``.<name>.tmp-<pid>-<random>``),
fsyncs it, renames it into place and fsyncs the folder, then returns the manifest entry
``{"path", "samples", "bytes", "sha256"}``.  Samples are consumed one at a time (tar) or one
row group at a time (Parquet): memory stays flat whatever the shard size.

Byte-for-byte determinism: the same samples give the same bytes on any machine with the same
library versions (pyarrow's ``created_by`` string embeds its version, nothing time-dependent).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from als_datasets.dataset.features import KEY_RE, conform_sample, normalize_json

__all__ = [
    "TMP_RE",
    "atomic_write",
    "estimate_tar_sample_bytes",
    "is_leftover_tmp",
    "json_bytes",
    "npy_bytes",
    "sample_members",
    "sha256_file",
    "tar_shard_bytes",
    "write_tar_shard",
    "write_parquet_shard",
]

#: Temp files written by :func:`atomic_write`: ``.<name>.tmp-<pid>-<hex>``.
TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-(?P<rand>[0-9a-f]+)$")

TAR_FORMAT = tarfile.PAX_FORMAT  # USTAR-compatible headers; PAX records only for >8 GiB members
_CHUNK = 1 << 20
#: a tar member's data is written in pieces of this size (views of the arrays: no copy)
_COPY = 1 << 24
#: what a tar member costs besides its payload, at most: a 512-byte header, up to 511 bytes of padding
TAR_MEMBER_OVERHEAD = 1024
#: the header ``np.save`` writes before an array's data (format 1.0, padded to 64 bytes: 128 for (N, 3))
NPY_HEADER_BYTES = 128
#: a generous size for a sample's ``json`` member (metadata: a few hundred bytes to a few kB)
JSON_ESTIMATE_BYTES = 4096


def estimate_tar_sample_bytes(array_bytes, n_arrays: int, json_bytes: int = JSON_ESTIMATE_BYTES):
    """The bytes one sample adds to a WebDataset tar, estimated before it exists (plans cut shards
    with it): ``array_bytes`` of array data (a number or a numpy array of them) in ``n_arrays``
    ``.npy`` members, plus a ``json`` member of about ``json_bytes``, with their headers and padding."""
    return array_bytes + n_arrays * (NPY_HEADER_BYTES + TAR_MEMBER_OVERHEAD) + json_bytes + TAR_MEMBER_OVERHEAD


def is_leftover_tmp(name: str | os.PathLike) -> bool:
    """True if ``name`` (a file name or path) looks like an :func:`atomic_write` temp file."""
    return bool(TMP_RE.match(Path(name).name))


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # no directory fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], None],
                 commit: list | None = None) -> Path:
    """Call ``write_fn(f)`` on a temp file in ``path``'s folder, then atomically replace ``path``.

    On any exception the temp file is removed and ``path`` (if it existed) is left untouched.
    With ``commit`` (a list), ``path`` is not replaced yet: ``(temp, path)`` is appended and the
    temp file returned, for :func:`commit_writes` to rename once every writer of a shard has
    succeeded (a shard's tar and Parquet part are replaced together or not at all).
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
    try:
        with open(tmp, "xb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if commit is not None:
            commit.append((tmp, path))
            return tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return path


def commit_writes(pending: list, ok: bool) -> None:
    """Rename every ``(temp, path)`` of ``pending`` into place when ``ok``, else remove the temps."""
    if not ok:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    for tmp, path in pending:
        os.replace(tmp, path)
    for directory in sorted({path.parent for _, path in pending}):
        _fsync_dir(directory)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(path: str | os.PathLike, n: int) -> dict[str, Any]:
    return {"path": str(path), "samples": n, "bytes": os.path.getsize(path), "sha256": sha256_file(path)}


# --------------------------------------------------------------------------------------------
# Member encoding
# --------------------------------------------------------------------------------------------
def npy_parts(arr: np.ndarray) -> list:
    """An array's ``.npy`` file as two buffers: the header (bytes) and the data (a view of the
    array's memory, little-endian C order; copied only when the array is not already so)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":  # always little-endian, whatever the source
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.hasobject:
        raise ValueError("object arrays cannot be stored as .npy members")
    head = io.BytesIO()
    d = np.lib.format.header_data_from_array_1_0(arr)
    try:
        np.lib.format.write_array_header_1_0(head, d)
    except ValueError:  # a header over 64 KiB (huge structured dtypes): format 2.0, as np.save does
        head = io.BytesIO()
        np.lib.format.write_array_header_2_0(head, d)
    return [head.getvalue(), arr.reshape(-1).view(np.uint8).data if arr.size else b""]


def npy_bytes(arr: np.ndarray) -> bytes:
    """An array as the bytes of its ``.npy`` file (``np.save``'s, format 1.0)."""
    return b"".join(npy_parts(arr))


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, compact, numpy scalars -> python, NaN -> null, no inf."""
    return json.dumps(
        normalize_json(obj), sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
    ).encode("utf-8")


def _member_parts(name: str, value: Any) -> list:
    """A member's bytes, as a list of buffers (an array's data is not copied)."""
    ext = name.rsplit(".", 1)[-1]
    if ext == "npy":
        return npy_parts(np.asarray(value))
    if ext in ("json", "jsn"):
        return [json_bytes(value)]
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, str):
        return [value.encode("utf-8")]
    if isinstance(value, np.ndarray):
        raise ValueError(f"array field {name!r} must be named '<something>.npy'")
    raise TypeError(f"field {name!r}: cannot serialise a {type(value).__name__}")


def _sample_member_parts(sample: Mapping[str, Any]) -> Iterator[tuple[str, list]]:
    key = sample.get("__key__")
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValueError(f"bad sample key {key!r}: only [A-Za-z0-9_-] allowed (no dots, no slashes)")
    names = sorted(k for k in sample if not k.startswith("__"))
    if not names:
        raise ValueError(f"sample {key!r} has no fields")
    for name in names:
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"sample {key!r}: bad field name {name!r}")
        yield f"{key}.{name}", _member_parts(name, sample[name])


def sample_members(sample: Mapping[str, Any]) -> Iterator[tuple[str, bytes]]:
    """Yield ``("<key>.<name>", bytes)`` for one sample, names sorted."""
    for member, parts in _sample_member_parts(sample):
        yield member, b"".join(parts)


class _PartsReader:
    """A read-only file over a list of buffers, for ``TarFile.addfile``: each ``read(n)`` returns
    exactly ``n`` bytes (fewer only at the end), a view of one buffer where it lies in one."""

    def __init__(self, parts: list):
        self.parts = [memoryview(p).cast("B") for p in parts if len(p)]
        self.i = self.at = 0

    def read(self, n: int):
        out = []
        while n > 0 and self.i < len(self.parts):
            p = self.parts[self.i]
            take = p[self.at:self.at + n]
            self.at += len(take)
            n -= len(take)
            if self.at == len(p):
                self.i, self.at = self.i + 1, 0
            out.append(take)
        return out[0] if len(out) == 1 else b"".join(out)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def _write_tar(f: BinaryIO, samples: Iterable[Mapping[str, Any]], features=None) -> int:
    n = 0
    seen: set[str] = set()
    with tarfile.open(fileobj=f, mode="w", format=TAR_FORMAT, encoding="utf-8", copybufsize=_COPY) as tar:
        for sample in samples:
            if features is not None:
                sample = conform_sample(sample, features)
            key = sample.get("__key__")
            if key in seen:
                raise ValueError(f"duplicate sample key {key!r} in one shard")
            for member, parts in _sample_member_parts(sample):
                tar.addfile(_tarinfo(member, sum(len(memoryview(p).cast("B")) for p in parts)), _PartsReader(parts))
            seen.add(key)
            n += 1
    return n


def tar_shard_bytes(samples: Iterable[Mapping[str, Any]], features=None) -> bytes:
    """The tar shard as bytes (in memory: for tests and small shards)."""
    buf = io.BytesIO()
    _write_tar(buf, samples, features)
    return buf.getvalue()


def write_tar_shard(path: str | os.PathLike, samples: Iterable[Mapping[str, Any]], features=None,
                    commit: list | None = None) -> dict:
    """Write a deterministic WebDataset tar atomically; members ``<key>.<name>`` in sample order,
    names sorted within a sample.  ``features`` (optional) validates every sample and casts
    its arrays to the declared dtypes first (recommended: tar and Parquet then hold the same)."""
    count = [0]

    def write(f: BinaryIO) -> None:
        count[0] = _write_tar(f, samples, features)

    written = atomic_write(path, write, commit)
    return {**_entry(written, count[0]), "path": str(path)}


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------
def write_parquet_shard(
    path: str | os.PathLike,
    samples: Iterable[Mapping[str, Any]],
    features,
    row_group_size: int = 8,
    commit: list | None = None,
) -> dict:
    """Write the samples as Parquet rows (columns named like the webdataset fields), schema =
    ``features.arrow_schema`` (with the ``huggingface`` features metadata), zstd, one row group
    per ``row_group_size`` samples, streaming.  Deterministic bytes."""
    import pyarrow.parquet as pq

    from als_datasets.dataset.features import to_arrow_table

    if row_group_size < 1:
        raise ValueError("row_group_size must be >= 1")
    schema = features.arrow_schema
    count = [0]

    def write(f: BinaryIO) -> None:
        seen: set[str] = set()
        writer = pq.ParquetWriter(
            f,
            schema,
            compression="zstd",
            compression_level=1,
            version="2.6",
            data_page_version="1.0",
            use_dictionary=False,  # dictionaries on float/int point arrays cost 10x the time and grow files
            write_statistics=False,
            store_schema=True,
        )
        try:
            batch: list[Mapping[str, Any]] = []

            def flush() -> None:
                table = to_arrow_table(batch, features)
                writer.write_table(table, row_group_size=len(batch))
                batch.clear()

            for sample in samples:
                key = sample.get("__key__")
                if key in seen:
                    raise ValueError(f"duplicate sample key {key!r} in one shard")
                seen.add(key)
                batch.append(sample)
                count[0] += 1
                if len(batch) >= row_group_size:
                    flush()
            if batch:
                flush()
        finally:
            writer.close()

    written = atomic_write(path, write, commit)
    return {**_entry(written, count[0]), "path": str(path), "arrow_bytes": arrow_bytes(written)}


def arrow_bytes(path: str | os.PathLike) -> int:
    """Bytes of the Arrow data ``datasets`` generates from this Parquet file (its ``num_bytes``):
    the ``nbytes`` of the file read back, one row group at a time (memory: one row group)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        return sum(pf.read_row_group(i).nbytes for i in range(pf.num_row_groups))
