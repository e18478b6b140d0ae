"""Reading ALS point clouds (LAS/LAZ/COPC/EPT): CRS and unit detection, footprints, chunked streaming.

Real files lie about their units (see ``data/SOURCES.md``), so this module:

* prefers the WKT VLR, else parses the GeoTIFF GeoKeys itself, because laspy ignores the
  ``ProjLinearUnitsGeoKey`` (3076) override (``mvk-thin.las`` is EPSG:26995 *in US survey feet*);
* always returns the horizontal 2D projected CRS plus a factor that turns z into metres;
* checks that the header bounds reproject to a plausible lon/lat, and (``check_within``) that
  the file lands inside the project boundary, suggesting the unit fix when another linear unit
  would put it there (``simple.copc.laz`` claims metres but holds feet).

Every problem is raised as a one-line :class:`~als_datasets.errors.InputError` naming the file.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import laspy
import numpy as np
import pyproj
import shapely.geometry
from pyproj.exceptions import CRSError

from als_datasets.errors import InputError
from als_datasets.kinds.als.sources import ept
from als_datasets.kinds.als.sources.attributes import read_attributes
from als_datasets.kinds.als.sources.remote import FetchStats, is_remote, open_source, read_header, redact

__all__ = [
    "PointCloudInfo",
    "inspect_pointcloud",
    "footprint_lonlat",
    "footprint_in",
    "check_within",
    "check_distinct",
    "iter_point_chunks",
    "iter_ept_boxes",
]

# name -> (metres per unit, EPSG unit code). Names are the ones pyproj reports.
_UNITS: dict[str, tuple[float, int]] = {
    "metre": (1.0, 9001),
    "foot": (0.3048, 9002),
    "US survey foot": (1200.0 / 3937.0, 9003),
}
_UNIT_BY_EPSG = {code: name for name, (_, code) in _UNITS.items()}
_UNIT_PLURAL = {"metre": "metres", "foot": "international feet", "US survey foot": "US survey feet"}

# GeoTIFF GeoKey ids (GeoTIFF 1.0 spec)
_GT_MODEL_TYPE = 1024
_GEOGRAPHIC_TYPE = 2048
_PROJECTED_CS_TYPE = 3072
_PROJ_LINEAR_UNITS = 3076
_VERTICAL_CS_TYPE = 4096
_VERTICAL_UNITS = 4099
_USER_DEFINED = 32767


@dataclass(frozen=True)
class PointCloudInfo:
    """What the header says about a point cloud, with the CRS corrected where we can tell."""

    path: str
    crs: pyproj.CRS  # horizontal 2D projected CRS (never the compound)
    xy_unit: str  # "metre" | "foot" | "US survey foot"
    z_to_m: float  # multiply z by this to get metres
    bounds: tuple[float, float, float, float]  # header minx, miny, maxx, maxy (native units)
    point_count: int
    is_copc: bool
    crs_source: str  # "wkt" | "geotiff" | "geotiff+unit-override" | "override"
    notes: tuple[str, ...] = ()
    stamp: str = ""  # URLs: size, ETag / Last-Modified at inspection (what staged parts depend on)
    # file size, point count and format, scales, offsets, xyz bounds: equal for two names of the same data
    signature: tuple = ()
    is_ept: bool = False  # an Entwine Point Tiles dataset (``path`` is its ept.json): read by bounds


# --------------------------------------------------------------------------- unit helpers


def _unit_of(crs: pyproj.CRS, path: str, what: str = "horizontal") -> tuple[str, float]:
    """(canonical unit name, metres per unit) of the first axis of ``crs``."""
    if not crs.axis_info:
        raise InputError(path, f"{what} CRS {crs.name!r} has no axes/units")
    factor = float(crs.axis_info[0].unit_conversion_factor)
    for name, (m, _) in _UNITS.items():
        if math.isclose(factor, m, rel_tol=1e-9):
            return name, m
    raise InputError(
        path,
        f"{what} CRS {crs.name!r} uses unsupported unit {crs.axis_info[0].unit_name!r} "
        f"({factor} m); only metre, foot and US survey foot are supported",
    )


def _with_linear_unit(crs: pyproj.CRS, unit: str) -> pyproj.CRS:
    """The same projection as ``crs`` with its axes in ``unit`` (parameters keep their own units)."""
    factor, code = _UNITS[unit]
    d = crs.to_json_dict()
    target = d["source_crs"] if d.get("type") == "BoundCRS" else d
    for axis in target["coordinate_system"]["axis"]:
        axis["unit"] = {
            "type": "LinearUnit",
            "name": unit,
            "conversion_factor": factor,
            "id": {"authority": "EPSG", "code": code},
        }
    target.pop("id", None)
    target.pop("usages", None)
    target["name"] = f"{target.get('name', 'unnamed')} [axes in {unit}]"
    return pyproj.CRS.from_json_dict(d)


def _split_crs(crs: pyproj.CRS) -> tuple[pyproj.CRS, pyproj.CRS | None]:
    """(horizontal, vertical or None) parts of a possibly compound CRS."""
    if crs.is_compound:
        subs = crs.sub_crs_list
        horiz = next((c for c in subs if not c.is_vertical), subs[0])
        vert = next((c for c in subs if c.is_vertical), None)
        return horiz, vert
    return crs, None


# --------------------------------------------------------------------------- GeoTIFF keys


def _geokeys(vlr) -> dict[int, int]:
    """Short (inline) GeoKeys of a GeoKeyDirectory VLR: {key_id: value}."""
    raw = vlr.record_data_bytes() if hasattr(vlr, "record_data_bytes") else vlr.record_data
    n = len(raw) // 2
    vals = struct.unpack(f"<{n}H", bytes(raw[: 2 * n]))
    if len(vals) < 4:
        return {}
    keys: dict[int, int] = {}
    for i in range(min(vals[3], (len(vals) - 4) // 4)):
        key_id, location, count, value = vals[4 + 4 * i : 8 + 4 * i]
        if location == 0 and count == 1 and key_id != 0:
            keys[key_id] = value
    return keys


def _epsg_crs(code: int, path: str, what: str) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_epsg(code)
    except CRSError as e:
        raise InputError(path, f"GeoTIFF {what} EPSG:{code} is unknown to PROJ ({e})") from None


def _crs_from_geokeys(keys: dict[int, int], path: str):
    """(horizontal CRS, z unit name or None, crs_source, notes) from GeoKeys."""
    notes: list[str] = []
    code = keys.get(_PROJECTED_CS_TYPE)
    if code is None or code in (0, _USER_DEFINED):
        if keys.get(_GT_MODEL_TYPE) == 2 or _GEOGRAPHIC_TYPE in keys:
            raise InputError(path, "has a geographic (lon/lat) CRS in its GeoTIFF keys; ALS tiling needs "
                             "a projected CRS (set pointcloud_crs in the recipe)")
        raise InputError(path, "GeoTIFF keys define a user-defined projection that cannot be decoded; "
                         "set pointcloud_crs in the recipe")
    crs, _ = _split_crs(_epsg_crs(code, path, "ProjectedCSType"))
    source = "geotiff"
    unit_code = keys.get(_PROJ_LINEAR_UNITS)
    if unit_code is not None and unit_code not in (0, _USER_DEFINED):
        unit = _UNIT_BY_EPSG.get(unit_code)
        if unit is None:
            raise InputError(path, f"unsupported ProjLinearUnits={unit_code} in GeoTIFF keys; "
                             "set pointcloud_crs in the recipe")
        if crs.is_projected and _unit_of(crs, path)[0] != unit:
            crs = _with_linear_unit(crs, unit)
            source = "geotiff+unit-override"
            notes.append(f"ProjLinearUnits={unit_code} ({unit}) override applied to EPSG:{code}")
    z_unit = None
    vcode = keys.get(_VERTICAL_UNITS)
    if vcode is not None and vcode in _UNIT_BY_EPSG:
        z_unit = _UNIT_BY_EPSG[vcode]
    elif keys.get(_VERTICAL_CS_TYPE) not in (None, 0, _USER_DEFINED):
        try:
            vert = pyproj.CRS.from_epsg(keys[_VERTICAL_CS_TYPE])
            z_unit = _unit_of(vert, path, "vertical")[0]
        except (CRSError, InputError):
            z_unit = None
    return crs, z_unit, source, notes


# --------------------------------------------------------------------------- inspect


def _file_crs(header, path: str):
    """(horizontal CRS, z unit name or None, crs_source, notes) from the file's VLRs."""
    vlrs = list(header.vlrs) + list(getattr(header, "evlrs", None) or [])
    notes: list[str] = []
    for vlr in vlrs:
        if isinstance(vlr, laspy.vlrs.known.WktCoordinateSystemVlr):
            try:
                crs = vlr.parse_crs()
            except Exception as e:  # noqa: BLE001 - any WKT parse failure
                notes.append(f"WKT VLR could not be parsed ({type(e).__name__}); used GeoTIFF keys")
                break
            if crs is None:
                break
            horiz, vert = _split_crs(crs)
            z_unit = _unit_of(vert, path, "vertical")[0] if vert is not None else None
            return horiz, z_unit, "wkt", notes
    for vlr in vlrs:
        if isinstance(vlr, laspy.vlrs.known.GeoKeyDirectoryVlr):
            horiz, z_unit, source, more = _crs_from_geokeys(_geokeys(vlr), path)
            return horiz, z_unit, source, notes + more
    raise InputError(path, "has no CRS (no WKT or GeoTIFF keys); set pointcloud_crs in the recipe")


