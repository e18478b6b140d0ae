"""EPT (Entwine Point Tiles) bounds queries, for local folders and URLs.

An EPT dataset (https://entwine.io, "Entwine Point Tile", the layout of the USGS 3DEP public
archive) is a folder::

    ept.json                      bounds (the octree cube), boundsConforming (the data), points,
                                  schema, srs, dataType, hierarchyType, span
    ept-hierarchy/D-X-Y-Z.json    {"D-X-Y-Z": point count, ...}; -1: that node's counts (and its
                                  subtree's) are in its own file ept-hierarchy/D-X-Y-Z.json
    ept-data/D-X-Y-Z.laz          one LAZ file per octree node (dataType "laszip")

A node ``D-X-Y-Z`` is the cube of side ``(max - min) / 2**D`` at ``min + (X, Y, Z) * side``.
A query reads ``ept.json``, walks the hierarchy from the root keeping the nodes whose x/y square
overlaps a query box (a ``-1`` entry's page is fetched only when its node overlaps one), then
fetches those nodes' LAZ files (concurrently, at most ``threads`` at a time, one batch ahead of
the consumer), decodes them with laspy and crops their points exactly to the boxes.  Nodes come
in a fixed order (depth, then X, Y, Z) and a node's points in their file order, so the points of
any one box come out in the same order whichever other boxes are asked for with it.

Every problem is a one-line :class:`InputError` naming the file or URL (token redacted) and, for
a node or a hierarchy page, the node: an unsupported ``dataType`` (``binary``, ``zstandard``), a
node the hierarchy lists but the server does not have, a node that does not decode, a node
holding another number of points than the hierarchy says.  Network faults are retried by
:func:`als_datasets.remote.read_whole` first.

This module knows the format only; :mod:`.pointcloud` turns ``srs`` into a CRS and units.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.attributes import read_attributes
from als_datasets.remote import HTTP_THREADS, FetchStats, is_remote, read_whole, redact

__all__ = ["EptMeta", "is_ept", "ept_path", "dataset_name", "read_ept_meta", "node_bounds", "query_nodes",
           "iter_ept_points", "key_name"]

Key = tuple[int, int, int, int]
ROOT: Key = (0, 0, 0, 0)
#: the data types the reader decodes (Entwine also writes "binary" and "zstandard")
DATA_TYPES = ("laszip",)
FIELDS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification")


def is_ept(path) -> bool:
    """True for an Entwine Point Tiles dataset named by its ``ept.json`` (a path or a URL)."""
    return redact(os.fspath(path) if not isinstance(path, str) else path).rstrip("/").rsplit("/", 1)[-1].lower() \
        == "ept.json"


def ept_path(path) -> str | None:
    """``path`` if it names an ``ept.json``; ``path/ept.json`` for a local EPT folder; else None."""
    text = os.fspath(path) if not isinstance(path, str) else path
    if is_ept(text):
        return text
    if not is_remote(text) and os.path.isdir(text) and os.path.isfile(os.path.join(text, "ept.json")):
        return os.path.join(text, "ept.json")
    return None


def dataset_name(path) -> str:
    """The folder holding ``ept.json`` (in the 3DEP archive: the project's name)."""
    parts = redact(os.fspath(path) if not isinstance(path, str) else path).replace(os.sep, "/").rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] else parts[-1]


def _sibling(path: str, rel: str) -> str:
    """``rel`` (e.g. ``ept-data/0-0-0-0.laz``) next to ``ept.json``; a URL keeps its query string
    (a token valid for the whole folder, as an Azure SAS token is)."""
    if is_remote(path):
        u = urllib.parse.urlsplit(path)
        return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path.rsplit("/", 1)[0] + "/" + rel, u.query, ""))
    return os.path.join(os.path.dirname(path), *rel.split("/"))


def key_name(key: Key) -> str:
    return "-".join(str(v) for v in key)


