"""Satellite product metadata (issue 14, item 1): MTL txt / xml, SAFE MTD xml, tileInfo.json,
STAC item beside the files, ODC yaml, file-name fallback; per-band scale / offset, dates, stacks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from sat_products import L8_ID, landsat_c2l2, s2_l2a_safe_mtd, s2_tileinfo, stac_item_s2_l2a

from als_datasets.kinds.satellite.metadata import (
    dates_in,
    from_filename,
    read_product,
)
from als_datasets.registry import get_kind

SHARED = Path(os.environ.get("ALS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SAT = SHARED / "satellite"


def _open(spec: dict):
    return get_kind("satellite").open_scene({"name": "s", **spec})


@pytest.mark.parametrize("mtl", ["txt", "xml"])
def test_landsat_c2l2_mtl(tmp_path, mtl):
    folder = landsat_c2l2(tmp_path / "l8", cloud_cover=99.94, qa=False, mtl=mtl, shape=(96, 96))
    p = read_product(folder)
    assert p["source"] == "Landsat MTL" and p["source_file"].endswith(f"_MTL.{mtl}")
    assert p["product_id"] == L8_ID and p["platform"] == "landsat-8" and p["processing_level"] == "L2SP"
    assert p["dates"] == ["2020-10-31"] and p["cloud_cover"] == pytest.approx(99.94)
    # the Level-2 surface-reflectance rescaling wins over the Level-1 TOA one
    assert p["scale"]["B4"] == pytest.approx(2.75e-5) and p["offset"]["B4"] == pytest.approx(-0.2)
    scene = _open({"path": str(folder)})
    assert scene.sensor == "landsat-8-l2sp" and scene.date == "2020-10-31"
    assert scene.product["band_scale"] == [pytest.approx(2.75e-5)] * 7
    assert scene.product["band_offset"] == [pytest.approx(-0.2)] * 7
    notes = get_kind("satellite").scene_notes(scene)
    assert any("99.94" in n and "nearly all cloud" in n for n in notes)  # flagged before pixels are read


def test_landsat_qa_pixel_is_the_mask(tmp_path):
    folder = landsat_c2l2(tmp_path / "l8", qa=True, shape=(96, 96))
    scene = _open({"path": str(folder)})
    assert scene.cloud_mask is not None and scene.cloud_mask.name == "QA_PIXEL"
    assert scene.cloud_bits == (1, 2, 3, 4) and len(scene.bands) == 7
    assert scene.product["mask"]["bits"] == [1, 2, 3, 4]


def test_sentinel2_safe_and_tileinfo(tmp_path):
    (tmp_path / "safe").mkdir()
    p = read_product(s2_l2a_safe_mtd(tmp_path / "safe" / "MTD_MSIL2A.xml").parent)
    assert p["source"] == "Sentinel-2 SAFE metadata" and p["platform"] == "sentinel-2b"
    assert p["processing_level"] == "L2A" and p["dates"] == ["2020-10-31"] and p["cloud_cover"] == 12.5
    assert p["scale"]["B2"] == pytest.approx(1e-4) and p["offset"]["B8A"] == pytest.approx(-0.1)
    assert p["mask"]["band"] == "SCL"
    (tmp_path / "aws").mkdir()
    q = read_product(s2_tileinfo(tmp_path / "aws" / "tileInfo.json").parent)
    assert q["source"] == "Sentinel-2 tileInfo.json" and q["cloud_cover"] == pytest.approx(37.2)
    assert q["dates"] == ["2020-10-31"] and q["processing_level"] == "L2A" and q["platform"] == "sentinel-2b"


def test_stac_item_beside_the_files(tmp_path):
    folder = tmp_path / "s2"
    folder.mkdir()
    item = stac_item_s2_l2a("S2B_19LCK_20201031_0_L2A", "https://example.invalid/x", (96, 96), 300000.0,
                            8800020.0, 32719, cloud=41.0)
    (folder / "item.json").write_text(json.dumps(item))
    p = read_product(folder)
    assert p["source"] == "STAC item" and p["cloud_cover"] == 41.0 and p["dates"] == ["2020-10-31"]
    assert p["scale"]["B2"] == pytest.approx(1e-4) and p["offset"]["B12"] == pytest.approx(-0.1)
    assert p["processing_level"] == "L2A" and p["mask"]["band"] == "SCL" and p["nodata"] == 0
    assert "B10" not in p["scale"] and "thumbnail" not in p["files"]


def test_file_name_conventions():
    assert from_filename(f"{L8_ID}_SR_B4.TIF")["dates"] == ["2020-10-31"]  # not the processing date
    old = from_filename("LC80200392015216LGN00_B2.TIF")
    assert old["dates"] == ["2015-08-04"] and old["platform"] == "landsat-8"
    s2 = from_filename("S2A_MSIL2A_20200219T112111_N0214_R037_T29RKH_20200219T123947.SAFE")
    assert s2["dates"] == ["2020-02-19"] and s2["processing_level"] == "L2A"
    assert from_filename("S2A_29RKH_20200219_0_L2A")["platform"] == "sentinel-2a"
    assert from_filename("T29RKH_20200219T113421_B02.jp2")["dates"] == ["2020-02-19"]
    assert from_filename("Spain_7370579_S2Hand.tif") is None
    assert dates_in("stack_20200101_2020-06-15.tif") == ["2020-01-01", "2020-06-15"]


def _stack(path: Path, bands: int, descriptions=None):
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(1)
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=bands, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4200000, 10, 10), nodata=0) as ds:
        ds.write(rng.integers(100, 4000, (bands, 96, 96)).astype("uint16"))
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
    return path


def test_multi_date_stack_is_recorded_and_warned(tmp_path, caplog):
    """The issue's 8-band bi-temporal Sentinel-2 stack: it builds, but the scene says so."""
    f = _stack(tmp_path / "s2_stack.tif", 8)
    with caplog.at_level(logging.WARNING, logger="als_datasets"):
        scene = _open({"path": str(f), "sensor": "sentinel-2-l2a"})
    assert any("two acquisitions" in n for n in scene.product["warnings"])
    assert "two acquisitions" in caplog.text
    g = _stack(tmp_path / "s2_20200101_20200615.tif", 8)
    scene = _open({"path": str(g), "sensor": "sentinel-2-l2a"})
    assert scene.product["dates"] == ["2020-01-01", "2020-06-15"]
    assert any("2 acquisition dates" in n for n in scene.product["warnings"])
    desc = ["B2_20200101", "B3_20200101", "B4_20200101", "B8_20200101",
            "B2_20200615", "B3_20200615", "B4_20200615", "B8_20200615"]
    h = _stack(tmp_path / "described.tif", 8, desc)
    scene = _open({"path": str(h), "bands": {f"{d}": i + 1 for i, d in enumerate(desc)}})
    assert scene.product["dates"] == ["2020-01-01", "2020-06-15"]
    assert any("band names repeat" in n for n in scene.product["warnings"])