def _box_lonlat(crs: pyproj.CRS, bounds, densify: int = 21, dst="EPSG:4326") -> shapely.geometry.Polygon:
    minx, miny, maxx, maxy = bounds
    t = np.linspace(0.0, 1.0, densify)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full(densify, maxx),
                         maxx - (maxx - minx) * t, np.full(densify, minx)])
    ys = np.concatenate([np.full(densify, miny), miny + (maxy - miny) * t,
                         np.full(densify, maxy), maxy - (maxy - miny) * t])
    tr = pyproj.Transformer.from_crs(crs, dst, always_xy=True)
    lon, lat = tr.transform(xs, ys, errcheck=False)
    return shapely.geometry.Polygon(np.column_stack([lon, lat]))


def _plausible(poly: shapely.geometry.Polygon) -> bool:
    c = np.asarray(poly.exterior.coords)
    return bool(np.all(np.isfinite(c)) and np.all(np.abs(c[:, 0]) <= 180) and np.all(np.abs(c[:, 1]) <= 90))


def _round_trips(crs: pyproj.CRS, bounds, poly: shapely.geometry.Polygon) -> bool:
    """True if the lon/lat footprint projects back onto the header box.

    Projections far outside their domain often return finite but wrapped-around lon/lat
    (e.g. transverse Mercator at 20 000 km northing), which only the round trip exposes.
    """
    lon, lat = np.asarray(poly.exterior.coords).T
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat, errcheck=False)
    minx, miny, maxx, maxy = bounds
    tol = 1.0 + 1e-6 * max(abs(minx), abs(maxx), abs(miny), abs(maxy))
    inside = ((x >= minx - tol) & (x <= maxx + tol) & (y >= miny - tol) & (y <= maxy + tol))
    return bool(np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(inside))


