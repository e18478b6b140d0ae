"""A seeded corpus of broken inputs for ``als-datasets build`` (issue 7).

``make_corpus(outdir)`` writes one folder per case under ``outdir`` (plus ``outdir/shared`` with
the good files the cases share) and returns a list of :class:`Case`.  Each case is a recipe that
``als-datasets build RECIPE`` must either refuse with ONE line ``error: <file>: <reason>`` on
stderr and exit code 2 (``outcome="error"``; every string of ``expect_substrings`` appears in that
line), or build cleanly (``outcome="ok"``: a documented clean outcome, see ``note``).

Run ``python tests/bad_corpus.py OUTDIR`` to write the corpus and print one line per case.
Everything is generated from a fixed seed: the same corpus every time.  See
``tests/data/bad/README.md``.
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from synth_inputs import DATA, landcover_around, write_recipe  # noqa: E402

SEED = 7
EPSG = 32615  # UTM 15N (Mississippi/Louisiana), metres
X0, Y0, SIDE = 600_000.0, 3_650_000.0, 600.0  # the good point cloud's square
TILE, RES = 100, 5

# LAS 1.2 public header offsets (LAS 1.2 spec, table 3)
_OFF_POINT_COUNT = 107  # uint32, legacy number of point records
_OFF_SCALE = 131  # 3 doubles
_OFF_MIN_X = 187  # double (max x at 179, max y 195, min y 203, max z 211, min z 219)


#: every case make_corpus writes, in order (the tests are parametrised over these names)
CASE_NAMES = (
    "truncated_laz",
    "corrupt_laz_body",
    "wrong_magic",
    "count_exceeds_data",
    "no_crs",
    "conflicting_crs",
    "conflicting_crs_wkt_right",
    "feet_as_metres",
    "nan_bounds",
    "absurd_coords",
    "absurd_scale_tiny",
    "absurd_scale_huge",
    "zero_points",
    "all_noise",
    "landcover_no_overlap",
    "landcover_all_nodata",
    "dem_all_nodata",
    "dem_no_crs",
    "raster_not_geotiff",
    "boundary_invalid_json",
    "boundary_bowtie",
    "boundary_utm_edge",
    "boundary_point",
    "boundary_line",
    "boundary_projected_as_lonlat",
    "boundary_missing",
    "recipe_yaml_syntax",
    "recipe_unknown_key",
    "recipe_wrong_type",
    "recipe_tile_not_multiple",
    "recipe_no_projects",
    "recipe_duplicate_projects",
    "recipe_project_name_dot",
    "recipe_unknown_strategy",
    "recipe_missing_pointcloud",
    "recipe_missing_landcover",
    "recipe_shard_max_zero",
    "recipe_shard_max_negative",
    "recipe_seed_negative",
    "recipe_min_class_fraction_zero",
    "recipe_slope_above_90",
    "recipe_outlier_negative_k",
    "recipe_drop_class_256",
    "recipe_tile_nan",
    "output_under_file",
    "output_not_a_build",
)


@dataclass(frozen=True)
class Case:
    name: str
    recipe_path: Path
    expect_substrings: tuple[str, ...]
    outcome: str = "error"  # "error": one-line error, exit 2 | "ok": builds | "skipped": builds, tiles skipped
    note: str = ""


# --------------------------------------------------------------------------- good inputs


def _points(n: int, seed: int, cls: int = 2, x0: float = X0, y0: float = Y0, side: float = SIDE) -> dict:
    rng = np.random.default_rng(seed)
    x = x0 + rng.random(n) * side
    y = y0 + rng.random(n) * side
    z = 50.0 + 0.02 * (x - x0) + rng.random(n) * 0.5
    return {"x": x, "y": y, "z": z, "classification": np.full(n, cls, np.uint8),
            "intensity": rng.integers(50, 400, n).astype(np.uint16),
            "return_number": np.ones(n, np.uint8), "number_of_returns": np.ones(n, np.uint8)}


def _las(path: Path, n: int = 3000, crs=EPSG, seed: int = SEED, **kw) -> Path:
    from als_datasets.demo.synth import write_las

    pts = _points(n, seed, **{k: kw.pop(k) for k in ("cls", "x0", "y0", "side") if k in kw})
    return write_las(path, pts, crs, **kw)


def _lonlat_bounds(epsg: int = EPSG, box=(X0, Y0, X0 + SIDE, Y0 + SIDE)) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True).transform_bounds(*box)


def _geojson(path: Path, geometry: dict) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": geometry}]}))
    return path


def _box(b) -> dict:
    x0, y0, x1, y1 = b
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _dem(path: Path, lonlat_bounds, value=None, crs=True, margin_m=300.0, res=5.0) -> Path:
    """A float32 DEM (UTM) over a lon/lat box: a gentle slope, or all ``value`` (e.g. nodata)."""
    from pyproj import Transformer
    from rasterio.transform import from_origin

    from als_datasets.demo.synth import write_geotiff

    minx, miny, maxx, maxy = Transformer.from_crs(4326, EPSG, always_xy=True).transform_bounds(*lonlat_bounds)
    w = int((maxx - minx + 2 * margin_m) // res) + 1
    h = int((maxy - miny + 2 * margin_m) // res) + 1
    arr = (50.0 + 0.02 * np.arange(w) * res)[None, :].repeat(h, 0).astype(np.float32)
    if value is not None:
        arr[:] = value
    return write_geotiff(path, arr, from_origin(minx - margin_m, maxy + margin_m, res, res),
                         EPSG if crs else None, nodata=-9999.0)


def _patch(path: Path, offset: int, fmt: str, *values) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------- the corpus


class _Writer:
    def __init__(self, outdir: Path):
        self.root = Path(outdir)
        self.shared = self.root / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.good_las = _las(self.shared / "good.las")
        self.good_laz = _las(self.shared / "good.laz")
        self.bounds = _lonlat_bounds()
        self.lc = landcover_around(self.shared / "lc.tif", self.bounds)
        self.cases: list[Case] = []

    def dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def recipe(self, name: str, pcs=None, boundary=None, lc=None, dem=None, projects=None, **top) -> Path:
        """``<name>/<name>.yaml`` (the recipe's name is the case name, so errors about it name it)."""
        d = self.dir(name)
        if projects is None:
            proj = {"name": "p", "pointclouds": [str(p) for p in ([self.good_las] if pcs is None else pcs)]}
            if boundary is not None:
                proj["boundary"] = str(boundary)
            projects = [proj]
        data = dict(name=name.replace(".", "-"), tile_size_m=TILE, grid_res_m=RES, samples_per_project=2,
                    landcover={"path": str(lc or self.lc)}, projects=projects, output={"dir": str(d / "out")})
        if dem is not None:
            data["dem"] = {"path": str(dem)}
        data.update(top)
        return write_recipe(d / f"{name}.yaml", **data)

    def add(self, name: str, recipe: Path, *expect: str, outcome: str = "error", note: str = "") -> None:
        self.cases.append(Case(name, recipe, tuple(expect), outcome, note))


def make_corpus(outdir) -> list[Case]:
    """Write every case under ``outdir`` and return them (deterministic: fixed seeds)."""
    w = _Writer(Path(outdir))
    good = w.good_las.read_bytes()
    laz = w.good_laz.read_bytes()

    # ---------------------------------------------------------------- LAS / LAZ / COPC
    d = w.dir("truncated_laz")
    (d / "truncated.laz").write_bytes(laz[: len(laz) // 2])
    w.add("truncated_laz", w.recipe("truncated_laz", [d / "truncated.laz"]), "truncated.laz", "truncated")

    d = w.dir("corrupt_laz_body")
    body = bytearray(laz)
    mid = len(body) // 2
    body[mid: mid + 64] = bytes(b ^ 0xFF for b in body[mid: mid + 64])
    (d / "corrupt.laz").write_bytes(bytes(body))
    w.add("corrupt_laz_body", w.recipe("corrupt_laz_body", [d / "corrupt.laz"]), "corrupt.laz", "corrupt")

    d = w.dir("wrong_magic")
    (d / "magic.las").write_bytes(b"XXXX" + good[4:])
    w.add("wrong_magic", w.recipe("wrong_magic", [d / "magic.las"]), "magic.las", "not a readable LAS/LAZ")

    d = w.dir("count_exceeds_data")
    (d / "short.las").write_bytes(good)
    n = struct.unpack_from("<I", good, _OFF_POINT_COUNT)[0]
    _patch(d / "short.las", _OFF_POINT_COUNT, "<I", 2 * n)
    w.add("count_exceeds_data", w.recipe("count_exceeds_data", [d / "short.las"]), "short.las", "truncated")

    d = w.dir("no_crs")
    f = _las(d / "nocrs.las", crs=None)
    w.add("no_crs", w.recipe("no_crs", [f]), "nocrs.las", "no CRS")

    # WKT (preferred) says UTM 16N, the GeoTIFF keys say UTM 15N, where the points really are:
    # the WKT is used silently, so the file lands ~570 km east, outside the project boundary.
    d = w.dir("conflicting_crs")
    f = _conflicting_crs_las(d / "conflict.las", wkt_epsg=32616, geokeys_epsg=EPSG)
    b = _geojson(d / "boundary.geojson", _box(w.bounds))
    w.add("conflicting_crs", w.recipe("conflicting_crs", [f], boundary=b), "conflict.las",
          "outside the project boundary",
          note="the WKT VLR wins over GeoTIFF keys; a conflict is only caught when the file lands outside the boundary")
    # ... and when the WKT is the right one, the conflicting keys are ignored: a clean build
    f = _conflicting_crs_las(d / "conflict_ok.las", wkt_epsg=EPSG, geokeys_epsg=32616)
    w.add("conflicting_crs_wkt_right", w.recipe("conflicting_crs_wkt_right", [f], boundary=b), outcome="ok",
          note="WKT VLR (right) preferred over GeoTIFF keys (wrong): builds")

    copc = DATA / "als" / "simple.copc.laz"
    if copc.is_file():
        from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud

        d = w.dir("feet_as_metres")
        fp = footprint_lonlat(inspect_pointcloud(copc, crs_override="EPSG:2992")).bounds
        b = _geojson(d / "eugene.geojson", _box(fp))
        lc = landcover_around(d / "lc_eugene.tif", fp)
        w.add("feet_as_metres", w.recipe("feet_as_metres", [copc], boundary=b, lc=lc), "simple.copc.laz", "feet")

    d = w.dir("nan_bounds")
    (d / "nanbounds.las").write_bytes(good)
    _patch(d / "nanbounds.las", _OFF_MIN_X, "<d", float("nan"))
    w.add("nan_bounds", w.recipe("nan_bounds", [d / "nanbounds.las"]), "nanbounds.las", "bounds")

    d = w.dir("absurd_coords")
    f = _las(d / "absurd.las", x0=5e9, y0=5e9, offset=(5e9, 5e9, 0.0))
    w.add("absurd_coords", w.recipe("absurd_coords", [f]), "absurd.las", "plausible lon/lat")

    # scale patched in the header, header bounds left as they were: the points no longer match them
    for tag, scale in (("tiny", 1e-9), ("huge", 1e6)):
        d = w.dir(f"absurd_scale_{tag}")
        (d / f"scale_{tag}.las").write_bytes(good)
        _patch(d / f"scale_{tag}.las", _OFF_SCALE, "<3d", scale, scale, scale)
        w.add(f"absurd_scale_{tag}", w.recipe(f"absurd_scale_{tag}", [d / f"scale_{tag}.las"]),
              f"scale_{tag}.las", "scale")

    d = w.dir("zero_points")
    f = _las(d / "empty.las", n=0)
    w.add("zero_points", w.recipe("zero_points", [f]), "empty.las", "no points")

    # all points noise (class 7, dropped by default); a DEM gives the slope so the frame is fine.
    # Documented outcome: the build succeeds, every selected tile is listed in skipped_tiles.
    d = w.dir("all_noise")
    f = _las(d / "noise.las", cls=7)
    dem = _dem(d / "dem.tif", w.bounds)
    w.add("all_noise", w.recipe("all_noise", [f], dem=dem), outcome="skipped",
          note="every point is dropped as noise: exit 0, 0 samples, the tiles listed in manifest.json skipped_tiles")

    # ---------------------------------------------------------------- rasters
    d = w.dir("landcover_no_overlap")
    lc = landcover_around(d / "lc_montana.tif", (-113.26, 46.06, -113.25, 46.07))
    w.add("landcover_no_overlap", w.recipe("landcover_no_overlap", lc=lc), "lc_montana.tif", "overlap")

    d = w.dir("landcover_all_nodata")
    lc = landcover_around(d / "lc_nodata.tif", w.bounds, code=255)
    w.add("landcover_all_nodata", w.recipe("landcover_all_nodata", lc=lc), "lc_nodata.tif", "nodata")

    d = w.dir("dem_all_nodata")
    dem = _dem(d / "dem_nodata.tif", w.bounds, value=-9999.0)
    w.add("dem_all_nodata", w.recipe("dem_all_nodata", dem=dem), "dem_nodata.tif", "nodata")

    d = w.dir("dem_no_crs")
    dem = _dem(d / "dem_nocrs.tif", w.bounds, crs=False)
    w.add("dem_no_crs", w.recipe("dem_no_crs", dem=dem), "dem_nocrs.tif", "no CRS")

    d = w.dir("raster_not_geotiff")
    (d / "text.tif").write_text("this is not a GeoTIFF\n")
    w.add("raster_not_geotiff", w.recipe("raster_not_geotiff", lc=d / "text.tif"), "text.tif", "cannot read")

    # ---------------------------------------------------------------- boundaries
    d = w.dir("boundary_invalid_json")
    (d / "broken.geojson").write_text('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0]')
    w.add("boundary_invalid_json", w.recipe("boundary_invalid_json", boundary=d / "broken.geojson"),
          "broken.geojson", "cannot read boundary")

    # bow-tie: repaired (make_valid) into two triangles that still cover the points: builds
    d = w.dir("boundary_bowtie")
    x0, y0, x1, y1 = w.bounds
    b = _geojson(d / "bowtie.geojson", {"type": "Polygon", "coordinates": [
        [[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]]]})
    w.add("boundary_bowtie", w.recipe("boundary_bowtie", boundary=b), outcome="ok",
          note="a self-intersecting polygon is repaired with shapely.make_valid (two triangles)")

    # straddling the UTM 10/11 edge at -120°: the boundary's centroid picks the zone; builds
    d = w.dir("boundary_utm_edge")
    f = _las(d / "edge.las", crs=32611, x0=243_300.0, y0=4_431_400.0, side=1200.0, n=4000)
    eb = _lonlat_bounds(32611, (243_300.0, 4_431_400.0, 244_500.0, 4_432_600.0))
    assert eb[0] < -120.0 < eb[2], eb
    b = _geojson(d / "edge.geojson", _box(eb))
    lc = landcover_around(d / "lc_edge.tif", eb)
    w.add("boundary_utm_edge", w.recipe("boundary_utm_edge", [f], boundary=b, lc=lc), outcome="ok",
          note="a boundary across -120° is gridded in the UTM zone of its centroid")

    d = w.dir("boundary_point")
    b = _geojson(d / "point.geojson", {"type": "Point", "coordinates": [(x0 + x1) / 2, (y0 + y1) / 2]})
    w.add("boundary_point", w.recipe("boundary_point", boundary=b), "point.geojson", "no area")

    d = w.dir("boundary_line")
    b = _geojson(d / "line.geojson", {"type": "LineString", "coordinates": [[x0, y0], [x1, y1]]})
    w.add("boundary_line", w.recipe("boundary_line", boundary=b), "line.geojson", "no area")

    d = w.dir("boundary_projected_as_lonlat")
    b = _geojson(d / "utm.geojson", _box((X0, Y0, X0 + SIDE, Y0 + SIDE)))
    w.add("boundary_projected_as_lonlat", w.recipe("boundary_projected_as_lonlat", boundary=b),
          "utm.geojson", "not lon/lat")

    d = w.dir("boundary_missing")
    w.add("boundary_missing", w.recipe("boundary_missing", boundary=d / "nowhere.geojson"),
          "nowhere.geojson", "not found")

    # ---------------------------------------------------------------- recipes
    d = w.dir("recipe_yaml_syntax")
    (d / "recipe_yaml_syntax.yaml").write_text("name: x\nprojects: [\n  - {name: p\n")
    w.add("recipe_yaml_syntax", d / "recipe_yaml_syntax.yaml", "recipe_yaml_syntax.yaml", "YAML")

    w.add("recipe_unknown_key", w.recipe("recipe_unknown_key", tile_sise_m=100),
          "recipe_unknown_key.yaml", "tile_sise_m")
    w.add("recipe_wrong_type", w.recipe("recipe_wrong_type", tile_size_m="big"),
          "recipe_wrong_type.yaml", "tile_size_m")
    w.add("recipe_tile_not_multiple", w.recipe("recipe_tile_not_multiple", grid_res_m=7),
          "recipe_tile_not_multiple.yaml", "multiple")
    w.add("recipe_no_projects", w.recipe("recipe_no_projects", projects=[]), "recipe_no_projects.yaml", "no projects")
    proj = {"name": "p", "pointclouds": [str(w.good_las)]}
    w.add("recipe_duplicate_projects", w.recipe("recipe_duplicate_projects", projects=[proj, dict(proj)]),
          "recipe_duplicate_projects.yaml", "twice")
    w.add("recipe_project_name_dot", w.recipe("recipe_project_name_dot", projects=[{**proj, "name": "p.1"}]),
          "recipe_project_name_dot.yaml", "p.1")
    w.add("recipe_unknown_strategy", w.recipe("recipe_unknown_strategy", strategy="stratified-ish"),
          "recipe_unknown_strategy.yaml", "stratified-ish")
    d = w.dir("recipe_missing_pointcloud")
    w.add("recipe_missing_pointcloud", w.recipe("recipe_missing_pointcloud", [d / "missing.laz"]),
          "missing.laz", "not found")
    w.add("recipe_missing_landcover", w.recipe("recipe_missing_landcover", lc=w.dir("recipe_missing_landcover")
                                               / "nolc.tif"), "nolc.tif", "not found")

    # numbers out of range: one line naming the recipe and the key, before any work
    for name, top, key in (
        ("recipe_shard_max_zero", {"output": {"shard_max_samples": 0}}, "output.shard_max_samples"),
        ("recipe_shard_max_negative", {"output": {"shard_max_samples": -5}}, "output.shard_max_samples"),
        ("recipe_seed_negative", {"seed": -1}, "seed"),
        ("recipe_min_class_fraction_zero", {"min_class_fraction": 0}, "min_class_fraction"),
        ("recipe_slope_above_90", {"slope_classes_deg": {"flat": [0, 5], "steep": [5, 120]}}, "slope_classes_deg.steep"),
        ("recipe_outlier_negative_k", {"outlier": {"mean_k": -12, "multiplier": 2.2}}, "outlier.mean_k"),
        ("recipe_drop_class_256", {"drop_classes": [7, 256]}, "drop_classes"),
        ("recipe_tile_nan", {"tile_size_m": float("nan")}, "tile_size_m"),
    ):
        if "output" in top:
            top = {"output": {"dir": str(w.dir(name) / "out"), **top["output"]}}
        w.add(name, w.recipe(name, **top), f"{name}.yaml", key)

    # ---------------------------------------------------------------- output
    # root ignores permissions, so "unwritable" is a folder under a regular file
    d = w.dir("output_under_file")
    (d / "afile").write_text("a regular file, not a folder\n")
    r = w.recipe("output_under_file", output={"dir": str(d / "afile" / "sub")})
    w.add("output_under_file", r, "afile", "output")
    # a folder that holds other files (not a build): never written into
    d = w.dir("output_not_a_build")
    (d / "out").mkdir()
    (d / "out" / "notes.txt").write_text("my notes\n")
    (d / "out" / "README.md").write_text("# mine\n")
    w.add("output_not_a_build", w.recipe("output_not_a_build"), str(d / "out"), "not a build folder", "README.md")
    assert [c.name for c in w.cases] == [n for n in CASE_NAMES if n != "feet_as_metres" or copc.is_file()]
    return w.cases


def _conflicting_crs_las(path: Path, wkt_epsg: int, geokeys_epsg: int) -> Path:
    """A LAS 1.4 (format 6) file with a WKT VLR for ``wkt_epsg`` AND GeoTIFF keys for ``geokeys_epsg``."""
    import laspy
    import pyproj

    keys = laspy.LasHeader(point_format=1, version="1.2")
    keys.add_crs(pyproj.CRS.from_epsg(geokeys_epsg))
    _las(path, crs=wkt_epsg, point_format=6, version="1.4")
    las = laspy.read(path)
    las.header.vlrs.extend(v for v in keys.vlrs if "GeoKey" in type(v).__name__ or "GeoDouble" in type(v).__name__
                           or "GeoAscii" in type(v).__name__)
    las.write(str(path))
    return path


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tests/bad_corpus.py OUTDIR", file=sys.stderr)
        return 2
    for c in make_corpus(args[0]):
        print(f"{c.name:32s} {c.outcome:5s} {c.recipe_path}  expect: {', '.join(c.expect_substrings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
