"""The raster builder (issue 3): satellite and DEM recipes through plan → shards → finalise.

Real scenes from ``../shared/data/satellite`` (six continents, five sensors, four CRSs) when
present; synthetic scenes otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from synth_inputs import SHARED
from test_raster_scenes import write_tif
from typer.testing import CliRunner

from als_datasets.build import run_build
from als_datasets.cli import app
from als_datasets.cli.options import check_strategy
from als_datasets.errors import InputError
from als_datasets.kinds.raster.entropy import spectral_entropy
from als_datasets.kinds.raster.sampling import drop_overlaps, ordered_draw
from als_datasets.recipe import load_recipe

SAT = SHARED / "satellite"
REF = SHARED / "reference" / "resolve_ecoregions_1deg"
#: scene folder → (name, recipe extras, continent per SOURCES.md, band count)
REAL = {
    "europe_spain_s2l1c_sen1floods11/Spain_7370579_S2Hand.tif": ("spain", {"sensor": "sentinel-2-l1c"}, "Europe", 13),
    "africa_sahara_s2l2a_S2A_29RKH_20200219": ("sahara", {"sensor": "sentinel-2-l2a"}, "Africa", 12),
    "southamerica_olinda_l7etm_stars/L7_ETMs.tif": ("olinda", {"sensor": "landsat-7-etm",
                                                               "bands": ["B1", "B2", "B3", "B4", "B5", "B7"]},
                                                    "South America", 6),
    "oceania_canberra_ls5tm_nbar_19920323": ("canberra", {"sensor": "landsat-5-tm"}, "Oceania", 6),
    "asia_guangdong_l8oli_LC81210442015044LGN00": ("guangdong", {"sensor": "landsat-8-oli"}, "Asia", 3),
    "northamerica_alabama_l8oli_LC80200392015216LGN00": ("alabama", {"sensor": "landsat-8-oli"}, "North America", 7),
}
needs_real = pytest.mark.skipif(not SAT.is_dir(), reason="../shared/data/satellite not present")


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _real_recipe(tmp: Path, **over) -> Path:
    scenes = [{"name": n, "path": str(SAT / p), **extra} for p, (n, extra, _, _) in REAL.items()]
    data = {"kind": "satellite", "name": "real-six", "samples": 40, "patch_size_px": 96,
            "max_nodata_fraction": 0.05, "scenes": scenes}
    if REF.is_dir():
        data["biomes"] = {"raster": str(REF / "biomes.tif"), "table": str(REF / "ecoregions.csv")}
    data.update(over)
    return _write(tmp / "real.yaml", data)


def _samples(out: Path) -> list[dict]:
    import webdataset as wds

    got = []
    for p in sorted((out / "webdataset").glob("*/*.tar")):
        got += list(wds.WebDataset(str(p), shardshuffle=False).decode())
    return got


def _assert_balanced(frame: pd.DataFrame) -> None:
    """``global`` (§7, balanced across continents), checked against the frame's own numbers: the
    draw holds every drawable patch (eligible, with a continent), and in every prefix of it —
    the selected set included — no continent has more than one patch over a continent that still
    had patches left (one that ran out only stops; the others go on)."""
    drawable = frame["eligible"].astype(bool) & frame["continent"].notna()
    left_in = frame.loc[drawable, "continent"].value_counts().to_dict()  # eligible patches per continent
    drawn = frame[frame["draw_rank"].notna()].sort_values("draw_rank")
    assert drawn.index.sort_values().tolist() == frame.index[drawable].tolist()
    sel = frame["selected"].astype(bool)
    assert sel.tolist() == (frame["draw_rank"].fillna(len(frame)) < sel.sum()).tolist()
    counts = dict.fromkeys(left_in, 0)
    for n, c in enumerate(drawn["continent"], 1):
        counts[c] += 1
        open_ = [counts[k] for k in left_in if counts[k] < left_in[k]]
        if open_:
            assert max(counts.values()) <= min(open_) + 1, (
                f"first {n} draws: {counts} with eligible patches per continent {left_in}")
    got = frame.loc[sel, "continent"].value_counts().to_dict()
    open_ = [got.get(k, 0) for k in left_in if got.get(k, 0) < left_in[k]]
    assert set(got) == set(left_in) or sel.sum() < len(left_in)
    assert not open_ or max(got.values()) <= min(open_) + 1, (got, left_in)


@pytest.fixture(scope="module")
def real_builds(tmp_path_factory):
    if not SAT.is_dir():
        pytest.skip("../shared/data/satellite not present")
    tmp = tmp_path_factory.mktemp("real-sat")
    recipe = _real_recipe(tmp)
    outs = {}
    for st in ("global", "continent:europe", "spectral", "random"):
        r = load_recipe(recipe, overrides={"strategy": st}, out_dir=tmp / st.replace(":", "-"))
        run_build(r)
        outs[st] = tmp / st.replace(":", "-")
    return outs


@needs_real
def test_real_scenes_patches_bands_size_georeference(real_builds):
    samples = _samples(real_builds["global"])
    by_scene = {}
    for s in samples:
        by_scene.setdefault(s["json"]["scene"], []).append(s)
    assert set(by_scene) == {v[0] for v in REAL.values()}
    for _, (name, _, continent, nbands) in REAL.items():
        for s in by_scene[name]:
            m, px = s["json"], s["pixels.npy"]
            assert px.shape == (nbands, 96, 96) and len(m["bands"]) == nbands == len(m["common_bands"])
            x0, y0, x1, y1 = m["bounds"]
            assert x1 - x0 == pytest.approx(96 * m["resolution"])
            assert y1 - y0 == pytest.approx(96 * m["resolution"], rel=1e-3)  # Guangdong: pixels not quite square
            assert m["continent"] == continent, (name, m["continent"])
            assert m["nodata_fraction"] <= 0.05 + 1e-9
            key = s["__key__"]
            assert "." not in key and key == m["tile_id"] == f"{name}_c{m['col']}_r{m['row']}"
    # georeference: the patch centre lies inside the scene's lon/lat box, and the window is the right one
    import rasterio

    s = by_scene["spain"][0]
    m = s["json"]
    with rasterio.open(SAT / "europe_spain_s2l1c_sen1floods11/Spain_7370579_S2Hand.tif") as ds:
        lon0, lat0, lon1, lat1 = ds.bounds
        assert lon0 < m["lon"] < lon1 and lat0 < m["lat"] < lat1
        win = rasterio.windows.Window(m["col"] * 96, m["row"] * 96, 96, 96)
        assert np.array_equal(ds.read(window=win).astype(s["pixels.npy"].dtype), s["pixels.npy"])
    # mixed sensors share one band order by common name; Landsat-8 B5 is nir08, Sentinel-2 B5 rededge1
    info = json.loads((real_builds["global"] / "_info.json").read_text())
    assert info["bands"][:4] == ["coastal", "blue", "green", "red"] and "nir08" in info["bands"]
    al = by_scene["alabama"][0]["json"]
    assert dict(zip(al["bands"], al["common_bands"]))["B5"] == "nir08"
    sa = by_scene["sahara"][0]["json"]
    assert dict(zip(sa["bands"], sa["common_bands"]))["B05"] == "rededge1"  # file names keep B05
    ca = by_scene["canberra"][0]["json"]
    assert ca["common_bands"] == ["blue", "green", "red", "nir08", "swir16", "swir22"]  # B10..B70 = TM 1..7


@needs_real
def test_real_global_is_balanced_and_labelled(real_builds):
    idx = pd.read_parquet(real_builds["global"] / "index.parquet")
    counts = idx["continent"].value_counts()
    assert len(counts) == 6 and counts.max() - counts.min() <= 1
    _assert_balanced(pd.read_parquet(real_builds["global"] / "frame.parquet"))
    if REF.is_dir():
        assert idx.loc[idx["scene"] == "sahara", "biome"].eq("Deserts & Xeric Shrublands").all()
    frame = pd.read_parquet(real_builds["global"] / "frame.parquet")
    assert {"nodata", ""} <= set(frame["reason"])  # Guangdong's undeclared zero fill drops patches
    gd = frame[frame["scene"] == "guangdong"]
    assert (gd["reason"] == "nodata").sum() > 0
    rules = frame.loc[frame["scene"] == "olinda", "continent_rule"]
    assert rules.str.startswith("nearest").any()  # Olinda's coastal centres need the nearest polygon
    readme = (real_builds["global"] / "README.md").read_text()
    assert "Natural Earth" in readme and "nearest" in readme and "spectral entropy" in readme.lower()
    assert json.loads((real_builds["global"] / "manifest.json").read_text())["kind"] == "satellite"


@needs_real
def test_real_continent_europe_only_europe(real_builds):
    idx = pd.read_parquet(real_builds["continent:europe"] / "index.parquet")
    assert len(idx) > 0 and set(idx["continent"]) == {"Europe"}


@needs_real
def test_real_spectral_raises_mean_entropy_over_random(real_builds):
    mean = {k: pd.read_parquet(real_builds[k] / "index.parquet")["spectral_entropy"].mean()
            for k in ("spectral", "random")}
    assert mean["spectral"] > mean["random"]
    spec = pd.read_parquet(real_builds["spectral"] / "index.parquet")
    assert spec["continent"].nunique() == 6  # coverage kept


@needs_real
def test_real_build_loads_and_validates(real_builds):
    from datasets import load_dataset

    out = real_builds["random"]
    ds = load_dataset(str(out), split="train")
    assert len(ds) == 40
    row = ds[0]
    assert np.asarray(row["pixels.npy"]).shape[1:] == (96, 96) and row["json"]["spectral_entropy"] > 0
    r = CliRunner().invoke(app, ["validate", str(out)])
    assert r.exit_code == 0, r.output


def test_spectral_entropy_hand_computed():
    # two values, half of the pixels each: after clip (mean ± 2σ) and 0-255 scaling they fall in two
    # bins → H = ln 2; a second band constant → 0; the sample's value is the mean over bands
    a = np.zeros((1, 2, 8, 8), dtype=np.uint16)
    a[0, 0, :, :4], a[0, 0, :, 4:] = 100, 900
    a[0, 1] = 7
    assert spectral_entropy(a)[0] == pytest.approx(math.log(2) / 2)
    assert spectral_entropy(a[:, :1], base=2)[0] == pytest.approx(1.0)


def test_overlap_check_across_scenes():
    from shapely import box

    # three patches: B overlaps A by 50 %, C overlaps nothing
    foot = np.array([box(0, 0, 0.01, 0.01), box(0.005, 0, 0.015, 0.01), box(0.1, 0.1, 0.11, 0.11)], dtype=object)
    kept, rejected = drop_overlaps(np.array([0, 1, 2]), foot, max_overlap=0.0)
    assert kept.tolist() == [0, 2] and rejected.tolist() == [1]
    kept, _ = drop_overlaps(np.array([1, 0, 2]), foot, max_overlap=0.6)
    assert kept.tolist() == [1, 0, 2]
    touching = np.array([box(0, 0, 1, 1), box(1, 0, 2, 1)], dtype=object)  # shared edge: no overlap
    assert drop_overlaps(np.array([0, 1]), touching, 0.0)[0].tolist() == [0, 1]


def _synthetic_scene(root: Path, name: str, x0: float, seed: int, nodata=None, crs="EPSG:32633") -> Path:
    rng = np.random.default_rng(seed)
    a = rng.integers(100, 3000, (4, 192, 192)).astype("uint16")
    return write_tif(root / f"{name}.tif", a, 10, x0=x0, crs=crs, nodata=nodata, descriptions=["B2", "B3", "B4", "B8"])


def test_overlapping_scenes_drop_duplicates(tmp_path):
    # the same ground twice (scene b is scene a shifted by half a patch): with max_overlap 0 no two
    # samples share ground; with 1.0 they do
    _synthetic_scene(tmp_path, "a", 500000.0, 1)
    _synthetic_scene(tmp_path, "b", 500000.0 + 480, 2)
    base = {"kind": "satellite", "strategy": "random", "samples": 100, "scenes": [
        {"name": "a", "path": "a.tif", "sensor": "sentinel-2"}, {"name": "b", "path": "b.tif", "sensor": "sentinel-2"}]}
    r0 = load_recipe(_write(tmp_path / "r0.yaml", {**base, "max_overlap": 0.0}), out_dir=tmp_path / "o0")
    r1 = load_recipe(_write(tmp_path / "r1.yaml", {**base, "max_overlap": 1.0}), out_dir=tmp_path / "o1")
    from als_datasets.plan import make_plan

    p0, p1 = make_plan(r0), make_plan(r1)
    assert p1.selected.shape[0] == 8 and p0.selected.shape[0] < 8
    assert (p0.frame["reason"] == "overlap").sum() == 8 - p0.selected.shape[0]
    g = p0.selected.geometry.to_crs(6933)
    for i in range(len(g)):
        for j in range(i + 1, len(g)):
            assert g.iloc[i].intersection(g.iloc[j]).area < 1e-6 * g.iloc[i].area


def test_ordered_draw_nested_and_seeded():
    frame = pd.DataFrame({"eligible": [True] * 30 + [False] * 5,
                          "continent": ["Europe"] * 10 + ["Africa"] * 15 + ["Asia"] * 5 + [None] * 5,
                          "spectral_entropy": np.linspace(1, 5, 35)})
    a, b = ordered_draw(frame, "global", 41), ordered_draw(frame, "global", 41)
    assert a.tolist() == b.tolist() and len(a) == 30
    first = frame["continent"].to_numpy()[a[:15]]
    assert sorted(pd.Series(first).value_counts().tolist()) == [5, 5, 5]
    # every prefix balanced; Asia (5 patches) and then Europe (10) run out and Africa goes on
    rank = np.full(len(frame), -1)
    rank[a] = np.arange(len(a))
    draw_rank = pd.Series(rank, dtype="Int64").where(rank >= 0)
    for n in (1, 7, 15, 16, 22, 30):
        _assert_balanced(frame.assign(draw_rank=draw_rank, selected=(rank >= 0) & (rank < n)))
    assert frame["continent"].to_numpy()[a[25:]].tolist() == ["Africa"] * 5
    assert ordered_draw(frame, "global", 42).tolist() != a.tolist()
    sp = ordered_draw(frame, "spectral", 41)
    assert set(frame["continent"].to_numpy()[sp[:3]]) == {"Europe", "Africa", "Asia"}  # coverage first
    assert frame["spectral_entropy"].to_numpy()[sp[:10]].mean() > frame["spectral_entropy"][:30].mean()
    with pytest.raises(InputError, match="antarctica"):
        ordered_draw(frame, "continent:antarctica", 41, where="r.yaml")


def test_dem_build_float32_nodata_nan(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    z = (np.add.outer(np.arange(128.0), np.arange(128.0)) + 200).astype("float32")
    z[:20, :20] = -9999
    with rasterio.open(tmp_path / "dem.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 4200000, 30, 30), nodata=-9999) as ds:
        ds.write(z, 1)
    recipe = _write(tmp_path / "dem.yaml", {"kind": "dem", "samples": 10, "patch_size_px": 64,
                                            "max_nodata_fraction": 0.5, "scenes": [{"name": "d", "path": "dem.tif"}]})
    r = load_recipe(recipe, out_dir=tmp_path / "out")
    assert r.strategy == "random"
    run_build(r)
    samples = {s["__key__"]: s for s in _samples(tmp_path / "out")}
    assert set(samples) == {"d_c0_r0", "d_c1_r0", "d_c0_r1", "d_c1_r1"}
    px = samples["d_c0_r0"]["pixels.npy"]
    assert px.dtype == np.float32 and px.shape == (1, 64, 64)
    assert np.isnan(px[0, :20, :20]).all() and np.isfinite(px[0, 20:, 20:]).all()
    m = samples["d_c1_r1"]["json"]
    assert m["elevation_min"] == pytest.approx(200 + 64 + 64) and m["relief_m"] == pytest.approx(126)
    info = json.loads((tmp_path / "out" / "_info.json").read_text())
    assert info["bands"] == ["elevation"] and info["patch_size_px"] == 64
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["kind"] == "dem"


def test_build_twice_same_bytes_workers_and_resume(tmp_path):
    _synthetic_scene(tmp_path, "a", 500000.0, 3)
    _synthetic_scene(tmp_path, "b", 520000.0, 4)
    recipe = _write(tmp_path / "r.yaml", {"kind": "satellite", "strategy": "random", "samples": 3,
                                          "output": {"shard_max_samples": 2},
                                          "scenes": [{"name": "a", "path": "a.tif", "sensor": "sentinel-2"},
                                                     {"name": "b", "path": "b.tif", "sensor": "sentinel-2"}]})
    digests = []
    for out, workers in (("o1", 1), ("o2", 2)):  # a process pool (scene scans, shards) writes the same bytes
        run_build(load_recipe(recipe, out_dir=tmp_path / out), workers=workers)
        digests.append({p.relative_to(tmp_path / out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((tmp_path / out).rglob("*")) if p.is_file() and p.suffix in (".tar", ".parquet")})
    assert digests[0] == digests[1]
    assert (tmp_path / "o1" / "frame.parquet").read_bytes() == (tmp_path / "o2" / "frame.parquet").read_bytes()
    res = run_build(load_recipe(recipe, out_dir=tmp_path / "o1"))
    assert res.shards_written == 0 and res.shards_skipped == 2


@pytest.mark.parametrize("case", ["extents", "nocrs", "nodata", "bandname", "strategy", "key"])
def test_bad_raster_inputs_one_line(tmp_path, case):
    from als_datasets.cli import main

    good = np.arange(1, 40001, dtype="uint16").reshape(200, 200)
    scene: dict = {"name": "s", "path": "s.tif"}
    extra: dict = {}
    if case == "extents":
        d = tmp_path / "bands"
        d.mkdir()
        write_tif(d / "B02.tif", good, 10)
        write_tif(d / "B03.tif", good[:150], 10)
        scene, bad = {"name": "s", "path": "bands"}, "B03.tif"
    elif case == "nocrs":
        write_tif(tmp_path / "s.tif", good, 10, crs=None)
        bad = "s.tif"
    elif case == "nodata":
        write_tif(tmp_path / "s.tif", np.zeros_like(good), 10, nodata=0)
        bad = "s.tif"
    elif case == "bandname":
        write_tif(tmp_path / "s.tif", np.stack([good] * 2), 10, descriptions=["B2", "B3"])
        scene["bands"], bad = ["B2", "B7"], "B7"
    elif case == "strategy":
        write_tif(tmp_path / "s.tif", good, 10)
        extra, bad = {"strategy": "continental"}, "continental"
    else:
        write_tif(tmp_path / "s.tif", good, 10)
        extra, bad = {"patch_sise_px": 64}, "patch_sise_px"
    recipe = _write(tmp_path / "r.yaml", {"kind": "satellite", "scenes": [scene], **extra})
    with pytest.raises(SystemExit) as e:
        main(["build", str(recipe), "--out", str(tmp_path / "out"), "-q"])
    assert e.value.code == 2
    with pytest.raises(InputError) as ei:
        r = load_recipe(recipe, out_dir=tmp_path / "out2")
        check_strategy(r)
        run_build(r)
    text = str(ei.value)
    assert "\n" not in text and bad in text


BUILDERS = Path(__file__).resolve().parents[1] / "builders"


@pytest.fixture(scope="module")
def demo_builds(tmp_path_factory):
    """``als-datasets build builders/satellite-global.yaml`` (and continent:europe) as a user runs it."""
    from als_datasets.cli import main

    tmp = tmp_path_factory.mktemp("sat-demo")
    outs = {}
    for st in ("global", "continent:europe"):
        out = tmp / st.replace(":", "-")
        main(["build", str(BUILDERS / "satellite-global.yaml"), "--strategy", st, "--out", str(out), "-q"])
        outs[st] = out
    return outs


def test_builder_satellite_global_demo(demo_builds):
    idx = pd.read_parquet(demo_builds["global"] / "index.parquet")
    frame = pd.read_parquet(demo_builds["global"] / "frame.parquet")
    assert set(idx["continent"]) == set(frame.loc[frame["eligible"], "continent"].dropna())  # six continents
    assert idx["continent"].nunique() == 6 and len(idx) == 120
    assert {"cloud", "nodata", "overlap"} <= set(frame["reason"])  # SCL clouds, zero fill, overlapping scenes
    assert CliRunner().invoke(app, ["validate", str(demo_builds["global"])]).exit_code == 0
    eu = pd.read_parquet(demo_builds["continent:europe"] / "index.parquet")
    assert len(eu) > 0 and set(eu["continent"]) == {"Europe"}



def test_builder_satellite_global_demo_is_balanced(demo_builds):
    """Europe loses patches to the overlap check (two overlapping scenes) and still gets its turns."""
    frame = pd.read_parquet(demo_builds["global"] / "frame.parquet")
    _assert_balanced(frame)
    assert (frame["reason"] == "overlap").any()
    assert frame.loc[frame["selected"], "continent"].value_counts().tolist() == [20] * 6


def test_global_plan_is_balanced_without_the_overlap_check(tmp_path):
    """The same demo recipe with ``max_overlap: 1`` (no patch dropped after the draw): balanced."""
    from als_datasets.plan import make_plan

    r = load_recipe(BUILDERS / "satellite-global.yaml", out_dir=tmp_path / "o", overrides={"max_overlap": 1.0})
    frame = make_plan(r).frame
    _assert_balanced(frame)
    assert frame.loc[frame["selected"], "continent"].value_counts().tolist() == [20] * 6

def test_builder_dem_demo(tmp_path):
    from als_datasets.cli import main

    main(["build", str(BUILDERS / "dem-demo.yaml"), "--out", str(tmp_path / "dem"), "-q"])  # exits only on error
    samples = _samples(tmp_path / "dem")
    assert len(samples) == 60
    assert all(s["pixels.npy"].shape == (1, 64, 64) and s["pixels.npy"].dtype == np.float32 for s in samples)


@needs_real
def test_builder_satellite_real_recipe_resolves():
    r = load_recipe(BUILDERS / "satellite-real.yaml")
    assert r.kind == "satellite" and len(r.scenes) == 6
    assert all(Path(s["path"]).exists() for s in r.scenes)


@needs_real
def test_real_builds_compare_side_by_side(real_builds, tmp_path):
    from als_datasets.report.folder import compare_builds

    table, text = compare_builds([real_builds["random"], real_builds["spectral"], real_builds["global"]], tmp_path)
    assert "continent_entropy" in text and "spectral_entropy_mean" in text and "strata_coverage" not in text
    row = table.set_index("label")
    assert row.loc["spectral", "spectral_entropy_mean"] > row.loc["random", "spectral_entropy_mean"]
    assert row.loc["global", "continent_entropy"] >= row.loc["random", "continent_entropy"]
    assert (tmp_path / "comparison_continent_entropy.png").is_file()
