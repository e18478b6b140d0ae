"""Satellite scenes from a STAC archive (issue 14, item 3): a loopback STAC API (tests/stac_server.py)
answering with Sentinel-2 L2A and Landsat C2 L2 items in their public formats, COG assets served by
a Range-serving loopback server; only the candidate patches' windows are fetched."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from range_server import RangeServer
from sat_products import (
    L8_CRS,
    L8_ID,
    L8_X0,
    L8_Y0,
    landsat_c2l2_cogs,
    s2_l2a_cogs,
    stac_item_landsat_c2l2,
    stac_item_s2_l2a,
)
from stac_server import StacServer

#: (item id, collection, folder, continent) of the archive
EU = ("S2B_32UNA_20210614_0_L2A", "sentinel-2-l2a", "s2eu", "Europe")
AF = ("S2A_33PUL_20210120_0_L2A", "sentinel-2-l2a", "s2af", "Africa")
SA = (L8_ID, "landsat-c2-l2", "l8sa", "South America")
S2_SHAPE = (384, 384)
L8_SHAPE = (192, 192)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """COG folders, the files the range server serves, and the STAC items pointing at them."""
    root = tmp_path_factory.mktemp("archive")
    s2_l2a_cogs(root / "s2eu", 1, S2_SHAPE, 500000.0, 5600040.0, 32632, cloud_share=0.15)
    s2_l2a_cogs(root / "s2af", 2, S2_SHAPE, 300000.0, 1500000.0, 32633, cloud_share=0.05)
    landsat_c2l2_cogs(root / "l8sa", 3, L8_SHAPE, L8_X0, L8_Y0, L8_CRS, cloud_share=0.97)
    files = {f"{d.name}/{f.name}": f for d in root.iterdir() for f in d.iterdir()}
    return root, files


def _items(srv) -> list[dict]:
    base = srv.url("").rstrip("/")
    eu = stac_item_s2_l2a(EU[0], f"{base}/s2eu", S2_SHAPE, 500000.0, 5600040.0, 32632,
                          datetime="2021-06-14T10:30:31.024000Z", cloud=14.0)
    af = stac_item_s2_l2a(AF[0], f"{base}/s2af", S2_SHAPE, 300000.0, 1500000.0, 32633,
                          datetime="2021-01-20T09:40:11.000000Z", cloud=4.0)
    sa = stac_item_landsat_c2l2(SA[0], f"{base}/l8sa", L8_SHAPE, L8_X0, L8_Y0, L8_CRS, cloud=99.94)
    return [eu, af, sa]


def _recipe(tmp_path, api, **stac):
    r = tmp_path / "stac.yaml"
    r.write_text(yaml.safe_dump({
        "kind": "satellite", "name": "stac-test", "strategy": "global", "samples": 12, "patch_size_px": 96,
        "max_cloud_fraction": 0.3, "stac": {"api": api, "collections": ["sentinel-2-l2a", "landsat-c2-l2"],
                                            "datetime": "2020-01-01T00:00:00Z/2021-12-31T23:59:59Z",
                                            "continents": "all", "scenes_per_continent": 1,
                                            "candidate_patches": 16, **stac}}))
    return r


def test_item_spec_reads_the_item(archive):
    from als_datasets.kinds.satellite.stac_source import item_spec

    item = stac_item_landsat_c2l2(L8_ID, "http://h/x", L8_SHAPE, L8_X0, L8_Y0, L8_CRS)
    spec = item_spec(item, bands=["blue", "green", "red", "nir08", "swir16", "B7"])
    assert list(spec["band_urls"]) == ["B2", "B3", "B4", "B5", "B6", "B7"]
    assert spec["band_urls"]["B4"].endswith("_SR_B4.TIF") and spec["cloud_mask"]["bits"] == [1, 2, 3, 4]
    assert spec["sensor"] == "landsat-8-l2sp" and spec["date"] == "2020-10-31" and spec["nodata"] == 0
    p = spec["product"]
    assert p["cloud_cover"] == 99.94 and p["scale"]["B4"] == pytest.approx(2.75e-5) and p["offset"]["B4"] == -0.2
    s2 = stac_item_s2_l2a(EU[0], "http://h/y", S2_SHAPE, 500000.0, 5600040.0, 32632)
    spec = item_spec(s2)
    assert list(spec["band_urls"])[:4] == ["B1", "B2", "B3", "B4"] and "B10" not in spec["band_urls"]
    assert spec["cloud_mask"]["band"] == "SCL" and spec["product"]["offset"]["B2"] == pytest.approx(-0.1)


def test_stac_build_reads_only_windows_and_matches_local(archive, tmp_path, capsys, monkeypatch):
    import range_server

    from als_datasets.cli import main

    root, files = archive
    ranges = []
    count = range_server._Server.count
    monkeypatch.setattr(range_server._Server, "count", lambda self, n, rng: (ranges.append((n, rng)), count(self, n, rng)))
    with RangeServer(files) as srv:
        with StacServer(_items(srv)) as api:
            recipe = _recipe(tmp_path, api.url, max_cloud_cover=100, candidate_patches=6)
            main(["plan", str(recipe), "--out", str(tmp_path / "plan")])
            out = capsys.readouterr().out
            assert "warning: scene " + L8_ID in out and "nearly all cloud" in out
            before = srv.bytes_sent
            main(["build", str(recipe), "--out", str(tmp_path / "stac"), "-q"])
            fetched = srv.bytes_sent - before
    assert ranges and all(rng is not None for _, rng in ranges)  # ranged reads only, never a whole file
    biggest = max(f.stat().st_size for f in files.values())
    assert max(n for n, _ in ranges) < biggest / 2  # each request a header or a few tiles
    assert fetched > 0
    idx = pd.read_parquet(tmp_path / "stac" / "index.parquet")
    assert set(idx["continent"]) == {"Europe", "Africa"}  # the Landsat scene is all cloud: no patch
    frame = pd.read_parquet(tmp_path / "stac" / "frame.parquet")
    assert frame["cloud_fraction"].notna().all()
    assert (frame.loc[frame["scene"] == L8_ID, "reason"] == "cloud").all()
    info = json.loads((tmp_path / "stac" / "_info.json").read_text())
    eu = info["scenes"][EU[0]]
    assert eu["metadata_source"] == "STAC item" and eu["band_offset"][0] == pytest.approx(-0.1)
    assert eu["dates"] == ["2021-06-14"] and eu["cloud_method"].startswith("mask SCL")
    readme = (tmp_path / "stac" / "README.md").read_text()
    assert "2021-06-14" in readme and "× 0.0001 − 0.1" in readme
    # the same scenes as local folders (the item JSON beside the files) give the same pixels
    for d, item in zip(("s2eu", "s2af"), _items_local(root)):
        (root / d / "item.json").write_text(json.dumps(item))
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump({
        "kind": "satellite", "name": "stac-test", "strategy": "global", "samples": 12, "patch_size_px": 96,
        "max_cloud_fraction": 0.3, "scenes": [{"path": str(root / "s2eu"), "name": EU[0]},
                                              {"path": str(root / "s2af"), "name": AF[0]}]}))
    main(["build", str(local), "--out", str(tmp_path / "local"), "-q"])
    a = _pixels(tmp_path / "stac")
    b = _pixels(tmp_path / "local")
    both = a.keys() & b.keys()  # the archive build scanned 6 candidates per scene, the local one all 16
    assert len(both) >= 3 and all(np.array_equal(a[k], b[k]) for k in both)


def _items_local(root):
    eu = stac_item_s2_l2a(EU[0], str(root / "s2eu"), S2_SHAPE, 500000.0, 5600040.0, 32632,
                          datetime="2021-06-14T10:30:31.024000Z", cloud=14.0)
    af = stac_item_s2_l2a(AF[0], str(root / "s2af"), S2_SHAPE, 300000.0, 1500000.0, 32633,
                          datetime="2021-01-20T09:40:11.000000Z", cloud=4.0)
    return [eu, af]


def _pixels(out) -> dict:
    import io
    import tarfile

    got = {}
    for tar in sorted((out / "webdataset").rglob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".pixels.npy"):
                    got[m.name.split(".")[0]] = np.load(io.BytesIO(t.extractfile(m).read()))
    return got


def test_stac_search_failure_is_one_line(tmp_path):
    from als_datasets.errors import InputError
    from als_datasets.plan import make_plan
    from als_datasets.recipe import load_recipe

    with StacServer([]) as api:
        api.fail_next(50, 503)
        r = load_recipe(_recipe(tmp_path, api.url + "?token=SECRET"), out_dir=tmp_path / "o")
        with pytest.raises(InputError) as e:
            make_plan(r)
    assert "\n" not in str(e.value) and "SECRET" not in str(e.value) and "127.0.0.1" in str(e.value)


@pytest.mark.parametrize("name", ["sentinel2-global.yaml", "sentinel2-continent.yaml"])
def test_shipped_stac_recipes_resolve(name):
    from pathlib import Path

    from als_datasets.recipe import load_recipe

    r = load_recipe(Path(__file__).resolve().parents[1] / "builders" / name, out_dir="/tmp/unused-s2-recipe")
    assert r.kind == "satellite" and not r.scenes and r.stac["api"].startswith("https://earth-search")
    assert r.stac["collections"] == ["sentinel-2-l2a"] and len(r.stac["bands"]) == 10
    assert r.entropy_normalise == "dataset"


def test_stac_recipe_against_the_stub_picks_per_continent(archive, tmp_path):
    """The shipped global recipe's search shape (continents: all, scenes_per_continent) against the stub."""
    from als_datasets.kinds.satellite.stac_source import stac_specs
    from als_datasets.recipe import load_recipe

    root, files = archive
    with RangeServer(files) as srv:
        with StacServer(_items(srv)) as api:
            r = load_recipe(_recipe(tmp_path, api.url, max_cloud_cover=50, bands=["blue", "red", "nir"]),
                            out_dir=tmp_path / "o")
            specs = stac_specs(r)
    assert [s["name"] for s in specs] == [AF[0], EU[0]]  # the Landsat item is over the cloud limit
    assert all(list(s["band_urls"]) == ["B2", "B4", "B8"] for s in specs)


