"""Recipe ``point_attributes``: RGB, NIR, GPS time, scan angle and extra-bytes dimensions kept per
point, read from LAS/LAZ, COPC and EPT inputs, with the same dtypes in Parquet, WebDataset and
the card's features; a file lacking an attribute is refused naming the file and the attribute."""

from __future__ import annotations

import numpy as np
import pytest
from synth_inputs import SHARED, landcover_around, write_recipe

from als_datasets.errors import InputError
from als_datasets.kinds.als.sources.attributes import member_name, parse_point_attributes

ATTRS = ["red", "green", "blue", "nir", "gps_time", "scan_angle", "user_data", "point_source_id",
         {"name": "Amplitude", "dtype": "float32"}, {"name": "Echo width", "dtype": "uint16"}]


def write_pf(path, point_format: int, n: int = 6000, seed: int = 0, extra: bool = True, size_m: float = 1000.0):
    """A seeded LAS 1.4 file in UTM 10N (EPSG:32610) over ``size_m`` × ``size_m``: RGB (and NIR in
    PF 8) and the extra-bytes dimensions are functions of gps_time (= the point's index), so a
    sample's rows can be checked for alignment after routing and filtering."""
    import laspy
    import pyproj

    rng = np.random.default_rng(seed)
    h = laspy.LasHeader(point_format=point_format, version="1.4")
    if extra:
        h.add_extra_dims([laspy.ExtraBytesParams(name="Amplitude", type=np.float32),
                          laspy.ExtraBytesParams(name="Echo width", type=np.uint16)])
    h.add_crs(pyproj.CRS.from_epsg(32610))
    h.offsets, h.scales = np.array([500000.0, 4900000.0, 0.0]), np.array([0.01, 0.01, 0.01])
    las = laspy.LasData(h)
    i = np.arange(n)
    las.x = 500000.0 + rng.uniform(0, size_m, n)
    las.y = 4900000.0 + rng.uniform(0, size_m, n)
    las.z = 100.0 + rng.uniform(0, 20, n)
    las.intensity = rng.integers(0, 4000, n).astype(np.uint16)
    las.return_number = np.ones(n, np.uint8)
    las.number_of_returns = np.ones(n, np.uint8)
    las.classification = np.where(i % 3 == 0, 2, 5).astype(np.uint8)
    las.gps_time = i.astype(np.float64)
    las.red, las.green, las.blue = (i * 3) % 65536, (i * 5) % 65536, (i * 7) % 65536
    if point_format in (8, 10):
        las.nir = (i * 11) % 65536
    las.scan_angle = (i % 100 - 50).astype(np.int16)
    las.user_data = (i % 256).astype(np.uint8)
    las.point_source_id = np.full(n, 7, np.uint16)
    if extra:
        las["Amplitude"] = (i * 0.5).astype(np.float32)
        las["Echo width"] = (i % 1000).astype(np.uint16)
    las.write(path)
    return path


def test_recipe_forms():
    assert parse_point_attributes("r", None) == ()
    got = parse_point_attributes("r", ["RED", "gps_time", {"name": "Amplitude"}, {"name": "x2", "dtype": "uint8"}])
    assert got == (("red", "uint16"), ("gps_time", "float64"), ("Amplitude", "float32"), ("x2", "uint8"))
    assert member_name("Echo width") == "echo_width"


@pytest.mark.parametrize("bad,match", [
    ("red", "must be a list"), ([3], "point_attributes\\[0\\]"), (["intensity"], "already has"),
    ([{"name": "red", "dtype": "float32"}], "stored as uint16"), ([{"name": "a", "dtype": "complex64"}], "dtype"),
    (["a b", "a_b"], "both be stored as a_b.npy"), ([{"name": "a", "scale": 2}], "point_attributes\\[0\\]"),
])
def test_recipe_refused(bad, match):
    with pytest.raises(InputError, match=match):
        parse_point_attributes("r.yaml", bad)