def _parse_key(text: str, where: str) -> Key:
    try:
        d, x, y, z = (int(v) for v in text.split("-"))
    except ValueError:
        raise InputError(where, f"bad EPT hierarchy key {text!r} (expected D-X-Y-Z)") from None
    if d < 0 or min(x, y, z) < 0 or max(x, y, z) >= 2 ** d:
        raise InputError(where, f"bad EPT hierarchy key {text!r}: outside the octree")
    return d, x, y, z


# --------------------------------------------------------------------------- ept.json


@dataclass(frozen=True)
class EptMeta:
    """What ``ept.json`` says (``path`` as given: a URL keeps its query string)."""

    path: str
    bounds: tuple[float, ...]  # the octree cube: minx, miny, minz, maxx, maxy, maxz
    conforming: tuple[float, ...]  # the data's bounds, same order
    points: int
    data_type: str
    hierarchy_type: str
    span: int
    schema: tuple[tuple[str, float | None, float | None], ...]  # (name, scale, offset)
    srs: dict
    digest: str  # sha256 of ept.json's bytes: which version of the dataset was read

    @property
    def name(self) -> str:
        return redact(self.path)


def _floats(v, n: int, what: str, where: str) -> tuple[float, ...]:
    try:
        out = tuple(float(a) for a in v)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not all(np.isfinite(out)):
        raise InputError(where, f"ept.json {what} must be {n} finite numbers, got {v!r}")
    return out