# ---- biomes: one search per biome of the recipe's RESOLVE layer ---------------------------------

#: ecoregion id → (name, biome) of the test layer (the RESOLVE 2017 CSV's columns and spelling)
ECOREGIONS = {10: ("North temperate", "Temperate Broadleaf & Mixed Forests"),
              20: ("South tropical", "Tropical & Subtropical Moist Broadleaf Forests"),
              30: ("Far south ice", "N/A")}


@pytest.fixture(scope="module")
def biome_layer(tmp_path_factory):
    """A 1° global ecoregion-id GeoTIFF and its table: north of the equator one biome (the Europe
    and Africa items), south of it another (the Landsat item), Rock and Ice beyond 60° S."""
    import rasterio
    from rasterio.transform import from_origin

    root = tmp_path_factory.mktemp("biomes")
    lat = 89.5 - np.arange(180)
    ids = np.where(lat > 0, 10, np.where(lat > -60, 20, 30)).astype(np.float32)[:, None].repeat(360, axis=1)
    ids[100:103, 150:153] = 0  # a nodata hole (coast / island)
    with rasterio.open(root / "biomes.tif", "w", driver="GTiff", width=360, height=180, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(-180, 90, 1, 1), nodata=0) as dst:
        dst.write(ids, 1)
    rows = ["id,ecoregion,biome,realm,area"] + [f"{k},{e},{b},Test,1.0" for k, (e, b) in ECOREGIONS.items()]
    (root / "ecoregions.csv").write_text("\n".join(rows) + "\n", encoding="latin-1")
    return {"raster": str(root / "biomes.tif"), "table": str(root / "ecoregions.csv")}