def _read_header(src: str):
    """(header, stamp, size): a local file through laspy; a URL by ranged reads of the header and
    VLRs only (:mod:`als_datasets.kinds.als.sources.remote`), ``stamp`` saying which version of it was read."""
    if is_remote(src):
        remote = read_header(src)
        return remote.header, remote.stamp, remote.size
    with laspy.open(src) as reader:
        return reader.header, "", os.path.getsize(src)


def _ept_facts(src: str, path: str, want_crs: bool):
    """(point count, mins, maxs, signature, stamp, (CRS, z unit, source, notes) or None) of an
    EPT dataset from its ``ept.json``: bounds are ``boundsConforming`` (the data, not the cube)."""
    meta = ept.read_ept_meta(src)
    if meta.points <= 0:
        raise InputError(path, "EPT dataset contains no points")
    mins, maxs = meta.conforming[:3], meta.conforming[3:]
    signature = ("ept", meta.points, meta.bounds, meta.conforming, meta.schema)
    stamp = f"ept.json sha256={meta.digest}"
    if not want_crs:
        return meta.points, mins, maxs, signature, stamp, None
    srs = meta.srs
    try:
        if srs.get("wkt"):
            crs, source = pyproj.CRS(srs["wkt"]), "ept-srs-wkt"
        elif str(srs.get("authority", "")).upper() == "EPSG" and srs.get("horizontal"):
            code = f"EPSG:{srs['horizontal']}" + (f"+{srs['vertical']}" if srs.get("vertical") else "")
            crs, source = pyproj.CRS(code), "ept-srs-epsg"
        else:
            raise InputError(path, "EPT srs gives no CRS (no wkt, no EPSG horizontal code); set pointcloud_crs "
                             "in the recipe")
    except CRSError as e:
        raise InputError(path, f"EPT srs is not a CRS pyproj accepts ({_short(e)})") from None
    horiz, vert = _split_crs(crs)
    z_unit = _unit_of(vert, path, "vertical")[0] if vert is not None else None
    return meta.points, mins, maxs, signature, stamp, (horiz, z_unit, source, [])


