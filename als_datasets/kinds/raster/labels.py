"""Where-on-Earth labels for satellite samples (DESIGN.md §7): continent and biome of a point.

* :class:`ContinentLookup` — Natural Earth admin-0 ``CONTINENT`` of the polygon containing the
  point; a point at sea (coarse coastlines, offshore patch centres) takes the continent of the
  nearest polygon up to ``nearest_max_km``, else ``None``.  The "Seven seas (open ocean)" features
  count as sea.  Natural Earth's assignment is political: all of Russia and French Guiana are
  Europe, Greenland is North America.  The default layer is the public-domain 110m file shipped in
  ``als_datasets/data``; the 50m file (lowercase field names) works too.
* :class:`BiomeLookup` — RESOLVE Ecoregions 2017 biome (14 biomes) from an ecoregion-id raster
  joined with the ecoregion table; a nodata pixel (coast, small island) takes the nearest pixel
  with a biome within ``nearest_px`` pixels.  The layer is not shipped (see ``data/README.md``);
  its paths come from the recipe.

Both are vectorised over arrays of points and return ``(labels, rules)``: object arrays of the
label (``None`` when there is none) and of the rule that produced it, for sample metadata.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import shapely

from als_datasets.errors import InputError

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DEFAULT_CONTINENTS = DATA_DIR / "ne_110m_admin_0_countries.geojson"
EARTH_RADIUS_KM = 6371.0088
KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0

#: The 14 RESOLVE-2017 biomes (Dinerstein et al. 2017), official spelling.
BIOMES = (
    "Tropical & Subtropical Moist Broadleaf Forests",
    "Tropical & Subtropical Dry Broadleaf Forests",
    "Tropical & Subtropical Coniferous Forests",
    "Temperate Broadleaf & Mixed Forests",
    "Temperate Conifer Forests",
    "Boreal Forests/Taiga",
    "Tropical & Subtropical Grasslands, Savannas & Shrublands",
    "Temperate Grasslands, Savannas & Shrublands",
    "Flooded Grasslands & Savannas",
    "Montane Grasslands & Shrublands",
    "Tundra",
    "Mediterranean Forests, Woodlands & Scrub",
    "Deserts & Xeric Shrublands",
    "Mangroves",
)


def _is_sea(name: str) -> bool:
    return name.strip().lower().startswith("seven seas")


def _as_points(lon, lat) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Flat float64 lon (wrapped to [-180, 180)) and lat arrays, and the broadcast input shape."""
    lon, lat = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    shape = lon.shape
    lon, lat = lon.ravel(), lat.ravel()
    if np.any(np.abs(lat[np.isfinite(lat)]) > 90.0):
        raise ValueError("latitude outside [-90, 90]: pass (lon, lat) in that order, in degrees")
    return (lon + 180.0) % 360.0 - 180.0, lat, shape


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in km on the mean Earth sphere (vectorised)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _first_per_group(group: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs (group, key): the unique groups and, for each, the position of its smallest key."""
    order = np.lexsort((key, group))
    groups, first = np.unique(group[order], return_index=True)
    return groups, order[first]


class ContinentLookup:
    """Natural Earth admin-0 ``CONTINENT`` at points, with a nearest-polygon fallback at sea.

    ``path``: a Natural Earth admin-0 countries layer (GeoJSON, or any vector file geopandas
    reads); default the shipped 110m GeoJSON.  ``field``: the continent attribute; matched
    case-insensitively, so the 50m file's ``continent`` is found.  ``nearest_max_km``: how far
    from land a point may be and still take the nearest polygon's continent (0 disables).
    """

    def __init__(self, path=None, field: str = "CONTINENT", nearest_max_km: float = 500.0):
        self.path = Path(path) if path is not None else DEFAULT_CONTINENTS
        if not self.path.is_file():
            raise InputError(self.path, "continent layer not found")
        if not nearest_max_km >= 0:
            raise ValueError(f"nearest_max_km must be >= 0, got {nearest_max_km!r}")
        self.nearest_max_km = float(nearest_max_km)
        props, geoms = self._read(self.path)
        if not props:
            raise InputError(self.path, "continent layer has no features")
        self.field = self._find_field(field, props)
        names, keep = [], []
        for i, (p, g) in enumerate(zip(props, geoms)):
            value = p.get(self.field)
            if g is None or g.is_empty or not isinstance(value, str) or not value.strip() or _is_sea(value):
                continue
            names.append(value.strip())
            keep.append(i)
        if not keep:
            raise InputError(self.path, f"no feature has a land value in field {self.field!r}")
        geoms = np.asarray([geoms[i] for i in keep], dtype=object)
        invalid = ~shapely.is_valid(geoms)
        self.n_repaired = int(invalid.sum())
        if self.n_repaired:
            geoms[invalid] = shapely.make_valid(geoms[invalid])
        self.geoms = geoms
        self.names = np.asarray(names, dtype=object)
        self.continents = tuple(sorted(set(names)))
        self.tree = shapely.STRtree(self.geoms)
        shapely.prepare(self.geoms)
        m = re.search(r"ne_(\d+m)_admin_0", self.path.name)
        self.source = f"Natural Earth {m.group(1)} admin-0" if m else self.path.name

    # -- loading -------------------------------------------------------------------------------
    @staticmethod
    def _read(path: Path) -> tuple[list[dict], list]:
        if path.suffix.lower() in (".geojson", ".json"):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                crs = str(((doc.get("crs") or {}).get("properties") or {}).get("name", "CRS84"))
                if doc.get("type") != "FeatureCollection":
                    raise ValueError("not a GeoJSON FeatureCollection")
                if not re.search(r"CRS84|4326", crs):
                    raise ValueError(f"CRS {crs} is not WGS 84 longitude/latitude")
                feats = doc["features"]
                props = [f.get("properties") or {} for f in feats]
                geoms = [shapely.geometry.shape(f["geometry"]) if f.get("geometry") else None for f in feats]
            except (OSError, ValueError, KeyError, TypeError, AttributeError, shapely.errors.GEOSException) as e:
                raise InputError(path, f"cannot read continent layer: {e}") from None
            return props, geoms
        try:
            import geopandas

            gdf = geopandas.read_file(path)
            if gdf.crs is not None and not gdf.crs.equals("EPSG:4326") and not gdf.crs.equals("OGC:CRS84"):
                gdf = gdf.to_crs("EPSG:4326")
        except Exception as e:  # any reader failure is a bad input
            raise InputError(path, f"cannot read continent layer: {e}") from None
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        props = gdf[cols].to_dict("records")
        return props, list(gdf.geometry.values)

    def _find_field(self, field: str, props: list[dict]) -> str:
        keys = set().union(*(p.keys() for p in props))
        if field in keys:
            return field
        matches = sorted(k for k in keys if k.lower() == field.lower())
        if len(matches) == 1:
            return matches[0]
        raise InputError(self.path, f"no field {field!r} (case-insensitive) in the continent layer")

    # -- lookup --------------------------------------------------------------------------------
    @property
    def rule_text(self) -> str:
        src = f"{self.source} {self.field}"
        if self.source.startswith("Natural Earth"):
            src += " (public domain)"
        if self.nearest_max_km > 0:
            return f"{src}; nearest polygon within {self.nearest_max_km:g} km for points at sea"
        return f"{src}; points at sea get no continent"

    def lookup(self, lon, lat, return_distance: bool = False):
        """Continent names and rules ("within" | "nearest" | "none") for points, vectorised.

        ``lon``/``lat`` in degrees (any broadcastable shapes).  Points on a border or coastline
        count as within; several containing polygons resolve to the first in file order.  With
        ``return_distance`` a third array gives the distance to the polygon in km (0 within,
        NaN for none).
        """
        lon, lat, shape = _as_points(lon, lat)
        n = lon.size
        names = np.full(n, None, dtype=object)
        rules = np.full(n, "none", dtype=object)
        dist = np.full(n, np.nan)
        ok = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
        if ok.size:
            pts = shapely.points(lon[ok], lat[ok])
            pi, ti = self.tree.query(pts, predicate="intersects")
            if pi.size:
                groups, pos = _first_per_group(pi, ti)
                hit = ok[groups]
                names[hit] = self.names[ti[pos]]
                rules[hit] = "within"
                dist[hit] = 0.0
            sea = ok[np.setdiff1d(np.arange(ok.size), pi)]
            if sea.size and self.nearest_max_km > 0:
                idx, near_names, near_km = self._nearest(lon[sea], lat[sea])
                names[sea[idx]] = near_names
                rules[sea[idx]] = "nearest"
                dist[sea[idx]] = near_km
        out = (names.reshape(shape), rules.reshape(shape))
        return out + (dist.reshape(shape),) if return_distance else out

    def _nearest(self, lon: np.ndarray, lat: np.ndarray):
        """Nearest polygon within the limit for points at sea: (point positions, names, km).

        Candidates are the polygons meeting a lon/lat box that contains the limit circle (and its
        copies shifted by ±360° near the antimeridian), clipped to that box; the nearest point of
        each is found in a local equirectangular frame (x scaled by cos(lat) of the point) and
        its great-circle distance decides.
        """
        max_km = self.nearest_max_km
        dlat = max_km / KM_PER_DEG
        far_lat = np.minimum(np.abs(lat) + dlat, 90.0)
        cos_far = np.cos(np.radians(far_lat))
        with np.errstate(divide="ignore"):
            dlon = np.where(cos_far > 1e-9, max_km / (KM_PER_DEG * np.maximum(cos_far, 1e-9)), 360.0)
        dlon = np.minimum(dlon, 360.0)
        ymin, ymax = np.maximum(lat - dlat, -90.0), np.minimum(lat + dlat, 90.0)
        box_pt, box_lon0, boxes = [], [], []
        for shift in (0.0, -360.0, 360.0):
            x0 = lon + shift
            xmin, xmax = np.maximum(x0 - dlon, -180.0), np.minimum(x0 + dlon, 180.0)
            use = np.flatnonzero(xmin < xmax) if shift else np.arange(lon.size)
            if use.size:
                box_pt.append(use)
                box_lon0.append(x0[use])
                boxes.append(shapely.box(xmin[use], ymin[use], xmax[use], ymax[use]))
        box_pt, box_lon0, boxes = np.concatenate(box_pt), np.concatenate(box_lon0), np.concatenate(boxes)
        bi, gi = self.tree.query(boxes, predicate="intersects")
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), np.zeros(0))
        if bi.size == 0:
            return empty
        parts = shapely.intersection(self.geoms[gi], boxes[bi])
        keep = ~shapely.is_empty(parts)
        bi, gi, parts = bi[keep], gi[keep], parts[keep]
        if bi.size == 0:
            return empty
        # local frame per pair: origin at the (shifted) point, km-ish units
        pt = box_pt[bi]
        lon0, lat0 = box_lon0[bi], lat[pt]
        coslat = np.maximum(np.cos(np.radians(lat0)), 1e-9)
        xy, owner = shapely.get_coordinates(parts, return_index=True)
        xy = np.column_stack(((xy[:, 0] - lon0[owner]) * coslat[owner], xy[:, 1] - lat0[owner]))
        local = shapely.set_coordinates(parts.copy(), xy)
        near = shapely.get_coordinates(shapely.shortest_line(shapely.points(np.zeros((pt.size, 2))), local))
        near = near.reshape(pt.size, 2, 2)[:, 1]
        km = haversine_km(lon0, lat0, near[:, 0] / coslat + lon0, near[:, 1] + lat0)
        groups, pos = _first_per_group(pt, km)
        within = km[pos] <= max_km
        return groups[within], self.names[gi[pos[within]]], km[pos[within]]


class BiomeLookup:
    """RESOLVE Ecoregions 2017 biome at points, from an ecoregion-id raster and its table.

    ``raster_path``: single-band raster of RESOLVE ecoregion ids (0 / nodata = none), e.g. the 1°
    ``biomes.tif``; any CRS (points are reprojected).  ``table_path``: CSV with at least ``id``
    and ``biome`` columns (latin-1 or UTF-8).  Biome names are returned in the official spelling
    (the CSV's commas-turned-double-spaces are restored).  The "Rock and Ice" ecoregion (biome
    "N/A") gives ``None`` with no fallback; a nodata pixel takes the nearest pixel with a biome in
    the window of ``nearest_px`` pixels around it.
    """

    def __init__(self, raster_path, table_path, nearest_px: int = 2):
        import rasterio

        self.raster_path, self.table_path = Path(raster_path), Path(table_path)
        for p, what in ((self.raster_path, "ecoregion raster"), (self.table_path, "ecoregion table")):
            if not p.is_file():
                raise InputError(p, f"{what} not found (RESOLVE Ecoregions 2017; give its path in the recipe)")
        if int(nearest_px) != nearest_px or nearest_px < 0:
            raise ValueError(f"nearest_px must be an integer >= 0, got {nearest_px!r}")
        self.nearest_px = int(nearest_px)
        table = self._read_table(self.table_path)
        try:
            with rasterio.open(self.raster_path) as src:
                ids = src.read(1)
                self.transform, self.crs, nodata = src.transform, src.crs, src.nodata
        except rasterio.errors.RasterioError as e:
            raise InputError(self.raster_path, f"cannot read ecoregion raster: {e}") from None
        if self.crs is None:
            raise InputError(self.raster_path, "ecoregion raster has no CRS")
        if self.transform.b != 0 or self.transform.d != 0:
            raise InputError(self.raster_path, "rotated rasters are not supported")
        fid = np.asarray(ids, dtype=np.float64)
        nod = ~np.isfinite(fid) | (fid <= 0) | (fid != np.round(fid))
        if nodata is not None:
            nod |= fid == nodata
        iid = np.where(nod, 0, fid).astype(np.int64)
        max_id = max(int(iid.max()), max(table, default=0))
        names = np.full(max_id + 1, None, dtype=object)
        known = np.zeros(max_id + 1, dtype=bool)
        for k, v in table.items():
            names[k], known[k] = v, True
        # per pixel: index into self.biomes (-1: nodata / unknown id -> fallback, -2: known, no biome)
        self.biomes = tuple(sorted({v for v in table.values() if v is not None}))
        code = {b: i for i, b in enumerate(self.biomes)}
        lut = np.array([code[v] if v is not None else (-2 if known[i] and i else -1) for i, v in enumerate(names)],
                       dtype=np.int16)
        self.grid = lut[iid]
        self.geographic = bool(self.crs.is_geographic)
        width_deg = abs(self.transform.a) * self.grid.shape[1]
        self.wrap = self.geographic and abs(width_deg - 360.0) < abs(self.transform.a) / 2
        self._to_crs = None
        if not (self.geographic and self.crs.to_epsg() == 4326):
            from pyproj import Transformer

            self._to_crs = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self.resolution = (f"{abs(self.transform.a):g}°" if self.geographic else f"{abs(self.transform.a):g} m")

    @staticmethod
    def _read_table(path: Path) -> dict[int, str | None]:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        rows = csv.DictReader(text.splitlines())
        cols = {c.strip().lower(): c for c in rows.fieldnames or []}
        if "id" not in cols or "biome" not in cols:
            raise InputError(path, "ecoregion table needs columns 'id' and 'biome'")
        out: dict[int, str | None] = {}
        try:
            for row in rows:
                name = re.sub(r"\s{2,}", ", ", (row[cols["biome"]] or "").strip())
                out[int(float(row[cols["id"]]))] = None if name.upper() in ("", "N/A", "NA") else name
        except (TypeError, ValueError) as e:
            raise InputError(path, f"bad ecoregion table row: {e}") from None
        if not out:
            raise InputError(path, "ecoregion table is empty")
        return out

    @property
    def rule_text(self) -> str:
        return (f"RESOLVE Ecoregions 2017 biome (Dinerstein et al. 2017, CC BY 4.0) of the {self.resolution} "
                f"ecoregion pixel at the point, else of the nearest pixel with a biome within {self.nearest_px} px")

    def lookup(self, lon, lat):
        """Biome names and rules ("pixel" | "nearest" | "none") for points, vectorised."""
        lon, lat, shape = _as_points(lon, lat)
        n = lon.size
        names = np.full(n, None, dtype=object)
        rules = np.full(n, "none", dtype=object)
        x, y = lon, lat
        if self._to_crs is not None:
            x, y = self._to_crs.transform(lon, lat)
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        fc, fr = ~self.transform * (x, y)
        ok = np.isfinite(fc) & np.isfinite(fr)
        fc, fr = np.where(ok, fc, -1.0), np.where(ok, fr, -1.0)
        h, w = self.grid.shape
        if self.wrap:
            fc = fc % w
        r, c = np.floor(fr).astype(np.int64), np.floor(fc).astype(np.int64)
        inside = ok & (r >= 0) & (r < h) & (c >= 0) & (c < w)
        code = np.full(n, -1, dtype=np.int16)
        code[inside] = self.grid[r[inside], c[inside]]
        biomes = np.asarray(self.biomes + (None,), dtype=object)  # index -1 -> None
        hit = code >= 0
        names[hit] = biomes[code[hit]]
        rules[hit] = "pixel"
        todo = np.flatnonzero(ok & (code == -1))
        k = self.nearest_px
        if todo.size and k > 0:
            off = np.arange(-k, k + 1)
            dr, dc = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
            rr = r[todo, None] + dr[None, :]
            cc = c[todo, None] + dc[None, :]
            if self.wrap:
                cc = cc % w
            inb = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            val = np.full(rr.shape, -1, dtype=np.int16)
            val[inb] = self.grid[rr[inb], cc[inb]]
            xscale = np.cos(np.radians(lat[todo]))[:, None] if self.geographic else 1.0
            ddx = (c[todo, None] + dc[None, :] + 0.5 - fc[todo, None]) * xscale
            ddy = r[todo, None] + dr[None, :] + 0.5 - fr[todo, None]
            d2 = np.where(val >= 0, ddx * ddx + ddy * ddy, np.inf)
            best = np.argmin(d2, axis=1)
            found = np.isfinite(d2[np.arange(todo.size), best])
            sel = todo[found]
            names[sel] = biomes[val[found, best[found]]]
            rules[sel] = "nearest"
        return names.reshape(shape), rules.reshape(shape)
