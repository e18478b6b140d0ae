"""COPC bounds queries: the points of a COPC file (local or remote) inside a list of boxes.

Only the header, the hierarchy pages and the chunks of the octree nodes that overlap a box are
fetched (ranged reads of :mod:`.remote`), each node once; the points come out as the same chunk
dicts that :func:`als_datasets.kinds.als.sources.pointcloud.iter_point_chunks` yields, in file
order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.attributes import read_attributes
from als_datasets.kinds.als.sources.pointcloud import _check_inside_header, _short
from als_datasets.kinds.als.sources.remote import HTTP_THREADS, FetchStats, RangeFile, open_source, redact

__all__ = ["copc_nodes", "iter_copc_boxes"]


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
                    threads: int = HTTP_THREADS, attributes: tuple = ()) -> Iterator[dict[str, np.ndarray]]:
    """The points of COPC file ``info.path`` (local path or URL) inside any of ``boxes``.

    ``boxes`` are (minx, miny, maxx, maxy) in the file's horizontal CRS and units (edges
    included).  Only the header, the hierarchy pages and the chunks of the octree nodes that
    overlap a box are fetched; each node once, even where boxes overlap, so that no point
    comes out twice.  Points come in file order (the order a full read gives), as chunk dicts
    of at most about ``chunk_size`` points (a node is never split): ``x``, ``y`` float64 in
    native units, ``z`` float64 metres (``info.z_to_m``), ``intensity`` uint16,
    ``return_number``, ``number_of_returns``, ``classification`` uint8, and the recipe's
    ``attributes`` (:mod:`.attributes`).  ``stats`` receives the bytes and requests fetched.
    """
    import laspy

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
                **read_attributes(pts, attributes, name, keep),
            }
            _check_inside_header(info, chunk)
            yield chunk
    finally:
        src.close()