def inspect_pointcloud(path, crs_override: str | None = None) -> PointCloudInfo:
    """Read the header and VLRs of a LAS/LAZ/COPC file (no points) and work out its CRS and units.

    ``path`` may be a URL (``http(s)://``, ``s3://`` with s3fs): only the header and VLRs are
    fetched, by HTTP range requests.  An EPT dataset (its ``ept.json``, a path or URL, or a
    local folder holding one) is described by its ``ept.json`` alone: ``srs``, ``points`` and
    ``boundsConforming`` (``is_ept``); a Web Mercator (EPSG:3857) ``srs`` is kept as the file's
    CRS: tiles are cut in the project's UTM, the points reprojected (never in 3857 "metres").

    ``crs_override`` is any string :class:`pyproj.CRS` accepts; it replaces the file's CRS
    (``crs_source="override"``) and its units are used for x/y and z (vertical part if compound).
    Raises :class:`InputError` (one line, naming the file) for unreadable, empty, CRS-less,
    geographic or implausibly located files.
    """
    src = os.fspath(path)
    src = ept.ept_path(src) or src  # a local EPT folder: its ept.json
    path = redact(src)  # messages name a URL without its query string (a signed URL's token)
    is_ept = ept.is_ept(src)
    if not is_remote(src) and not os.path.isfile(src):
        raise InputError(path, "file not found")
    if is_ept:
        point_count, mins, maxs, signature, stamp, found = _ept_facts(src, path, crs_override is None)
        is_copc = False
        if found is not None:
            horiz, z_unit, source, notes = found
    else:
        try:
            header, stamp, size = _read_header(src)
            point_count = int(header.point_count)
            mins, maxs = header.mins, header.maxs
            signature = (int(size), point_count, int(header.point_format.id),
                         *(tuple(float(v) for v in a) for a in (header.scales, header.offsets, mins, maxs)))
            is_copc = any(v.user_id == "copc" and v.record_id == 1 for v in header.vlrs)
            if point_count == 0:
                raise InputError(path, "contains no points")
            if crs_override is None:
                horiz, z_unit, source, notes = _file_crs(header, path)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - laspy raises many types for bad headers
            raise InputError(path, f"not a readable LAS/LAZ file ({_short(e)})") from None
    if crs_override is not None:
        try:
            crs = pyproj.CRS(crs_override)
        except CRSError as e:
            raise InputError(path, f"pointcloud_crs {crs_override!r} is not a CRS pyproj accepts ({_short(e)})") from None
        horiz, vert = _split_crs(crs)
        z_unit = _unit_of(vert, path, "vertical")[0] if vert is not None else None
        source, notes = "override", [f"CRS overridden with {crs_override!r}"]
    if horiz.is_geographic or not horiz.is_projected:
        kind = "geographic (lon/lat)" if horiz.is_geographic else horiz.type_name
        raise InputError(path, f"has a {kind} CRS {horiz.name!r}; ALS tiling needs a projected CRS "
                         "(set pointcloud_crs in the recipe)")
    xy_unit, _ = _unit_of(horiz, path)
    z_unit = z_unit or xy_unit
    bounds = (float(mins[0]), float(mins[1]), float(maxs[0]), float(maxs[1]))
    if not all(math.isfinite(b) for b in bounds) or bounds[0] > bounds[2] or bounds[1] > bounds[3]:
        raise InputError(path, f"header bounds are invalid: {bounds}")
    info = PointCloudInfo(path=src, crs=horiz, xy_unit=xy_unit, z_to_m=_UNITS[z_unit][0],
                          bounds=bounds, point_count=point_count, is_copc=is_copc,
                          crs_source=source, notes=tuple(notes), stamp=stamp, signature=signature, is_ept=is_ept)
    try:
        foot = footprint_lonlat(info)
        ok = _plausible(foot) and _round_trips(horiz, bounds, foot)
    except pyproj.exceptions.ProjError as e:
        raise InputError(path, f"cannot reproject {horiz.name!r} to lon/lat ({_short(e)})") from None
    if not ok:
        raise InputError(path, f"header bounds {bounds} in {horiz.name!r} do not reproject to a "
                         "plausible lon/lat; the CRS or its units are wrong (set pointcloud_crs in the recipe)")
    return info


