"""Archive indexes: the GeoJSON that lists an archive's datasets (name, boundary, size, URL).

The USGS 3DEP point-cloud archive on AWS (``usgs-lidar-public``, one Entwine Point Tile dataset
per project) is listed by a "resources" GeoJSON (github.com/hobuinc/usgs-lidar,
``boundaries/resources.geojson``): one feature per project with properties ``name``, ``url``
(its ``ept.json``) and ``count`` (points), and the project's boundary as geometry (lon/lat).
Any archive listed the same way reads the same: this module knows the index format, not what
the datasets hold.

* :func:`read_index` — an index file or URL (fetched whole, with retries) → :class:`IndexEntry`
  records, sorted by name;
* :func:`select` — by names (or ``"all"``) and a lon/lat box; an unknown name is an error that
  suggests close ones;
* :func:`format_table` — the plain table ``als-datasets projects`` prints.

Geometries are EPSG:4326; an index whose GeoJSON declares ``EPSG:3857`` (or whose coordinates
are plainly Web Mercator metres) is reprojected.  Areas are geodesic (km², WGS84 ellipsoid).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from als_datasets.errors import InputError
from als_datasets.remote import read_whole, redact

__all__ = ["IndexEntry", "read_index", "select", "format_table", "year_of", "area_km2"]

_YEAR = re.compile(r"(?<![0-9])(19[89][0-9]|20[0-9][0-9])(?![0-9])")


@dataclass(frozen=True)
class IndexEntry:
    """One dataset of an archive index (geometry: GeoJSON dict in EPSG:4326)."""

    name: str
    geometry: dict
    points: int | None
    url: str | None
    year: int | None
    area_km2: float

    def shape(self):
        from shapely.geometry import shape

        return shape(self.geometry)

    def to_json(self) -> dict:
        return {"name": self.name, "points": self.points, "area_km2": round(self.area_km2, 3), "year": self.year,
                "url": redact(self.url) if self.url else None, "bounds": list(self.shape().bounds)}


def year_of(name: str) -> int | None:
    """The first plausible year (1980-2099) in a project name (3DEP: ``..._2015_LAS_2017`` → 2015,
    the acquisition; the second year is the delivery)."""
    m = _YEAR.search(name.replace("_", " "))
    return int(m.group(1)) if m else None


def area_km2(geom) -> float:
    """Geodesic area of a lon/lat geometry, km²."""
    from pyproj import Geod

    return abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]) / 1e6


def _is_web_mercator(doc: dict, geoms) -> bool:
    crs = json.dumps(doc.get("crs") or {})
    if "3857" in crs or "900913" in crs:
        return True
    for g in geoms:
        minx, miny, maxx, maxy = g.bounds
        if max(abs(minx), abs(maxx)) > 180 or max(abs(miny), abs(maxy)) > 90:
            return True
    return False


def parse_index(data: bytes, name: str, base_url: str | None = None) -> list[IndexEntry]:
    """Entries of an index document (a GeoJSON FeatureCollection); ``name`` for messages."""
    from shapely import make_valid
    from shapely.geometry import mapping, shape

    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(name, f"archive index is not JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise InputError(name, "archive index is not a GeoJSON FeatureCollection (no 'features' list)")
    rows = []
    for i, f in enumerate(feats):
        props = (f or {}).get("properties") or {}
        pname = props.get("name")
        if not pname or not (f.get("geometry")):
            raise InputError(name, f"archive index feature {i} has no name or no geometry")
        try:
            geom = make_valid(shape(f["geometry"]))
        except Exception as e:  # noqa: BLE001 - shapely raises several types for bad coordinates
            raise InputError(name, f"archive index feature {pname!r}: bad geometry ({type(e).__name__})") from None
        count = props.get("count", props.get("points"))
        url = props.get("url")
        if url and base_url and "://" not in str(url) and not str(url).startswith("/"):
            url = base_url.rsplit("/", 1)[0] + "/" + str(url)
        rows.append((str(pname), geom, int(count) if isinstance(count, (int, float)) else None,
                     str(url) if url else None))
    if rows and _is_web_mercator(doc, [g for _, g, _, _ in rows]):
        from pyproj import Transformer
        from shapely.ops import transform

        tr = Transformer.from_crs(3857, 4326, always_xy=True)
        rows = [(n, transform(tr.transform, g), c, u) for n, g, c, u in rows]
    seen, out = set(), []
    for pname, geom, count, url in rows:
        if pname in seen:
            raise InputError(name, f"archive index lists {pname!r} twice")
        seen.add(pname)
        out.append(IndexEntry(pname, mapping(geom), count, url, year_of(pname), area_km2(geom)))
    out.sort(key=lambda e: e.name)
    return out


@lru_cache(maxsize=4)
def read_index(src: str) -> tuple[IndexEntry, ...]:
    """An archive index from a file or URL (cached per process: each project's frame asks)."""
    name = redact(src)
    data = read_whole(src)
    base = src if "://" in src else None
    return tuple(parse_index(data, name, base))


def select(entries: Sequence[IndexEntry], names: Sequence[str] | str | None = "all",
           bbox: Sequence[float] | None = None, where: str | None = None) -> list[IndexEntry]:
    """Entries named in ``names`` (``"all"``/None: every one) that intersect ``bbox``
    (``[west, south, east, north]`` in degrees), in name order."""
    from shapely.geometry import box

    by_name = {e.name: e for e in entries}
    if names is None or names == "all":
        chosen = list(entries)
    else:
        if isinstance(names, str):
            names = [names]
        missing = [n for n in names if n not in by_name]
        if missing:
            close = difflib.get_close_matches(missing[0], list(by_name), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InputError(where, f"project {missing[0]!r} is not in the archive index{hint}")
        chosen = [by_name[n] for n in sorted(set(names))]
    if bbox is not None:
        if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise InputError(where, f"bbox must be [west, south, east, north] in degrees, got {list(bbox)!r}")
        q = box(*bbox)
        chosen = [e for e in chosen if e.shape().intersects(q)]
    return chosen


def format_table(entries: Sequence[IndexEntry]) -> str:
    """A plain text table: name, points, area km², year."""
    rows = [("name", "points", "area_km2", "year")]
    for e in entries:
        rows.append((e.name, f"{e.points:,}" if e.points is not None else "-", f"{e.area_km2:,.1f}",
                     str(e.year) if e.year else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)]).rstrip())
    total = sum(e.points or 0 for e in entries)
    lines.append(f"{len(entries)} project(s), {total:,} points, {sum(e.area_km2 for e in entries):,.1f} km²")
    return "\n".join(lines)
