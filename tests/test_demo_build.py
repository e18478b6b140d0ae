"""End to end on the embedded demo: CLI build (geospatial and random), the output contract,
loading with `datasets` and `webdataset`, the strategies' stratum distributions, `plan`."""

from __future__ import annotations

import json
from collections import Counter

import geopandas as gpd
import numpy as np
import pytest
import webdataset as wds

from als_datasets.cli import main
from als_datasets.dataset.layout import validate
from als_datasets.plan import make_plan
from als_datasets.recipe import load_recipe

FRAME_COLS = {"tile_id", "project", "col", "row", "geometry", "crs", "x0", "y0", "landcover", "slope_class",
              "class_fraction", "slope_mean_deg", "eligible", "weight", "draw_rank", "selected"}


@pytest.fixture(scope="module")
def builds(tmp_path_factory, demo_recipe):
    root = tmp_path_factory.mktemp("demo-builds")
    main(["build", "--strategy", "geospatial", "--out", str(root / "geo"), "-q", "--workers", "2"])
    main(["build", "--strategy", "random", "--out", str(root / "rnd"), "-q"])
    return root / "geo", root / "rnd"


def _entropy(counts) -> float:
    p = np.array(list(counts.values()), float)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def test_output_layout(builds):
    geo, _ = builds
    for name in ["README.md", "recipe.yaml", "manifest.json", "_info.json", "index.parquet", "frame.parquet"]:
        assert (geo / name).is_file(), name
    manifest = json.loads((geo / "manifest.json").read_text())
    info = json.loads((geo / "_info.json").read_text())
    assert validate(geo) == []
    assert info["splits"]["train"]["num_samples"] == 30 == manifest["splits"]["train"]
    assert sum(info["splits"]["train"]["shard_lengths"]) == 30
    assert {e["format"] for e in manifest["shards"]} == {"webdataset", "parquet"}
    assert not list(geo.rglob(".build")) and not list(geo.rglob(".*.tmp-*"))
    frame = gpd.read_parquet(geo / "frame.parquet")
    assert FRAME_COLS <= set(frame.columns)
    assert frame.crs.to_epsg() == 4326 and len(frame) > 30
    assert frame["selected"].sum() == 30
    index = gpd.read_parquet(geo / "index.parquet")
    assert len(index) == 30 and set(index["key"]) == set(frame.loc[frame["selected"], "tile_id"])
    assert all("." not in k for k in index["key"])


def test_load_dataset_both_configs_and_webdataset(builds):
    from datasets import load_dataset

    from als_datasets.dataset.card import load_config

    geo, _ = builds
    pq = load_dataset(str(geo), split="train")
    wd = load_config(geo, "webdataset", split="train")
    assert len(pq) == len(wd) == 30
    assert pq.features == wd.features
    by_key = {r["__key__"]: r for r in wd}
    for row in pq:
        other = by_key[row["__key__"]]
        assert row["json"] == other["json"]
        for name in ("xyz.npy", "intensity.npy", "classification.npy"):
            assert np.array_equal(np.asarray(row[name]), np.asarray(other[name]))
    tars = sorted(str(p) for p in (geo / "webdataset" / "train").glob("*.tar"))
    raw = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert sorted(s["__key__"] for s in raw) == sorted(by_key)
    s = raw[0]
    assert s["xyz.npy"].dtype == np.float32 and s["intensity.npy"].dtype == np.uint16
    assert s["classification.npy"].dtype == np.uint8
    assert not np.isin(s["classification.npy"], [7, 18]).any()
    assert s["xyz.npy"][:, :2].min() >= 0 and s["xyz.npy"][:, :2].max() <= 500
    assert s["json"]["point_count"] == len(s["xyz.npy"]) > 1000
    # height entropy above the demo's ground returns (class 2), and every sample says so
    assert {r["json"]["height_reference"] for r in raw} == {"ground"} == set(pq["json"][i]["height_reference"]
                                                                             for i in range(len(pq)))
    streamed = load_dataset(str(geo), split="train", streaming=True)
    assert sum(1 for _ in streamed) == 30


def test_geospatial_flatter_than_random(builds):
    geo, rnd = builds
    strata = {}
    for name, out in (("geo", geo), ("rnd", rnd)):
        strata[name] = Counter(gpd.read_parquet(out / "index.parquet")["stratum"])
    assert _entropy(strata["geo"]) > _entropy(strata["rnd"])
    # both draw from the same frame and eligibility
    fg = gpd.read_parquet(geo / "frame.parquet")
    fr = gpd.read_parquet(rnd / "frame.parquet")
    assert fg["tile_id"].tolist() == fr["tile_id"].tolist()
    assert fg["eligible"].tolist() == fr["eligible"].tolist()