def footprint_lonlat(info: PointCloudInfo) -> shapely.geometry.Polygon:
    """The header bounds box reprojected to EPSG:4326 (lon, lat), with densified edges."""
    return _box_lonlat(info.crs, info.bounds)


def check_distinct(infos: list[PointCloudInfo], project: str) -> None:
    """Refuse one project's data listed under two names (a copy, a link, another URL): two files
    with the same size, point count and format, scales, offsets and xyz bounds.  Different
    tiles of a delivery never agree on all of these; a copy (or a re-write with only some
    attributes changed) does, and its points would be read twice."""
    seen: dict[tuple, PointCloudInfo] = {}
    for info in infos:
        if not info.signature:
            continue
        first = seen.setdefault(info.signature, info)
        if first is not info:
            raise InputError(redact(info.path), f"project {project!r}: same data as {redact(first.path)} (same size, "
                             "point count, scales, offsets and bounds); list each file once")


def footprint_in(info: PointCloudInfo, crs) -> shapely.geometry.Polygon:
    """The header bounds box reprojected to ``crs`` (e.g. the project's UTM), with densified edges."""
    return _box_lonlat(info.crs, info.bounds, dst=crs)


# --------------------------------------------------------------------------- boundary check


def _suggest(crs: pyproj.CRS, centre: tuple[float, float]) -> str:
    """A short pyproj-acceptable string for ``crs``: an equivalent EPSG code if one exists, else PROJ."""
    try:
        code = crs.to_epsg(min_confidence=70)
        if code is not None:
            cand = pyproj.CRS.from_epsg(code)
            a = pyproj.Transformer.from_crs(crs, 4326, always_xy=True).transform(*centre)
            b = pyproj.Transformer.from_crs(cand, 4326, always_xy=True).transform(*centre)
            if (_unit_of(cand, "")[0] == _unit_of(crs, "")[0]
                    and max(abs(a[0] - b[0]), abs(a[1] - b[1])) < 1e-5):
                return f"EPSG:{code}"
    except (CRSError, InputError):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "may lose information": fine for a hint
        return crs.to_proj4()


def check_within(info: PointCloudInfo, boundary_lonlat) -> None:
    """Raise :class:`InputError` unless the file's footprint intersects ``boundary_lonlat`` (EPSG:4326).

    The message says where the file actually lands and, when re-reading its coordinates in
    another linear unit (same projection) would put it inside the boundary, which
    ``pointcloud_crs`` to set.
    """
    foot = footprint_lonlat(info)
    if _plausible(foot) and foot.intersects(boundary_lonlat):
        return
    c = foot.centroid
    where = (f"lands at lon {c.x:.3f}, lat {c.y:.3f}" if _plausible(foot)
             else "does not reproject to a valid lon/lat")
    msg = (f"footprint {where} when read as {info.crs.name!r} ({_UNIT_PLURAL[info.xy_unit]}), "
           "outside the project boundary")
    fits = []
    for unit in _UNITS:
        if unit == info.xy_unit:
            continue
        try:
            alt = _with_linear_unit(info.crs, unit)
        except (CRSError, KeyError, TypeError):
            continue
        poly = _box_lonlat(alt, info.bounds)
        if _plausible(poly) and poly.intersects(boundary_lonlat):
            fits.append((unit, alt, poly.centroid))
    if fits:
        unit, alt, ac = fits[0]
        names = " or ".join(_UNIT_PLURAL[u] for u, _, _ in fits)
        centre = ((info.bounds[0] + info.bounds[2]) / 2, (info.bounds[1] + info.bounds[3]) / 2)
        msg += (f"; read in {names} it would be inside (lon {ac.x:.3f}, lat {ac.y:.3f}): the file's CRS "
                f"metadata has the wrong unit, set pointcloud_crs: '{_suggest(alt, centre)}' "
                f"(same projection in {unit}) in the recipe")
    else:
        msg += "; no other linear unit (metre/foot/US survey foot) would put it inside either"
    raise InputError(info.path, msg)


# --------------------------------------------------------------------------- streaming