def test_samples_record_the_product(tmp_path):
    """A build of the issue's Landsat C2 L2 scene records date, scale / offset, cloud cover per sample."""
    from als_datasets.cli import main

    folder = landsat_c2l2(tmp_path / "l8", cloud_share=0.0, cloud_cover=3.5, qa=True, shape=(192, 192))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "satellite", "strategy": "random", "samples": 4,
                                      "scenes": [{"path": str(folder), "name": "l8"}]}))
    main(["build", str(recipe), "--out", str(tmp_path / "out"), "-q"])
    import pyarrow.parquet as pq

    rows = pq.read_table(next((tmp_path / "out" / "parquet").rglob("*.parquet"))).to_pylist()
    meta = rows[0]["json"]
    assert meta["date"] == "2020-10-31" and meta["dates"] == ["2020-10-31"] and meta["sensor"] == "landsat-8-l2sp"
    assert meta["band_scale"][0] == pytest.approx(2.75e-5) and meta["band_offset"][0] == pytest.approx(-0.2)
    assert meta["scene_cloud_cover"] == pytest.approx(3.5) and meta["metadata_source"] == "Landsat MTL"
    assert meta["cloud_fraction"] is not None and meta["cloud_method"].startswith("mask QA_PIXEL")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "2020-10-31" in readme and "× 2.75e-05 − 0.2" in readme and "QA_PIXEL" in readme


@pytest.mark.skipif(not SAT.is_dir(), reason="../shared/data/satellite not present")
def test_real_scenes_metadata():
    alabama = read_product(SAT / "northamerica_alabama_l8oli_LC80200392015216LGN00")
    assert alabama["cloud_cover"] == pytest.approx(11.08) and alabama["dates"] == ["2015-08-04"]
    assert alabama["processing_level"] == "L1T" and alabama["scale"]["B1"] == pytest.approx(2e-5)
    sahara = read_product(SAT / "africa_sahara_s2l2a_S2A_29RKH_20200219")
    assert sahara["source"] == "STAC item" and sahara["cloud_cover"] == pytest.approx(4.051854)
    assert sahara["scale"]["B2"] == pytest.approx(1e-4) and sahara["offset"]["B2"] == 0.0
    canberra = read_product(SAT / "oceania_canberra_ls5tm_nbar_19920323")
    assert canberra["dates"] == ["1992-03-23"] and canberra["source"] == "Open Data Cube metadata"
    guangdong = read_product(SAT / "asia_guangdong_l8oli_LC81210442015044LGN00")
    assert guangdong["source"] == "file name" and guangdong["dates"] == ["2015-02-13"]