def test_nested_subsets(demo_recipe):
    sets = {}
    for n in (5, 10, 20, 40):
        plan = make_plan(load_recipe(demo_recipe, overrides={"samples_per_project": n}))
        sets[n] = set(plan.selected["tile_id"])
        per = plan.selected.groupby("project").size()
        eligible = plan.frame[plan.frame["eligible"]].groupby("project").size()
        assert (per == np.minimum(n, eligible)).all()
    assert sets[5] <= sets[10] <= sets[20] <= sets[40]


def test_plan_reads_no_point_cloud(tmp_path, demo_recipe, monkeypatch, capsys):
    import als_datasets.kinds.als.sources.pointcloud as pc

    def boom(*a, **k):
        raise AssertionError("plan read points")

    monkeypatch.setattr(pc, "iter_point_chunks", boom)
    main(["plan", str(demo_recipe), "--out", str(tmp_path / "p"), "-q"])
    frame = gpd.read_parquet(tmp_path / "p" / "frame.parquet")
    assert FRAME_COLS <= set(frame.columns)
    assert "selected" in capsys.readouterr().out
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_slope_mask_other_variant(demo_recipe):
    """The paper's variant blanks DEM pixels of "other" land cover before the slope."""
    base = make_plan(load_recipe(demo_recipe)).frame
    masked = make_plan(load_recipe(demo_recipe, overrides={"slope_mask_other": True})).frame
    assert base["tile_id"].tolist() == masked["tile_id"].tolist()
    differs = ~np.isclose(base["slope_mean_deg"].fillna(-1), masked["slope_mean_deg"].fillna(-1))
    assert differs.any()
    # tiles with no "other" pixel and no "other" neighbour keep the same slope statistics
    assert (~differs).any()


def test_report_card_and_croissant(builds, tmp_path, capsys):
    from datasets import load_dataset

    from als_datasets.dataset.card import declared_configs, read_card_yaml

    geo, rnd = builds
    div = json.loads((geo / "report" / "diversity.json").read_text())
    card = (geo / "README.md").read_text()
    # the card's numbers are the report's numbers
    assert f"{div['labels']['stratum']['entropy']:.3f}" in card
    assert "Limitations" in card and "2501.05095" in card and "synthetic demo" in card
    meta = read_card_yaml(geo)
    for key in ("license", "pretty_name", "tags", "size_categories", "task_categories", "configs", "dataset_info"):
        assert key in meta, key
    configs = declared_configs(meta)
    assert set(configs) == {"default"}  # the tars are described in the text, not declared (DESIGN §4)
    ds = load_dataset(str(geo), split="train")
    assert configs["default"]["features"] == ds.features
    assert configs["default"]["splits"] == {"train": len(ds)}
    for png in ("footprints.png", "labels.png", "entropy.png"):
        p = geo / "report" / png
        assert p.is_file() and p.stat().st_size > 5000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"report/{png}" in card
    # normalised by the frame's strata; height entropy described as above ground
    assert div["labels"]["stratum"]["K_frame"] == div["coverage"]["strata_in_frame"]
    assert "H / ln K frame" in card and "*above ground*" in card and "30 of 30 tiles" in card
    index = gpd.read_parquet(geo / "index.parquet")
    assert set(index["height_reference"]) == {"ground"}
    cro = json.loads((geo / "croissant.json").read_text())
    assert "EPSG:32610" in json.dumps(cro)
    # the report command re-renders the same files and compares builds
    before = {p: p.read_bytes() for p in (geo / "report").iterdir()}
    main(["report", str(geo), str(rnd), "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr().out
    assert "stratum" in out and "difference from geo" in out
    assert {p: p.read_bytes() for p in (geo / "report").iterdir()} == before
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["table"]
    assert table[0]["stratum_entropy"] > table[1]["stratum_entropy"]
    assert (tmp_path / "cmp" / "comparison_stratum_entropy.png").is_file()


def test_card_template_ships_in_wheel(tmp_path):
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(root)], check=True)
    (whl,) = tmp_path.glob("als_datasets-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "als_datasets/cards/als_dataset_card.md" in names
    # every module of the package is in the wheel (the package list in pyproject.toml is explicit)
    modules = {p.relative_to(root).as_posix() for p in (root / "als_datasets").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))