def read_ept_meta(path, stats: FetchStats | None = None) -> EptMeta:
    """Read and check ``ept.json`` (local or remote): a one-line :class:`InputError` naming it
    for a missing file, bad JSON, missing keys or a data type the reader does not decode."""
    text = os.fspath(path) if not isinstance(path, str) else path
    where = redact(text)
    raw = read_whole(text, stats)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(where, f"not a valid ept.json (JSON: {' '.join(str(e).split())[:120]})") from None
    if not isinstance(doc, dict):
        raise InputError(where, "not a valid ept.json (not a JSON object)")
    missing = [k for k in ("bounds", "points", "schema", "dataType") if k not in doc]
    if missing:
        raise InputError(where, f"not a valid ept.json: no {', '.join(missing)}")
    bounds = _floats(doc["bounds"], 6, "bounds", where)
    conforming = _floats(doc.get("boundsConforming", doc["bounds"]), 6, "boundsConforming", where)
    if not (bounds[0] < bounds[3] and bounds[1] < bounds[4]):
        raise InputError(where, f"ept.json bounds are empty: {list(bounds)}")
    data_type = str(doc["dataType"])
    if data_type not in DATA_TYPES:
        raise InputError(where, f"EPT dataType {data_type!r} is not supported (only {', '.join(DATA_TYPES)}: LAZ "
                         "nodes); the USGS 3DEP archive is laszip")
    hierarchy_type = str(doc.get("hierarchyType", "json"))
    if hierarchy_type != "json":
        raise InputError(where, f"EPT hierarchyType {hierarchy_type!r} is not supported (only 'json')")
    try:
        points = int(doc["points"])
        schema = tuple((str(d["name"]), d.get("scale"), d.get("offset")) for d in doc["schema"])
    except (TypeError, ValueError, KeyError):
        raise InputError(where, "not a valid ept.json: bad points or schema") from None
    names = {s[0] for s in schema}
    if not {"X", "Y", "Z"} <= names:
        raise InputError(where, "ept.json schema has no X, Y and Z dimensions")
    srs = doc.get("srs") or {}
    if not isinstance(srs, dict):
        raise InputError(where, f"ept.json srs must be an object, got {srs!r}")
    return EptMeta(path=text, bounds=bounds, conforming=conforming, points=points, data_type=data_type,
                   hierarchy_type=hierarchy_type, span=int(doc.get("span", 0) or 0), schema=schema, srs=srs,
                   digest=hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- hierarchy


def node_bounds(meta: EptMeta, key: Key) -> tuple[float, float, float, float]:
    """The x/y square of node ``key``: minx, miny, maxx, maxy."""
    d, x, y, _ = key
    b = meta.bounds
    sx, sy = (b[3] - b[0]) / 2 ** d, (b[4] - b[1]) / 2 ** d
    return b[0] + x * sx, b[1] + y * sy, b[0] + (x + 1) * sx, b[1] + (y + 1) * sy


def _overlaps(nb, boxes, tol: float) -> bool:
    if boxes is None:
        return True
    return any(not (bx1 < nb[0] - tol or bx0 > nb[2] + tol or by1 < nb[1] - tol or by0 > nb[3] + tol)
               for bx0, by0, bx1, by1 in boxes)


def _children(key: Key) -> list[Key]:
    d, x, y, z = key
    return [(d + 1, 2 * x + i, 2 * y + j, 2 * z + k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def _pool_map(fn, items: list, threads: int) -> list:
    if len(items) > 1 and threads > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
            return list(pool.map(fn, items))
    return [fn(i) for i in items]


def _read_page(meta: EptMeta, key: Key, stats: FetchStats | None) -> dict[Key, int]:
    url = _sibling(meta.path, f"ept-hierarchy/{key_name(key)}.json")
    where = redact(url)
    try:
        raw = read_whole(url, stats)
    except InputError as e:
        raise InputError(e.path, f"EPT hierarchy page of node {key_name(key)} of {meta.name}: {e.reason}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        page = {_parse_key(k, where): int(v) for k, v in doc.items()}
    except (ValueError, TypeError) as e:
        raise InputError(where, f"EPT hierarchy page of node {key_name(key)} of {meta.name} is not valid "
                         f"({' '.join(str(e).split())[:120]})") from None
    if page.get(key, -1) == -1 and key != ROOT:
        raise InputError(where, f"EPT hierarchy page of node {key_name(key)} of {meta.name} does not give "
                         "that node's point count")
    return page


def query_nodes(meta: EptMeta, boxes: Sequence | None, stats: FetchStats | None = None,
                threads: int = HTTP_THREADS) -> list[tuple[Key, int]]:
    """``(key, point count)`` of the nodes holding points whose x/y square overlaps any of
    ``boxes`` (every node for ``None``), in (depth, X, Y, Z) order.

    The hierarchy is walked level by level from the root page; a ``-1`` node's own page is
    fetched (concurrently with the other pages of its level) only when that node overlaps a box."""
    tol = 1e-9 * max(abs(v) for v in meta.bounds)
    hier = _read_page(meta, ROOT, stats)
    found: list[tuple[Key, int]] = []
    level = [ROOT] if ROOT in hier and _overlaps(node_bounds(meta, ROOT), boxes, tol) else []
    while level:
        paged = [k for k in level if hier.get(k) == -1]
        for page in _pool_map(lambda k: _read_page(meta, k, stats), paged, threads):
            hier.update(page)
        nxt = []
        for key in level:
            n = hier[key]
            if n > 0:
                found.append((key, n))
            nxt.extend(c for c in _children(key) if c in hier and _overlaps(node_bounds(meta, c), boxes, tol))
        level = sorted(nxt)
    return found


# --------------------------------------------------------------------------- nodes


def _decode_node(meta: EptMeta, key: Key, count: int, boxes, stats: FetchStats | None,
                 attributes: tuple = ()) -> dict[str, np.ndarray]:
    """One node's points (inside ``boxes``, all for None), in file order; z in the data's units."""
    import laspy

    url = _sibling(meta.path, f"ept-data/{key_name(key)}.laz")
    what = f"EPT node {key_name(key)} of {meta.name}"
    try:
        data = read_whole(url, stats)
    except InputError as e:
        hint = " (listed in the hierarchy but missing)" if "not found" in e.reason else ""
        raise InputError(e.path, f"{what}{hint}: {e.reason}") from None
    try:
        las = laspy.read(io.BytesIO(data))
        x, y = np.asarray(las.x, dtype=np.float64), np.asarray(las.y, dtype=np.float64)
        out = {"x": x, "y": y, "z": np.asarray(las.z, dtype=np.float64),
               "intensity": np.asarray(las.intensity, dtype=np.uint16),
               "return_number": np.asarray(las.return_number, dtype=np.uint8),
               "number_of_returns": np.asarray(las.number_of_returns, dtype=np.uint8),
               "classification": np.asarray(las.classification, dtype=np.uint8)}
    except Exception as e:  # noqa: BLE001 - laspy / lazrs raise many types for a bad node
        text = " ".join(str(e).split()) or type(e).__name__
        raise InputError(url, f"{what}: not a readable LAZ node ({text[:160]})") from None
    out.update(read_attributes(las, attributes, f"{meta.name} (node {key_name(key)})"))
    if len(x) != count:
        raise InputError(url, f"{what}: the hierarchy lists {count:,} points but the node holds {len(x):,} "
                         "(hierarchy and data disagree)")
    if boxes is None:
        return out
    nb = node_bounds(meta, key)
    tol = 1e-9 * max(abs(v) for v in meta.bounds)  # a node holds the points of its cube, edges included
    keep = np.zeros(len(x), dtype=bool)
    for bx0, by0, bx1, by1 in boxes:
        if bx1 < nb[0] - tol or bx0 > nb[2] + tol or by1 < nb[1] - tol or by0 > nb[3] + tol:
            continue
        if bx0 <= nb[0] - tol and by0 <= nb[1] - tol and bx1 >= nb[2] + tol and by1 >= nb[3] + tol:
            keep[:] = True
            break
        keep |= (x >= bx0) & (x <= bx1) & (y >= by0) & (y <= by1)
    return {k: v[keep] for k, v in out.items()}


def _batches(nodes: list[tuple[Key, int]], chunk_size: int) -> list[list[tuple[Key, int]]]:
    out: list[list[tuple[Key, int]]] = []
    count = 0
    for node in nodes:
        if not out or count + node[1] > chunk_size:
            out.append([])
            count = 0
        out[-1].append(node)
        count += node[1]
    return out


def iter_ept_points(meta: EptMeta, boxes: Sequence | None, chunk_size: int = 1_000_000,
                    stats: FetchStats | None = None, threads: int = HTTP_THREADS,
                    attributes: tuple = ()) -> Iterator[dict[str, np.ndarray]]:
    """The points of EPT dataset ``meta`` inside any of ``boxes`` (minx, miny, maxx, maxy in its
    CRS and units, edges included; ``None``: every point), as chunk dicts of the nodes of about
    ``chunk_size`` points (a node is never split): ``x``, ``y``, ``z`` float64 as stored (z not
    converted to metres), ``intensity`` uint16, ``return_number``, ``number_of_returns``,
    ``classification`` uint8, and ``attributes`` (:mod:`.attributes`).  Only the hierarchy pages and the nodes overlapping a box are
    fetched, each once, ``threads`` at a time, one batch ahead of the consumer."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if boxes is not None:
        boxes = [tuple(float(v) for v in b) for b in boxes]
        if not boxes:
            return
    nodes = query_nodes(meta, boxes, stats, threads)
    batches = _batches(nodes, chunk_size)
    if not batches:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        def submit(batch):
            return [pool.submit(_decode_node, meta, k, n, boxes, stats, attributes) for k, n in batch]

        ahead = submit(batches[0])
        for i in range(len(batches)):
            current, ahead = ahead, (submit(batches[i + 1]) if i + 1 < len(batches) else [])
            parts = [f.result() for f in current]
            chunk = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            if len(chunk["x"]):
                yield chunk
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
