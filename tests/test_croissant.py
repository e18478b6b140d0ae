"""croissant.json: valid Croissant 1.1 for mlcroissant, readable records, GeoCroissant fields, deterministic."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from synth_inputs import DATA, landcover_around, write_recipe

from als_datasets.dataset.croissant import (
    CROISSANT_VERSION,
    GEOCROISSANT_VERSION,
    croissant_metadata,
    write_croissant,
)

MVK = DATA / "als" / "mvk-thin.las"

# mlcroissant runs in a child process: once `datasets` is imported (als_datasets imports it), pyarrow
# maps the shards' Array2D extension column to datasets' pandas extension dtype, which pandas cannot
# hash when mlcroissant iterates rows.  A fresh interpreter reads the plain list storage instead.
_READER = textwrap.dedent("""
    import json, sys
    import mlcroissant as mlc
    ds = mlc.Dataset(jsonld=sys.argv[1])
    def plain(v):
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v.item() if hasattr(v, "item") else v
    out = {"errors": sorted(ds.metadata.issues.errors), "warnings": sorted(ds.metadata.issues.warnings),
           "record_sets": {}}
    for rs in ds.metadata.record_sets:
        out["record_sets"][rs.uuid] = [plain(r) for r in ds.records(rs.uuid)]
    print(json.dumps(out))