def _biome_specs(tmp_path, archive, layer, **stac):
    from als_datasets.kinds.satellite.stac_source import stac_specs
    from als_datasets.recipe import load_recipe

    root, files = archive
    stac = {"continents": None, "max_cloud_cover": 100, **stac}
    with RangeServer(files) as srv:
        with StacServer(_items(srv)) as api:
            r = _recipe(tmp_path, api.url, **stac)
            data = yaml.safe_load(r.read_text())
            if layer:
                data["biomes"] = layer
            r.write_text(yaml.safe_dump(data))
            return [s["name"] for s in stac_specs(load_recipe(r, out_dir=tmp_path / "o"))]


def test_stac_biomes_pick_per_biome(archive, biome_layer, tmp_path):
    from als_datasets.errors import InputError

    north, south = ECOREGIONS[10][1], ECOREGIONS[20][1]
    # by name and by RESOLVE BIOME_NUM (1: tropical moist), spelling loosely matched
    both = _biome_specs(tmp_path, archive, biome_layer, biomes=["temperate broadleaf and mixed forests", 1],
                        scenes_per_biome=2)
    assert both == [EU[0], AF[0], SA[0]] or both == [AF[0], EU[0], SA[0]]
    assert sorted(_biome_specs(tmp_path, archive, biome_layer, biomes="all", scenes_per_biome=5)) == sorted(
        [EU[0], AF[0], SA[0]])
    # one of the two northern items, the same one for the same seed
    one = _biome_specs(tmp_path, archive, biome_layer, biomes=[north], scenes_per_biome=1)
    assert len(one) == 1 and one[0] in (EU[0], AF[0])
    assert _biome_specs(tmp_path, archive, biome_layer, biomes=[north], scenes_per_biome=1) == one
    assert _biome_specs(tmp_path, archive, biome_layer, biomes=[south]) == [SA[0]]
    # with continents: both quotas, their union; with bbox: each search narrowed to the box
    got = _biome_specs(tmp_path, archive, biome_layer, continents=["South America"], biomes=[south])
    assert got == [SA[0]]
    got = _biome_specs(tmp_path, archive, biome_layer, continents=["Europe"], biomes=[north, south],
                       scenes_per_biome=2)
    assert sorted(got) == sorted([EU[0], AF[0], SA[0]])
    assert _biome_specs(tmp_path, archive, biome_layer, biomes=[north], scenes_per_biome=2,
                        bbox=[0, 40, 20, 60]) == [EU[0]]
    with pytest.raises(InputError) as e:
        _biome_specs(tmp_path, archive, biome_layer, biomes=["Tundra"])
    msg = str(e.value)
    assert "\n" not in msg and "unknown biome 'Tundra'" in msg and north in msg and "(1)" in msg
    with pytest.raises(InputError, match="needs the recipe's biome layer"):
        _biome_specs(tmp_path, archive, None, biomes=[north])
