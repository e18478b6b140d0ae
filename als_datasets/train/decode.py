"""Reading and safe decoding of one WebDataset shard of a build (DESIGN.md §9), for :mod:`.loader`.

**Safe decoding**: members are grouped by key (the member name up to the first dot of its base
name); ``.npy`` → :func:`decode_npy`, which reads the header itself (or with numpy's header
readers), refuses object dtypes exactly as ``allow_pickle=False`` does (and ``.npz`` archives),
and builds the array on the member's buffer without a copy (:func:`numpy.lib.format.read_array`
for anything unusual); ``.json`` → :func:`json.loads`.  Any other member (pickle, torch,
``.cls``…) is refused with an :class:`~als_datasets.errors.InputError` naming the shard, and so
is a truncated or corrupt tar.

**Throughput**: each member is read once, with ``os.preadv``, into the buffer its array will
live in; plain ustar headers are parsed directly (tarfile takes over at the first unusual one).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from .info import DatasetInfo

__all__ = ["iter_samples", "iter_shard", "iter_raw", "decode_sample", "decode_npy"]

DECODED_EXTS = ("npy", "json")
_PREADV = hasattr(os, "preadv")


# --------------------------------------------------------------------------------------------
# Reading and decoding one shard
# --------------------------------------------------------------------------------------------
def _split_name(shard: str, name: str) -> tuple[str, str]:
    """``dir/key.field.ext`` → (``dir/key``, ``field.ext``); refuses names with no extension."""
    d, _, base = name.rpartition("/")
    key, dot, field = base.partition(".")
    if not dot or not key or not field:
        raise InputError(shard, f"member {name}: no extension (only .npy and .json are decoded)")
    return (f"{d}/{key}" if d else key), field


def _check_ext(shard: str, name: str, field: str) -> None:
    ext = field.rsplit(".", 1)[-1].lower()
    if ext not in DECODED_EXTS:
        raise InputError(shard, f"member {name}: .{ext} members are refused (only .npy and .json are decoded)")


# A tar header block the way Python's tarfile (PAX and USTAR formats) and GNU tar in POSIX mode
# write one for a regular file: POSIX "ustar\0" + "00" magic, octal numbers (digits, then spaces or
# NULs), a correct unsigned checksum.  These are parsed here directly, about 3× faster than tarfile;
# a block that is anything else (pax or GNU long-name records, links, directories, base-256
# numbers, a bad checksum, the end of a truncated file) hands the rest of the shard to tarfile,
# from that block on — so what is accepted here is a strict subset of what tarfile accepts, with
# the same name and size.
_OCTAL = re.compile(rb"[0-7]*[ \0]*")
_NUMERIC = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156), (329, 337), (337, 345))
_ZERO_BLOCK = bytes(512)


def _ustar_file(hdr: bytes) -> tuple[str, int] | None:
    """(name, size) of a plain regular-file ustar header, or None (then tarfile decides)."""
    if len(hdr) != 512 or hdr[156:157] not in (b"0", b"\0") or hdr[257:265] != b"ustar\x0000":
        return None
    for a, b in _NUMERIC:
        if _OCTAL.fullmatch(hdr, a, b) is None:
            return None
    if int(hdr[148:156].rstrip(b" \0") or b"0", 8) != 256 + sum(hdr[:148]) + sum(hdr[156:]):
        return None
    name = hdr[:100].partition(b"\0")[0]
    if not name or name.endswith(b"/"):
        return None
    prefix = hdr[345:500].partition(b"\0")[0]
    if prefix:
        name = prefix + b"/" + name
    return name.decode(tarfile.ENCODING, "surrogateescape"), int(hdr[124:136].rstrip(b" \0") or b"0", 8)


def _members(f) -> Iterator[tuple[str, str, int, object]]:
    """``(name, kind, size, where)`` of every member of an open tar file, in stored order.

    ``kind`` is ``"file"``, ``"dir"`` or ``"other"``; ``where`` is the data offset (an int) for a
    plain tar, or a zero-argument callable returning a file object (compressed tars, sparse files).
    """
    fd, pos = f.fileno(), 0
    if _PREADV:
        while True:
            hdr = os.pread(fd, 512, pos)
            if hdr == _ZERO_BLOCK:
                return  # end-of-archive block (tarfile stops there too)
            parsed = _ustar_file(hdr)
            if parsed is None:
                break
            yield parsed[0], "file", parsed[1], pos + 512
            pos += 512 + -(-parsed[1] // 512) * 512
        if pos and not os.pread(fd, 1, pos - 1):  # what tarfile checks before each header
            raise tarfile.ReadError("unexpected end of data")
    f.seek(pos)
    with tarfile.open(fileobj=f, mode="r:" if pos else "r:*") as tar:
        plain = _PREADV and tar.fileobj is f
        for m in tar:
            kind = "dir" if m.isdir() else "file" if m.isfile() else "other"
            if plain and not m.issparse():
                yield m.name, kind, m.size, m.offset_data
            else:
                yield m.name, kind, m.size, functools.partial(tar.extractfile, m)


def _read_member(shard: str, fd: int, name: str, size: int, where) -> bytearray:
    """A member's data in a fresh writable buffer, filled once straight from the file.

    For a plain (uncompressed) tar the bytes go from the page cache into the buffer with
    ``os.preadv`` (no intermediate ``bytes``); compressed tars and sparse members go through
    :meth:`tarfile.TarFile.extractfile`.
    """
    buf = bytearray(size)
    if isinstance(where, int):
        view, got = memoryview(buf), 0
        while got < size:
            n = os.preadv(fd, [view[got:]], where + got)
            if n <= 0:
                break
            got += n
    else:
        got = where().readinto(buf)
    if got != size:
        raise InputError(shard, f"member {name}: truncated ({got} of {size} bytes)")
    return buf


def iter_raw(shard: str | Path) -> Iterator[tuple[str, dict[str, bytearray]]]:
    """``(key, {field: data})`` per sample of one tar, in stored order, without decoding.

    Each member's data is a fresh, writable :class:`bytearray` read once from the file;
    :func:`decode_sample` builds the ``.npy`` arrays on top of it without copying.  Every member's
    extension is checked here, so a forbidden member is refused even when the sample it belongs
    to is skipped.  Directories are ignored; links and devices are refused.
    """
    shard = str(shard)
    key, fields = None, {}
    try:
        # unbuffered: only 512-byte headers are read through the file object; the data goes
        # straight into its own buffer (a buffered file would copy it into its read-ahead too)
        with open(shard, "rb", buffering=0) as f:
            fd = f.fileno()
            for name, kind, size, where in _members(f):
                if kind == "dir":
                    continue
                if kind != "file":
                    raise InputError(shard, f"member {name}: not a regular file (links are refused)")
                k, field = _split_name(shard, name)
                _check_ext(shard, name, field)
                data = _read_member(shard, fd, name, size, where)
                if k != key:
                    if key is not None:
                        yield key, fields
                    key, fields = k, {}
                if field in fields:
                    raise InputError(shard, f"member {name}: appears twice in sample {k}")
                fields[field] = data
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(shard, "shard missing") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise InputError(shard, f"not a readable tar ({exc or 'truncated'})") from None
    if key is not None:
        yield key, fields


# A header exactly as numpy's ``write_array`` writes it for a plain (non-structured) dtype:
# "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" + spaces + "\n".  Anything else
# (structured dtypes, Python-2 headers, odd spacing) is parsed by numpy's own helpers.
_INT = rb"(?:0|[1-9][0-9]*)"
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[A-Za-z][0-9]*(?:\[[0-9]*[A-Za-z]+\])?)', 'fortran_order': (True|False), "
    rb"'shape': \((|" + _INT + rb",|(?:" + _INT + rb", )+" + _INT + rb")\), \} *\n")
_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10000  # numpy's max_header_size for untrusted files


def _npy_header(mv: memoryview) -> tuple[int, tuple, bool, np.dtype] | None:
    """(data offset, shape, fortran_order, dtype) of an ``.npy`` buffer, or None when it needs
    :func:`numpy.lib.format.read_array` itself (version 3.0 headers, bad magic, anything odd)."""
    if len(mv) < 10 or mv[:6] != _NPY_MAGIC:
        return None
    major, minor = mv[6], mv[7]
    if (major, minor) == (1, 0):
        start, hlen = 10, int.from_bytes(mv[8:10], "little")
    elif (major, minor) in ((2, 0), (3, 0)) and len(mv) >= 12:
        start, hlen = 12, int.from_bytes(mv[8:12], "little")
    else:
        return None
    if hlen > _MAX_HEADER or len(mv) < start + hlen:
        return None
    header = bytes(mv[start:start + hlen])
    m = _NPY_HEADER.fullmatch(header)
    if m is not None:
        try:
            dtype = np.dtype(m.group(1).decode("ascii"))
        except TypeError:
            return None
        shape = tuple(int(x) for x in m.group(3).replace(b",", b" ").split())
        return start + hlen, shape, m.group(2) == b"True", dtype
    if (major, minor) == (3, 0):
        return None
    # not the canonical layout: numpy's public header readers (ast.literal_eval, key checks)
    fp = io.BytesIO(bytes(mv[:start + hlen]))
    version = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fp, max_header_size=_MAX_HEADER)
    return start + hlen, shape, fortran, dtype


def decode_npy(data) -> np.ndarray:
    """An ``.npy`` member as an array, refusing object dtypes like ``allow_pickle=False``.

    The array is built on ``data`` itself (``np.frombuffer``, no copy) when ``data`` is a
    writable buffer (the :class:`bytearray` of :func:`iter_raw`) and the data is aligned;
    otherwise it is copied once.  The result is always writable.  Same values, dtype, shape and
    memory order as :func:`numpy.lib.format.read_array` with ``allow_pickle=False``, which
    is used for whatever this does not handle (version 3.0 headers, zero-size dtypes, bad
    magic).  Raises :class:`ValueError` on object dtypes, bad headers and short data.
    """
    mv = memoryview(data).cast("B")
    head = _npy_header(mv)
    if head is None:
        arr = np.lib.format.read_array(io.BytesIO(mv), allow_pickle=False)
        return arr if arr.flags.writeable else arr.copy()
    offset, shape, fortran, dtype = head
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if dtype.itemsize == 0:
        return np.lib.format.read_array(io.BytesIO(mv), allow_pickle=False)
    count = math.prod(shape)  # 1 for a 0-d array; Python ints, no overflow
    nbytes, have = count * dtype.itemsize, len(mv) - offset
    if have < nbytes:
        raise ValueError(f"EOF: reading array data, expected {nbytes} bytes got {have}")
    arr = np.frombuffer(mv, dtype=dtype, count=count, offset=offset)
    if not (arr.flags.writeable and arr.flags.aligned):
        arr = arr.copy()
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def decode_sample(shard: str, key: str, fields: dict) -> dict:
    """Decode one raw sample: ``{"__key__": key, "json": dict, "<field>.npy": ndarray, ...}``.

    ``.npy`` arrays share the memory of the raw buffers (see :func:`decode_npy`)."""
    out: dict = {"__key__": key}
    for field, data in fields.items():
        name = f"{key}.{field}"
        _check_ext(shard, name, field)
        try:
            if field.lower().endswith(".json") or field.lower() == "json":
                out[field] = json.loads(data)
            else:
                out[field] = decode_npy(data)
        except (ValueError, OSError, EOFError) as exc:  # object arrays, bad magic, bad JSON
            raise InputError(shard, f"member {name}: cannot decode ({exc})") from None
    return out


def iter_shard(shard: str | Path) -> Iterator[dict]:
    """Decoded samples of one tar, in stored order."""
    for key, fields in iter_raw(shard):
        yield decode_sample(str(shard), key, fields)


def iter_samples(info: DatasetInfo, split: str = "train") -> Iterator[dict]:
    """Every sample of ``split``, decoded, in ``_info.json`` order (for the probe and for checks)."""
    for shard in info.shard_paths(split):
        yield from iter_shard(shard)