""")


def _mlcroissant(path):
    pytest.importorskip("mlcroissant")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _build(root, name="mvk"):
    from als_datasets.build import run_build
    from als_datasets.kinds.als.sources.pointcloud import footprint_lonlat, inspect_pointcloud
    from als_datasets.recipe import load_recipe

    root.mkdir(parents=True, exist_ok=True)
    landcover_around(root / "lc.tif", footprint_lonlat(inspect_pointcloud(MVK)).bounds)
    r = write_recipe(root / "r.yaml", name=name, tile_size_m=500, grid_res_m=25, samples_per_project=3,
                     landcover={"path": "lc.tif"}, projects=[{"name": "mvk", "pointclouds": [str(MVK)]}],
                     output={"dir": "out", "shard_max_samples": 2})
    return run_build(load_recipe(r, out_dir=root / "out")).out_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = _build(tmp_path_factory.mktemp("croissant"))
    path = write_croissant(out, license="https://creativecommons.org/licenses/by/4.0/")
    return out, path


def test_geocroissant_fields(built):
    import geopandas as gpd

    out, path = built
    doc = json.loads(path.read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    idx = gpd.read_parquet(out / "index.parquet")

    assert doc["@type"] == "sc:Dataset"
    assert doc["conformsTo"] == [CROISSANT_VERSION, GEOCROISSANT_VERSION]
    assert doc["@context"]["geocr"] == "http://mlcommons.org/croissant/geo/"
    assert doc["version"] == manifest["tool_version"]
    assert "datePublished" not in doc
    assert "2501.05095" in doc["citeAs"] and "2309.03367" in doc["citeAs"] and "2604.21104" in doc["citeAs"]

    crs = sorted(set(idx["crs"]))
    assert len(crs) == 1 and crs[0].startswith("EPSG:326")
    assert doc["geocr:coordinateReferenceSystem"] == crs[0]
    w, s, e, n = idx.geometry.total_bounds
    box = [float(v) for v in doc["spatialCoverage"]["geo"]["box"].split()]
    assert doc["spatialCoverage"]["geo"]["@type"] == "GeoShape"
    assert box == pytest.approx([s, w, n, e], abs=1e-5)
    res = doc["geocr:spatialResolution"]  # a length (ground sampling distance): the mean point spacing
    assert res["unitText"] == "m" and res["value"] == pytest.approx(idx["density"].mean() ** -0.5, rel=1e-4)
    props = {p["name"]: p["value"] for p in res["additionalProperty"]}
    assert props == {"point_density": pytest.approx(idx["density"].mean(), rel=1e-4), "tile_size_m": 500,
                     "grid_res_m": 25}
    bands = doc["geocr:bandConfiguration"]
    assert bands["geocr:bandNamesList"][:4] == ["x", "y", "z", "intensity"]
    assert bands["geocr:totalBands"] == len(bands["geocr:bandNamesList"])
    assert geocroissant_problems(doc) == []
    assert doc["geocr:samplingStrategy"].startswith("geospatial sampling, seed")
    assert "temporalCoverage" not in doc

    files = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    for e in manifest["shards"]:
        fo = files[e["path"]]
        assert fo["contentUrl"] == e["path"] and fo["sha256"] == e["sha256"]
        assert fo["contentSize"] == f"{e['bytes']} B"
        assert fo["encodingFormat"] == {"parquet": "application/x-parquet", "webdataset": "application/x-tar"}[e["format"]]
        assert hashlib.sha256((out / e["path"]).read_bytes()).hexdigest() == e["sha256"]

    fields = {f["name"]: f for f in next(r for r in doc["recordSet"] if r["@id"] == "default")["field"]}
    assert fields["xyz.npy"]["dataType"] == "cr:Float32" and fields["xyz.npy"]["arrayShape"] == "-1,3"
    assert fields["intensity.npy"]["dataType"] == "cr:UInt16" and fields["intensity.npy"]["isArray"] is True
    assert fields["classification.npy"]["dataType"] == "cr:UInt8"
    subs = {f["name"] for f in fields["json"]["subField"]}
    assert {"project", "tile_id", "landcover", "slope_class", "stratum", "point_count", "lon", "lat", "crs"} <= subs


def test_mlcroissant_validates_and_reads(built):
    out, path = built
    manifest = json.loads((out / "manifest.json").read_text())
    got = _mlcroissant(path)
    assert got["errors"] == []
    # the only thing mlcroissant recommends is datePublished, left out on purpose (determinism)
    assert all("datePublished" in w for w in got["warnings"]), got["warnings"]

    recs = got["record_sets"]["default"]
    n = sum(manifest["splits"].values())
    assert len(recs) == n
    import pyarrow.parquet as pq

    keys = [k for e in manifest["shards"] if e["format"] == "parquet"
            for k in pq.read_table(out / e["path"], columns=["__key__"]).column("__key__").to_pylist()]
    assert sorted(r["default/__key__"] for r in recs) == sorted(keys)
    first = next(r for r in recs if r["default/__key__"] == keys[0])
    table = pq.read_table(out / next(e["path"] for e in manifest["shards"] if e["format"] == "parquet"))
    row = table.slice(0, 1).to_pylist()[0]
    assert np.allclose(np.asarray(first["default/xyz.npy"], dtype=np.float32), np.asarray(row["xyz.npy"], np.float32))
    assert first["default/intensity.npy"] == row["intensity.npy"]
    assert first["default/split"] == "train"
    meta = first["default/json"]
    assert meta["default/json/tile_id"] == row["json"]["tile_id"] == keys[0]
    assert meta["default/json/crs"] == row["json"]["crs"]
    assert meta["default/json/point_count"] == row["json"]["point_count"] == len(row["xyz.npy"])

    index = got["record_sets"]["index"]
    assert sorted(r["index/key"] for r in index) == sorted(keys)


def test_deterministic(built, tmp_path):
    out, path = built
    first = path.read_bytes()
    assert write_croissant(out, license="https://creativecommons.org/licenses/by/4.0/").read_bytes() == first
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    # the same build in another folder gives the same document
    other = _build(tmp_path / "b")
    assert write_croissant(other, license="https://creativecommons.org/licenses/by/4.0/").read_bytes() == first


def _handmade(out, crs_by_split):
    """A build-like folder without running a build: shards, manifest, recipe, index (two UTM zones)."""
    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from shapely.geometry import box

    from als_datasets.shards.writer import sha256_file

    shards, rows, lon0 = [], [], {"EPSG:32610": -122.4, "EPSG:32611": -116.5}
    for split, crs in crs_by_split.items():
        keys = [f"p{split}_c{i}_r0" for i in range(2)]
        n = [5, 7]
        rng = np.random.default_rng(0)
        metas = [{"project": f"p{split}", "tile_id": k, "crs": crs, "split": split, "lon": lon0[crs] + i * 0.01,
                  "lat": 45.0, "landcover": "forest", "slope_class": "flat", "stratum": "forest/flat",
                  "point_count": c, "density": c / 250000.0} for i, (k, c) in enumerate(zip(keys, n))]
        table = pa.table({
            "__key__": keys,
            "xyz.npy": pa.array([rng.random((c, 3), dtype=np.float32).tolist() for c in n],
                                pa.list_(pa.list_(pa.float32()))),
            "intensity.npy": pa.array([list(range(c)) for c in n], pa.list_(pa.uint16())),
            "classification.npy": pa.array([[2] * c for c in n], pa.list_(pa.uint8())),
            "json": pa.array(metas),
        })
        rel = f"parquet/{split}/part-000000.parquet"
        (out / rel).parent.mkdir(parents=True)
        pq.write_table(table, out / rel)
        shards.append({"path": rel, "format": "parquet", "split": split, "shard": 0, "samples": 2,
                       "bytes": (out / rel).stat().st_size, "sha256": sha256_file(out / rel)})
        rows += [{**m, "key": m["tile_id"], "geometry": box(m["lon"] - 0.003, 44.998, m["lon"] + 0.003, 45.002)}
                 for m in metas]
    (out / "manifest.json").write_text(json.dumps({
        "kind": "als", "name": "hand", "strategy": "random", "seed": 7, "tool_version": "9.9.9", "shards": shards,
        "splits": {s: 2 for s in crs_by_split}}))
    (out / "recipe.yaml").write_text("kind: als\nname: hand\ntile_size_m: 500\ngrid_res_m: 25\nlicense: cc-by-4.0\n"
                                     "temporal_coverage: 2019-01-01/2020-12-31\n")
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_parquet(out / "index.parquet")
    return out


def test_handmade_folder_two_zones_two_splits(tmp_path):
    out = _handmade(tmp_path, {"train": "EPSG:32610", "validation": "EPSG:32611"})
    doc = croissant_metadata(out, name="Hand made", url="https://huggingface.co/datasets/org/hand")
    assert doc["name"] == "Hand made" and doc["url"].endswith("org/hand") and doc["version"] == "9.9.9"
    assert doc["license"] == "cc-by-4.0"  # from the recipe
    assert doc["temporalCoverage"] == "2019-01-01/2020-12-31"
    assert "geocr:coordinateReferenceSystem" not in doc  # ONE sc:Text: two zones are stated per sample
    assert "2 coordinate reference systems (EPSG:32610, EPSG:32611)" in doc["description"]
    assert geocroissant_problems(doc) == []
    s, w, n, e = (float(v) for v in doc["spatialCoverage"]["geo"]["box"].split())
    assert (s, n) == pytest.approx((44.998, 45.002)) and w == pytest.approx(-122.403) and e == pytest.approx(-116.487)
    fs = next(d for d in doc["distribution"] if d["@id"] == "parquet-files")
    assert fs["includes"] == ["parquet/train/*.parquet", "parquet/validation/*.parquet"]
    assert json.loads(json.dumps(doc)) == doc

    got = _mlcroissant(write_croissant(out, name="Hand made"))
    assert got["errors"] == []
    recs = got["record_sets"]["default"]
    assert len(recs) == 4
    assert sorted((r["default/split"], r["default/json"]["default/json/crs"]) for r in recs) == [
        ("train", "EPSG:32610"), ("train", "EPSG:32610"), ("validation", "EPSG:32611"), ("validation", "EPSG:32611")]
    assert sorted(len(r["default/xyz.npy"]) for r in recs) == [5, 5, 7, 7]


def test_not_a_build_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        croissant_metadata(tmp_path)


# ---------------------------------------------------------------- the GeoCroissant vocabulary

VOCAB = json.loads((DATA / "vocab" / "croissant_geo_terms.json").read_text())
_TYPE_OF = {"schema:QuantitativeValue": ("QuantitativeValue", "sc:QuantitativeValue", "schema:QuantitativeValue"),
            "geocr:BandConfiguration": ("geocr:BandConfiguration",)}


def _fits(value, rng: list[str]) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return "schema:Text" in rng
    if isinstance(value, int):
        return "schema:Integer" in rng
    if isinstance(value, dict):
        return any(value.get("@type") in _TYPE_OF.get(r, ()) for r in rng)
    return False


def geocroissant_problems(doc: dict, where: str = "schema:Dataset") -> list[str]:
    """Every geocr: key of ``doc`` (a dataset, or a node of type ``where``) checked against the
    vocabulary: a defined term, used in its domain, each value in its range, one value where the
    cardinality is ONE."""
    problems = []
    for key, value in doc.items():
        if not key.startswith("geocr:"):
            continue
        term = VOCAB["properties"].get(key)
        if term is None:
            problems.append(f"{key}: not a term of croissant_geo.ttl")
            continue
        if where not in term["domain"]:
            problems.append(f"{key}: not a property of {where} (domain {term['domain']})")
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and term["cardinality"] == "ONE":
            problems.append(f"{key}: {len(value)} values where the cardinality is ONE")
        for v in values:
            if not _fits(v, term["range"]):
                problems.append(f"{key}: {v!r} is not in its range {term['range']}")
            if isinstance(v, dict) and str(v.get("@type", "")).startswith("geocr:"):
                problems += geocroissant_problems(v, v["@type"])
    return problems


def test_the_validator_catches_what_clients_found():
    assert geocroissant_problems({"geocr:coordinateReferenceSystem": ["EPSG:32610", "EPSG:32611"]}) == [
        "geocr:coordinateReferenceSystem: 2 values where the cardinality is ONE"]
    bad = {"@type": "geocr:BandConfiguration", "geocr:totalBands": 13, "geocr:bandNameList": ["a"]}
    assert geocroissant_problems({"geocr:bandConfiguration": bad}) == [
        "geocr:bandNameList: not a term of croissant_geo.ttl"]
    assert geocroissant_problems({"geocr:totalBands": 3}) == [
        "geocr:totalBands: not a property of schema:Dataset (domain ['geocr:BandConfiguration'])"]


def test_band_configuration_states_the_channel_contract():
    from als_datasets.dataset.croissant import band_configuration

    one = [{"sensor": "sentinel-2-l2a", "channels": 3, "bands": ["blue", "green", "red"]}]
    cfg = band_configuration(one, ["blue", "green", "red", "nir"])
    assert cfg == {"@type": "geocr:BandConfiguration", "geocr:totalBands": 3,
                   "geocr:bandNamesList": ["blue", "green", "red"]}
    two = one + [{"sensor": "landsat-8", "channels": 2, "bands": ["red", "nir"]}]
    text = band_configuration(two, ["blue", "green", "red", "nir"])
    assert isinstance(text, str) and "sentinel-2-l2a: 3 (blue, green, red)" in text and "landsat-8: 2 (red, nir)" in text
    for cfg in (band_configuration(one, []), text, band_configuration(None, ["x", "y"])):
        assert geocroissant_problems({"geocr:bandConfiguration": cfg}) == []