def _short(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_inside_header(info: PointCloudInfo, chunk: dict) -> None:
    """Points must lie in the header's bounds (a wrong scale/offset or a corrupt body puts them
    elsewhere, or all onto the offset)."""
    minx, miny, maxx, maxy = info.bounds
    tol = max(maxx - minx, maxy - miny, 1.0) * 0.01 + 1.0
    x, y = chunk["x"], chunk["y"]
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or x.min() < minx - tol or x.max() > maxx + tol \
            or y.min() < miny - tol or y.max() > maxy + tol:
        raise InputError(info.path, "points lie outside the header's bounds: wrong scale/offset or corrupt data")
    extent = max(maxx - minx, maxy - miny)
    if len(x) > 100 and extent > 1.0 and max(np.ptp(x), np.ptp(y)) < 1e-6 * extent:
        raise InputError(info.path, "every point decodes to (nearly) the same position, far from filling the "
                                    "header's bounds: wrong scale/offset or corrupt data")


def iter_point_chunks(info: PointCloudInfo, chunk_size: int = 2_000_000,
                      attributes: tuple = ()) -> Iterator[dict[str, np.ndarray]]:
    """Stream the points in chunks of at most ``chunk_size`` (constant memory, COPC read as LAZ).

    Each chunk is a dict: ``x``, ``y`` float64 in native horizontal units; ``z`` float64 in
    metres; ``intensity`` uint16; ``return_number``, ``number_of_returns``, ``classification``
    uint8; and the recipe's ``attributes`` ((name, dtype) pairs, :mod:`.attributes`). Decode
    errors, truncation and a missing attribute raise :class:`InputError`.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if info.is_ept:
        yield from iter_ept_boxes(info, None, chunk_size, attributes=attributes)
        return

    def corrupt(e: BaseException) -> InputError:
        return InputError(info.path, f"truncated or corrupt LAZ/LAS data: {_short(e)}")

    try:
        # a URL is streamed whole by ranged reads (COPC tiles are read by bounds instead: remote.py)
        reader = laspy.open(open_source(info.path, block_size=8 << 20) if is_remote(info.path) else info.path)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise corrupt(e) from None
    with reader:
        expected = int(reader.header.point_count)
        it = reader.chunk_iterator(chunk_size)
        seen = 0
        while True:
            try:
                pts = next(it, None)
                if pts is None:
                    break
                chunk = {
                    "x": np.asarray(pts.x, dtype=np.float64),
                    "y": np.asarray(pts.y, dtype=np.float64),
                    "z": np.asarray(pts.z, dtype=np.float64) * info.z_to_m,
                    "intensity": np.asarray(pts.intensity, dtype=np.uint16),
                    "return_number": np.asarray(pts.return_number, dtype=np.uint8),
                    "number_of_returns": np.asarray(pts.number_of_returns, dtype=np.uint8),
                    "classification": np.asarray(pts.classification, dtype=np.uint8),
                }
            except Exception as e:  # noqa: BLE001 - laspy / lazrs decode errors
                raise corrupt(e) from None
            chunk.update(read_attributes(pts, attributes, redact(info.path)))
            n = len(chunk["x"])
            if n == 0:
                break
            _check_inside_header(info, chunk)
            seen += n
            yield chunk
        if seen != expected:
            raise InputError(info.path, f"truncated or corrupt LAZ/LAS data: header says {expected} "
                             f"points but only {seen} could be read")


def iter_ept_boxes(info: PointCloudInfo, boxes, chunk_size: int = 1_000_000, stats: FetchStats | None = None,
                   threads: int | None = None, attributes: tuple = ()) -> Iterator[dict[str, np.ndarray]]:
    """The points of EPT dataset ``info.path`` inside any of ``boxes`` (minx, miny, maxx, maxy in
    its CRS and units, edges included; ``None``: every point, checked against ``points``), as the
    chunk dicts of :func:`iter_point_chunks` (z in metres).  Only the hierarchy pages and nodes
    that overlap a box are fetched (:mod:`.ept`); ``stats`` receives the bytes and requests."""
    meta = ept.read_ept_meta(info.path, stats)
    kw = {"attributes": attributes} if threads is None else {"threads": threads, "attributes": attributes}
    seen = 0
    for chunk in ept.iter_ept_points(meta, boxes, chunk_size, stats, **kw):
        chunk["z"] = chunk["z"] * info.z_to_m
        _check_inside_header(info, chunk)
        seen += len(chunk["x"])
        yield chunk
    if boxes is None and seen != meta.points:
        raise InputError(info.path, f"EPT hierarchy lists {seen:,} points in its nodes but ept.json says "
                         f"{meta.points:,}: an incomplete or corrupt dataset")
