"""Cloud screening of every satellite patch (issue 14, item 2): mask bands (SCL classes, Landsat
QA_PIXEL bits) and, without one, the pixel test; cloud_fraction never null for an eligible patch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sat_products import QA_CLOUD, QA_SHADOW, landsat_c2l2, scene_reflectance

from als_datasets.kinds.raster.scenes import cloud_pixels, read_cloud, read_patches
from als_datasets.kinds.satellite.clouds import pixel_cloud, screen_setup
from als_datasets.registry import get_kind

OLI_COMMON = ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"]


def test_qa_pixel_bits():
    from types import SimpleNamespace

    s = SimpleNamespace(cloud_bits=(1, 2, 3, 4), cloud_classes=())
    qa = np.array([1 << 6, QA_CLOUD, QA_SHADOW, 1 << 2, 1 << 1, 1, 1 << 7, (1 << 5) | (1 << 6)], dtype=np.uint16)
    assert cloud_pixels(qa, s).tolist() == [False, True, True, True, True, False, False, False]  # fill, water, snow: no


def test_pixel_test_finds_thick_cloud():
    refl, cloud, shadow = scene_reflectance(3, (192, 192), cloud_share=0.3)
    dn = np.round((refl + 0.2) / 2.75e-5).astype(np.uint16)[None]
    setup = screen_setup(OLI_COMMON, [2.75e-5] * 7, [-0.2] * 7, "landsat-8-l2sp", "uint16", "L2SP")
    got = pixel_cloud(dn, np.ones((1, 192, 192), bool), setup)[0]
    recall = got[cloud].mean()
    false_alarm = got[~cloud].mean()
    assert recall > 0.95 and false_alarm < 0.01
    # without metadata the Landsat-8 L2 convention is assumed, with the same answer
    assumed = screen_setup(OLI_COMMON, [None] * 7, [None] * 7, "landsat-8-l2sp", "uint16", "L2SP")
    assert "assumed" in assumed["scaling"]
    np.testing.assert_array_equal(pixel_cloud(dn, np.ones((1, 192, 192), bool), assumed)[0], got)
    # invalid pixels are never cloud
    valid = np.zeros((1, 192, 192), bool)
    assert not pixel_cloud(dn, valid, setup).any()


def test_mask_and_test_agree_on_a_landsat_scene(tmp_path):
    folder = landsat_c2l2(tmp_path / "l8", seed=4, cloud_share=0.25, qa=True, shape=(192, 192))
    kind = get_kind("satellite")
    scene = kind.open_scene({"name": "l8", "path": str(folder)})
    cells = [(c, r) for r in range(2) for c in range(2)]
    pix, valid = read_patches(scene, cells, 96)
    mask = read_cloud(scene, cells, 96)
    assert kind.pixel_cloud(scene, pix, valid) is None  # the mask wins
    setup = screen_setup(OLI_COMMON, scene.product["band_scale"], scene.product["band_offset"], scene.sensor,
                         scene.dtype, "L2SP")
    test = pixel_cloud(pix, valid, setup)
    import rasterio

    with rasterio.open(scene.cloud_mask.path) as ds:
        qa = ds.read(1)
    qa = np.stack([qa[r * 96:(r + 1) * 96, c * 96:(c + 1) * 96] for c, r in cells])
    thick = (qa & (1 << 3)) != 0  # cloud bit only: the mask also flags shadows, which the test does not look for
    assert mask[thick].all() and mask.sum() > thick.sum()
    assert test[thick].mean() > 0.95 and test[~mask].mean() < 0.01


def _recipe(tmp_path, scenes, **kw):
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump({"kind": "satellite", "strategy": "random", "samples": 50, "scenes": scenes, **kw}))
    return r


def test_issue_scene_without_qa_is_screened_and_flagged(tmp_path, capsys):
    """The issue's Landsat C2 L2 scene: SR_B*.TIF + MTL saying CLOUD_COVER 99.94, no QA band."""
    from als_datasets.cli import main

    cloudy = landsat_c2l2(tmp_path / "cloudy", seed=1, cloud_share=1.0, cloud_cover=99.94, qa=False,
                          shape=(192, 288))
    clear = landsat_c2l2(tmp_path / "clear", seed=2, cloud_share=0.0, cloud_cover=0.5, qa=False, shape=(192, 192))
    recipe = _recipe(tmp_path, [{"path": str(cloudy), "name": "cloudy"}, {"path": str(clear), "name": "clear"}],
                     max_overlap=1.0)
    main(["plan", str(recipe), "--out", str(tmp_path / "plan")])
    text = capsys.readouterr().out
    assert "warning: scene cloudy" in text and "99.94" in text and "nearly all cloud" in text
    frame = pd.read_parquet(tmp_path / "plan" / "frame.parquet")
    assert frame["cloud_fraction"].notna().all()
    cl = frame[frame["scene"] == "cloudy"]
    assert (cl["cloud_fraction"] > 0.9).all() and not cl["eligible"].any() and set(cl["reason"]) == {"cloud"}
    assert frame.loc[frame["scene"] == "clear", "eligible"].all()
    assert frame.loc[frame["eligible"], "date"].eq("2020-10-31").all()


def test_cloud_fraction_never_null_in_samples(tmp_path):
    from als_datasets.cli import main

    folder = landsat_c2l2(tmp_path / "l8", seed=6, cloud_share=0.15, qa=False, shape=(288, 288))
    recipe = _recipe(tmp_path, [{"path": str(folder), "name": "l8"}], max_cloud_fraction=0.05)
    main(["build", str(recipe), "--out", str(tmp_path / "out"), "-q"])
    idx = pd.read_parquet(tmp_path / "out" / "index.parquet")
    assert len(idx) > 0 and idx["cloud_fraction"].notna().all() and (idx["cloud_fraction"] <= 0.05).all()
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "pixel test" in readme


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_pixel_test_recall_on_synthetic_scenes(share):
    refl, cloud, _ = scene_reflectance(11, (96, 96), cloud_share=share)
    dn = np.round(refl * 10000).astype(np.uint16)[None]
    s2 = ["coastal", "blue", "green", "red", "nir", "swir16", "swir22"]
    got = pixel_cloud(dn, np.ones((1, 96, 96), bool), screen_setup(s2, [None] * 7, [None] * 7, "sentinel-2-l2a",
                                                                  "uint16", "L2A"))[0]
    assert got[~cloud].mean() < 0.01
    if share:
        assert got[cloud].mean() > 0.95