def test_chunks_carry_the_attributes(tmp_path):
    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud, iter_point_chunks

    f = write_pf(tmp_path / "a.las", 8, n=500)
    flags = ["scan_direction_flag", "edge_of_flight_line", "synthetic", "key_point", "withheld", "overlap",
             "scanner_channel"]
    attrs = parse_point_attributes("r", ATTRS + flags)
    (chunk,) = list(iter_point_chunks(inspect_pointcloud(f), 10_000, attributes=attrs))
    for k in flags:
        assert chunk[k].dtype == np.uint8 and len(chunk[k]) == 500 and not chunk[k].any()
    i = chunk["gps_time"].astype(np.int64)
    assert np.array_equal(i, np.arange(500))
    assert chunk["red"].dtype == np.uint16 and np.array_equal(chunk["red"], (i * 3) % 65536)
    assert np.array_equal(chunk["nir"], (i * 11) % 65536)
    assert chunk["scan_angle"].dtype == np.float32
    assert np.allclose(chunk["scan_angle"], (i % 100 - 50) * 0.006, atol=1e-6)
    assert chunk["amplitude"].dtype == np.float32 and np.array_equal(chunk["amplitude"], i * 0.5)
    assert chunk["echo_width"].dtype == np.uint16 and np.array_equal(chunk["echo_width"], i % 1000)
    assert chunk["user_data"].dtype == np.uint8 and chunk["point_source_id"].dtype == np.uint16


@pytest.mark.parametrize("pf,attrs,match", [
    (7, ["nir"], "'nir' \\(LAS point format 7; it is in point formats 8, 10\\)"),
    (8, ["Reflectance"], "'Reflectance' \\(not a standard name"),
    (8, [{"name": "Amplitude", "dtype": "uint8"}], "a uint8 cannot store"),
])
def test_missing_attribute_is_one_line_naming_the_file(tmp_path, pf, attrs, match):
    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud, iter_point_chunks

    f = write_pf(tmp_path / "a.las", pf, n=600)
    with pytest.raises(InputError, match=match) as e:
        list(iter_point_chunks(inspect_pointcloud(f), 10_000, attributes=parse_point_attributes("r", attrs)))
    assert "a.las" in str(e.value) and "\n" not in str(e.value)


def test_copc_attributes_match_a_full_read():
    import laspy

    from als_datasets.kinds.als.sources.copc import iter_copc_boxes
    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud

    src = SHARED / "als" / "simple.copc.laz"
    if not src.is_file():
        pytest.skip("shared data absent")
    info = inspect_pointcloud(src, crs_override="EPSG:2992")  # the file's numbers are Oregon Lambert feet
    las = laspy.read(src)
    x, y = np.asarray(las.x), np.asarray(las.y)
    box = (float(np.median(x)), float(y.min()), float(x.max()), float(np.median(y)))
    attrs = parse_point_attributes("r", ["red", "green", "blue", "gps_time"])
    chunks = list(iter_copc_boxes(info, [box], attributes=attrs))
    got = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
    order = np.argsort(got["gps_time"], kind="stable")
    ref = np.argsort(np.asarray(las.gps_time)[inside], kind="stable")
    assert len(got["red"]) == int(inside.sum()) > 0
    for k in ("red", "green", "blue"):
        assert got[k].dtype == np.uint16
        assert np.array_equal(got[k][order], np.asarray(las[k])[inside][ref])
    with pytest.raises(InputError, match="simple.copc.laz.*'nir'"):
        list(iter_copc_boxes(info, [box], attributes=parse_point_attributes("r", ["nir"])))


