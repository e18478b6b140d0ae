"""A small synthetic 3DEP-like archive for the archive tests and benchmarks (seeded).

``make_archive(root)`` writes, for a few projects in UTM 10N (western Oregon):

* each project's points as a local LAZ (``<p>/points.laz``), as COPC files split in a west and an
  east half (``<p>/west.copc.laz``, ``<p>/east.copc.laz``: what a STAC catalogue lists), and, when
  an EPT writer is given, as an EPT dataset in Web Mercator (``<p>/ept/ept.json``);
* a resources GeoJSON (``resources.geojson``: name, url, count, lon/lat boundary), with urls
  relative to a base URL given later (:meth:`Archive.index_for`);
* NLCD-like land cover and a DEM as cloud-optimised GeoTIFFs in CONUS Albers (EPSG:5070),
  from the same terrain as the points' ground.

:meth:`Archive.files` maps server paths to files for :class:`range_server.RangeServer`, and
:meth:`Archive.stac_items` gives the STAC items of the COPC halves for ``stac_server``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UTM = 32610
ALBERS = 5070
COPC_TYPE = "application/vnd.laszip+copc"
FIELDS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification")


def surface(x, y):
    """Ground elevation (metres) at UTM 10N coordinates: rolling hills with steeper flanks."""
    return 200.0 + 120.0 * np.sin(x / 450.0) * np.cos(y / 380.0) + 25.0 * np.sin(y / 140.0) + 0.02 * (x - 560_000)


@dataclass
class Project:
    name: str
    box: tuple[float, float, float, float]  # UTM 10N
    points: int
    files: dict[str, Path] = field(default_factory=dict)  # role -> path


@dataclass
class Archive:
    root: Path
    projects: list[Project]
    landcover: Path
    dem: Path

    def files(self) -> dict[str, Path]:
        out = {"landcover.tif": self.landcover, "dem.tif": self.dem}
        for p in self.projects:
            for role, f in p.files.items():
                if role == "ept":
                    for g in sorted(f.parent.rglob("*")):
                        if g.is_file():
                            out[f"{p.name}/{g.relative_to(f.parent).as_posix()}"] = g
                else:
                    out[f"{p.name}/{f.name}"] = f
        return out

    def index_for(self, base_url: str, name: str = "resources.geojson") -> Path:
        """The resources GeoJSON with each project's url under ``base_url`` (its EPT's ept.json,
        served as ``<base>/<project>/ept.json`` like the 3DEP bucket)."""
        from pyproj import Transformer
        from shapely.geometry import box, mapping
        from shapely.ops import transform

        tr = Transformer.from_crs(UTM, 4326, always_xy=True)
        feats = []
        for p in self.projects:
            x0, y0, x1, y1 = p.box
            poly = transform(tr.transform, box(x0 + 10, y0 + 10, x1 - 10, y1 - 10).segmentize(50.0))
            feats.append({"type": "Feature", "geometry": mapping(poly),
                          "properties": {"name": p.name, "id": p.name, "count": p.points,
                                         "url": f"{base_url.rstrip('/')}/{p.name}/ept.json"}})
        path = self.root / name
        path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        return path

    def stac_items(self, base_url: str, collection: str = "3dep-lidar-copc") -> list[dict]:
        """One STAC item per COPC half, footprint in lon/lat, asset ``data`` (COPC)."""
        from pyproj import Transformer

        tr = Transformer.from_crs(UTM, 4326, always_xy=True)
        items = []
        for p in self.projects:
            x0, y0, x1, y1 = p.box
            xm = (x0 + x1) / 2
            for half, (a, b) in (("west", (x0, xm)), ("east", (xm, x1))):
                w, s, e, n = tr.transform_bounds(a, y0, b, y1)
                items.append({
                    "type": "Feature", "stac_version": "1.0.0", "id": f"{p.name}-{half}", "collection": collection,
                    "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                    "bbox": [w, s, e, n],
                    "properties": {"datetime": "2019-06-01T00:00:00Z", "3dep:project": p.name},
                    "assets": {"data": {"href": f"{base_url.rstrip('/')}/{p.name}/{half}.copc.laz",
                                        "type": COPC_TYPE, "roles": ["data"]}},
                    "links": []})
        return items


def _points(box, n: int, rng) -> dict:
    x0, y0, x1, y1 = box
    x = rng.uniform(x0, x1, n)
    y = rng.uniform(y0, y1, n)
    ground = surface(x, y)
    cls = rng.choice(np.array([2, 5, 6, 7], np.uint8), n, p=[0.55, 0.38, 0.065, 0.005])
    z = ground + np.where(cls == 5, rng.uniform(2, 30, n), 0) + np.where(cls == 6, 8.0, 0) \
        + np.where(cls == 7, rng.uniform(-40, 60, n), 0) + rng.normal(0, 0.05, n)
    nr = rng.integers(1, 4, n).astype(np.uint8)
    rn = np.minimum(rng.integers(1, 4, n), nr).astype(np.uint8)
    order = np.lexsort((x, np.floor(y / 50.0)))  # flight-line-ish order
    pts = {"x": x, "y": y, "z": z, "intensity": rng.integers(0, 4000, n).astype(np.uint16),
           "return_number": rn, "number_of_returns": nr, "classification": cls}
    return {k: v[order] for k, v in pts.items()}


def _write_laz(path: Path, pts: dict) -> None:
    import laspy
    import pyproj

    hdr = laspy.LasHeader(point_format=6, version="1.4")
    hdr.scales = np.array([0.01, 0.01, 0.01])
    hdr.offsets = np.array([np.floor(pts[a].min() / 1000) * 1000 for a in "xyz"])
    hdr.add_crs(pyproj.CRS(UTM))
    las = laspy.LasData(hdr)
    for k in FIELDS:
        setattr(las, k, pts[k])
    las.write(path)


def _rasters(root: Path, projects: list[Project], seed: int) -> tuple[Path, Path]:
    from affine import Affine
    from cog_fixtures import write_cog
    from pyproj import Transformer

    to_albers = Transformer.from_crs(UTM, ALBERS, always_xy=True)
    xs, ys = [], []
    for p in projects:
        x, y = to_albers.transform([p.box[0], p.box[2], p.box[0], p.box[2]], [p.box[1], p.box[1], p.box[3], p.box[3]])
        xs += list(x)
        ys += list(y)
    res, margin = 30.0, 3000.0
    left, top = np.floor((min(xs) - margin) / res) * res, np.ceil((max(ys) + margin) / res) * res
    w, h = int((max(xs) + margin - left) / res) + 1, int((top - (min(ys) - margin)) / res) + 1
    w, h = max(w, 512), max(h, 512)
    rng = np.random.default_rng(seed)
    patch = 12
    codes = np.array([41, 41, 42, 43, 22, 23, 21, 24], np.uint8)
    coarse = codes[rng.integers(0, len(codes), size=(h // patch + 2, w // patch + 2))]
    lc = coarse[np.arange(h)[:, None] // patch, np.arange(w)[None, :] // patch]
    other = rng.random((h, w)) < 0.06
    lc[other] = 81  # pasture: a few pixels outside the classes
    tr = Affine(res, 0, left, 0, -res, top)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ax, ay = tr * (cols, rows)
    ux, uy = Transformer.from_crs(ALBERS, UTM, always_xy=True).transform(ax, ay)
    dem = surface(ux, uy).astype(np.float32)
    return (write_cog(root / "landcover.tif", lc, f"EPSG:{ALBERS}", tr, nodata=0),
            write_cog(root / "dem.tif", dem, f"EPSG:{ALBERS}", tr, nodata=-9999.0, units="metre"))


def make_archive(root: Path, n_projects: int = 2, size_m: tuple[float, float] = (1200.0, 1000.0),
                 density: float = 0.15, seed: int = 0, ept_writer=None, paged: tuple = ()) -> Archive:
    """Write the archive under ``root`` (see the module docstring).  ``ept_writer(path, points,
    crs, paged)`` writes an EPT dataset of UTM ``points`` (e.g. :func:`write_project_ept`);
    ``paged``: the indexes of the projects whose EPT hierarchy is paged (``("*",)``: all)."""
    from copc_writer import write_copc
    from pyproj import CRS

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    projects = []
    for i in range(n_projects):
        x0, y0 = 560_000.0 + i * 3_000.0, 5_040_000.0 + (i % 2) * 1_500.0
        box = (x0, y0, x0 + size_m[0], y0 + size_m[1])
        n = int(size_m[0] * size_m[1] * density)
        p = Project(f"USGS_LPC_OR_Synth{i}_2019", box, n)
        d = root / p.name
        d.mkdir(exist_ok=True)
        pts = _points(box, n, rng)
        p.files["laz"] = d / "points.laz"
        _write_laz(p.files["laz"], pts)
        xm = (box[0] + box[2]) / 2
        for half, m in (("west", pts["x"] < xm), ("east", pts["x"] >= xm)):
            p.files[half] = d / f"{half}.copc.laz"
            write_copc(p.files[half], {k: v[m] for k, v in pts.items()}, CRS(UTM), (0.01, 0.01, 0.01),
                       max_points=20_000, seed=seed + i)
        if ept_writer is not None:
            p.files["ept"] = ept_writer(d / "ept", pts, UTM, i in paged or paged == ("*",))
        projects.append(p)
    lc, dem = _rasters(root, projects, seed)
    return Archive(root, projects, lc, dem)


def write_project_ept(root: Path, pts: dict, epsg: int, paged: bool) -> Path:
    """An EPT dataset of ``pts`` (in ``epsg``) reprojected to Web Mercator, as the 3DEP archive
    stores projects (``tests/ept_writer.py``); ``paged``: a hierarchy page at every level."""
    from ept_writer import srs_for, write_ept
    from pyproj import Transformer

    x, y = Transformer.from_crs(epsg, 3857, always_xy=True).transform(pts["x"], pts["y"])
    write_ept(root, {**pts, "x": x, "y": y}, srs=srs_for(3857), scales=(0.01, 0.01, 0.01), max_points=20_000,
              span=64, step=1 if paged else 30, seed=1)
    return Path(root) / "ept.json"