def test_ept_attributes_and_extra_dimension():
    from als_datasets.kinds.als.sources import ept

    root = SHARED / "als" / "ept" / "lone-star-laszip" / "ept.json"
    if not root.is_file():
        pytest.skip("shared data absent")
    meta = ept.read_ept_meta(str(root))
    b = meta.conforming
    box = (b[0], b[1], (b[0] + b[3]) / 2, (b[1] + b[4]) / 2)
    attrs = parse_point_attributes("r", ["gps_time", "point_source_id", {"name": "OriginId", "dtype": "uint32"}])
    chunks = list(ept.iter_ept_points(meta, [box], 100_000, attributes=attrs))
    n = sum(len(c["x"]) for c in chunks)
    assert n > 0
    for c in chunks:
        assert set(c) >= {"gps_time", "point_source_id", "originid"} and len(c["originid"]) == len(c["x"])
        assert c["originid"].dtype == np.uint32 and c["gps_time"].dtype == np.float64
    with pytest.raises(InputError, match="ept.json \\(node .*'red'"):
        list(ept.iter_ept_points(meta, [box], 100_000, attributes=parse_point_attributes("r", ["red"])))


WANT = {"red.npy": "uint16", "nir.npy": "uint16", "gps_time.npy": "float64", "scan_angle.npy": "float32",
        "user_data.npy": "uint8", "point_source_id.npy": "uint16", "amplitude.npy": "float32",
        "echo_width.npy": "uint16"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build of a seeded PF 8 file (RGB, NIR, two extra-bytes dimensions) keeping ATTRS."""
    from als_datasets.build import run_build
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
    from als_datasets.recipe import load_recipe

    root = tmp_path_factory.mktemp("attrs")
    f = write_pf(root / "pf8.las", 8, n=20_000, size_m=1000.0)
    landcover_around(root / "lc.tif", footprint_lonlat(inspect_pointcloud(f)).bounds)
    rp = write_recipe(root / "r.yaml", name="attrs", tile_size_m=250, grid_res_m=25, samples_per_project=3,
                      landcover={"path": "lc.tif"}, projects=[{"name": "p", "pointclouds": ["pf8.las"]}],
                      point_attributes=ATTRS, output={"dir": "out", "shard_max_samples": 2})
    return run_build(load_recipe(rp, out_dir=root / "a")).out_dir


def test_build_keeps_the_attributes_in_every_format(built):
    import webdataset as wds
    import yaml
    from datasets import load_dataset

    from als_datasets.dataset.card import load_config
    from als_datasets.dataset.layout import validate

    out = built
    assert validate(out) == []
    members = [f"{member_name(a if isinstance(a, str) else a['name'])}.npy" for a in ATTRS]
    want = WANT
    pq = load_dataset(str(out), split="train")
    wd = load_config(out, "webdataset", split="train")
    assert pq.features == wd.features and len(pq) == len(wd) > 0
    for m in members:
        assert m in pq.features
    for m, dt in want.items():
        assert pq.features[m].feature.dtype == dt
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    declared = {f["name"]: f for f in meta["dataset_info"]["features"]}
    for m, dt in want.items():
        assert declared[m]["list"] == dt and f"`{m}`" in card
    tars = sorted(str(p) for p in (out / "webdataset" / "train").glob("*.tar"))
    by_key = {r["__key__"]: r for r in pq.with_format("numpy", dtype=None)}
    for s in wds.WebDataset(tars, shardshuffle=False).decode():
        i = s["gps_time.npy"].astype(np.int64)  # the source point's index: every row stays aligned
        assert len(i) == len(s["xyz.npy"]) == s["json"]["point_count"]
        assert np.array_equal(s["red.npy"], (i * 3) % 65536) and np.array_equal(s["nir.npy"], (i * 11) % 65536)
        assert np.array_equal(s["blue.npy"], (i * 7) % 65536)
        assert np.array_equal(s["amplitude.npy"], (i * 0.5).astype(np.float32))
        assert np.array_equal(s["echo_width.npy"], i % 1000)
        assert np.array_equal(s["classification.npy"], np.where(i % 3 == 0, 2, 5))
        row = by_key[s["__key__"]]
        for m, dt in want.items():
            assert s[m].dtype == np.dtype(dt) and np.asarray(row[m]).dtype == np.dtype(dt)
            assert np.array_equal(s[m], np.asarray(row[m]))
    rec = yaml.safe_load((out / "recipe.yaml").read_text())
    assert rec["point_attributes"][-1] == {"name": "Echo width", "dtype": "uint16"}
    # the training loader still reads the samples (extra members are ignored by BEV-MAE)
    from als_datasets.train.info import DatasetInfo
    from als_datasets.train.loader import loader_for
    from als_datasets.train.models import bev_mae

    batch = next(iter(loader_for(DatasetInfo.from_folder(out), "train", bev_mae, bev_mae.CONFIGS["tiny"],
                                 batch_size=2, num_workers=0)))
    assert batch


def test_missing_attribute_stops_the_build(tmp_path):
    from als_datasets.build import run_build
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
    from als_datasets.recipe import load_recipe

    f = write_pf(tmp_path / "pf7.las", 7, n=3000, extra=False, size_m=500.0)
    landcover_around(tmp_path / "lc.tif", footprint_lonlat(inspect_pointcloud(f)).bounds)
    rp = write_recipe(tmp_path / "r.yaml", name="attrs", tile_size_m=250, grid_res_m=25, samples_per_project=2,
                      landcover={"path": "lc.tif"}, projects=[{"name": "p", "pointclouds": ["pf7.las"]}],
                      point_attributes=["red", "nir"], output={"dir": "out"})
    with pytest.raises(InputError, match="pf7.las.*has no point attribute 'nir'"):
        run_build(load_recipe(rp, out_dir=tmp_path / "o"))


@pytest.mark.parametrize("name,angle_dim,scale", [("autzen_trim.laz", "scan_angle_rank", 1.0),
                                                  ("file_with_both_wkt_and_geotiff_vlrs.las", "scan_angle", 0.006)])
def test_real_files(name, angle_dim, scale):
    """autzen_trim.laz (LAS 1.2 PF 3: GPS time and RGB) and a LAS 1.4 PF 6 file, read whole."""
    import laspy

    from als_datasets.kinds.als.sources.pointcloud import inspect_pointcloud, iter_point_chunks

    src = SHARED / "als" / name
    if not src.is_file():
        pytest.skip("shared data absent")
    las = laspy.read(src)
    has_rgb = "red" in las.point_format.dimension_names
    names = ["gps_time", "scan_angle", "point_source_id", "user_data"] + (["red", "green", "blue"] if has_rgb else [])
    chunks = list(iter_point_chunks(inspect_pointcloud(src), 50_000, attributes=parse_point_attributes("r", names)))
    got = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    assert np.array_equal(got["gps_time"], np.asarray(las.gps_time))
    assert np.array_equal(got["scan_angle"], np.asarray(las[angle_dim], np.float32) * np.float32(scale))
    for k in names[2:]:
        assert np.array_equal(got[k], np.asarray(las[k]))
    assert has_rgb == (name == "autzen_trim.laz")
    if not has_rgb:
        with pytest.raises(InputError, match=f"{name}.*'red' \\(LAS point format 6"):
            list(iter_point_chunks(inspect_pointcloud(src), 50_000, attributes=parse_point_attributes("r", ["red"])))


def test_hub_serves_the_same_dtypes(built, monkeypatch, tmp_path):
    """Pushed to the in-process Hub: ``load_dataset(repo)`` (Parquet) and the tars give the local
    features and values."""
    import huggingface_hub.utils._http as hf_http
    from datasets import load_dataset

    from als_datasets.dataset.card import load_config
    from als_datasets.publish.push import push
    from tests.hub_server import HubServer, hub_env

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    repo = "test-org/als-attrs"
    with HubServer() as server:
        hub_env(monkeypatch, server, tmp_path)
        push(built, repo)
        local = load_dataset(str(built), split="train")
        remote = load_dataset(repo, split="train")
        tars = load_config(repo, "webdataset", split="train")
        assert remote.features == local.features == tars.features
        for m, dt in WANT.items():
            assert remote.features[m].feature.dtype == dt
        mine = {r["__key__"]: r for r in local.with_format("numpy", dtype=None)}
        for ds in (remote, tars):
            for r in ds.with_format("numpy", dtype=None):
                for m, dt in WANT.items():
                    assert r[m].dtype == np.dtype(dt) and np.array_equal(r[m], mine[r["__key__"]][m])
