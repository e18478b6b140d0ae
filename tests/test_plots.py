"""Report plots: each function writes a real PNG, for ALS-like and satellite-like indexes."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from als_datasets.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TILE = 0.0065  # ~500 m in degrees of longitude at 45 N


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"


def _frame_and_index(origins, per_project=4, seed=0):
    """A frame of 5x4 candidate tiles per project and an index of the first draws."""
    rng = np.random.default_rng(seed)
    frame_rows = []
    for project, (lon0, lat0) in origins.items():
        for c in range(5):
            for r in range(4):
                lc = ["forest", "developed", "other"][(c + r) % 3]
                x, y = lon0 + c * TILE, lat0 + r * TILE * 0.7
                frame_rows.append(dict(
                    tile_id=f"{project}_c{c}_r{r}", project=project, landcover=lc,
                    slope_class=["flat", "sloped", "steep"][(c * r) % 3], eligible=lc != "other",
                    geometry=box(x, y, x + TILE, y + TILE * 0.7),
                ))
    frame = gpd.GeoDataFrame(frame_rows, crs="EPSG:4326")
    frame["selected"] = False
    frame["draw_rank"] = -1
    parts = []
    for _project, g in frame[frame.eligible].groupby("project"):
        pick = g.sample(per_project, random_state=seed)
        frame.loc[pick.index, "selected"] = True
        frame.loc[pick.index, "draw_rank"] = range(per_project)
        parts.append(pick)
    index = gpd.GeoDataFrame(pd.concat(parts), crs="EPSG:4326").reset_index(drop=True)
    index["key"] = index["tile_id"]
    index["stratum"] = index["landcover"] + "/" + index["slope_class"]
    index["height_entropy"] = rng.normal(3.5, 0.5, len(index))
    index["intensity_entropy"] = rng.normal(5.0, 0.2, len(index))
    b = index.geometry.bounds
    index["lon"], index["lat"] = (b.minx + b.maxx) / 2, (b.miny + b.maxy) / 2
    return index, frame


@pytest.fixture
def als():
    return _frame_and_index({"proj-a": (-122.42, 45.52), "proj-b": (-122.33, 45.50)})


@pytest.fixture
def satellite():
    rng = np.random.default_rng(1)
    scenes = {
        "T32TQM": (11.0, 45.0, "Europe", "Temperate Broadleaf & Mixed Forests"),
        "T36MZE": (36.5, -3.0, "Africa", "Tropical & Subtropical Grasslands, Savannas & Shrublands"),
        "T18SUJ": (-77.0, 38.5, "North America", "Temperate Conifer Forests"),
    }
    rows = []
    for scene, (lon, lat, continent, biome) in scenes.items():
        for i in range(8):
            x, y = lon + rng.uniform(0, 0.5), lat + rng.uniform(0, 0.5)
            rows.append(dict(
                key=f"{scene}_c{i}_r0", scene=scene, continent=continent, biome=biome,
                landcover=["tree cover", "cropland"][i % 2], spectral_entropy=rng.normal(4.5, 0.3),
                lon=x + 0.004, lat=y + 0.004, geometry=box(x, y, x + 0.008, y + 0.008),
            ))
    return gpd.GeoDataFrame(rows, crs="EPSG:4326")


def test_import_does_not_pull_in_pyplot():
    code = (
        "import sys, als_datasets.report.plots\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported at module import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_footprints_single_panel(als, tmp_path):
    index, frame = als
    out = plots.plot_footprints(index, frame, tmp_path / "fp.png", title="ALS test")
    assert out == tmp_path / "fp.png"
    assert_png(out)


def test_footprints_far_apart_projects_and_missing_colour_column(tmp_path):
    index, frame = _frame_and_index({"west": (-122.4, 45.5), "east": (-75.0, 40.0), "south": (-60.0, -10.0)})
    assert_png(plots.plot_footprints(index, frame, tmp_path / "fp.png", color_by="landcover"))
    # an unknown colour column falls back to a label that exists; no frame is fine
    assert_png(plots.plot_footprints(index, None, tmp_path / "fp2.png", color_by="nope"))


def test_footprints_reprojects_non_wgs84(als, tmp_path):
    index, frame = als
    assert_png(plots.plot_footprints(index.to_crs("EPSG:32610"), frame.to_crs("EPSG:32610"), tmp_path / "fp.png"))


def test_label_bars(als, tmp_path):
    index, frame = als
    assert_png(plots.plot_label_bars(index, frame, tmp_path / "labels.png"))
    # frame without a stratum column gets one derived; explicit columns honoured
    assert "stratum" not in frame.columns
    assert_png(plots.plot_label_bars(index, frame, tmp_path / "labels2.png", columns=("stratum",)))
    # sample only
    assert_png(plots.plot_label_bars(index, None, tmp_path / "labels3.png"))


def test_entropy_hist(als, tmp_path):
    index, _ = als
    assert_png(plots.plot_entropy_hist(index, tmp_path / "entropy.png"))
    assert plots.plot_entropy_hist(index.drop(columns=["height_entropy", "intensity_entropy"]),
                                   tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_satellite_like_index(satellite, tmp_path):
    assert "slope_class" not in satellite.columns
    assert_png(plots.plot_footprints(satellite, None, tmp_path / "fp.png"))
    assert_png(plots.plot_footprints(satellite, None, tmp_path / "fp_c.png", color_by="continent"))
    assert_png(plots.plot_label_bars(satellite, None, tmp_path / "labels.png"))
    assert_png(plots.plot_entropy_hist(satellite, tmp_path / "entropy.png"))
    written = plots.write_plots(tmp_path / "build", index=satellite)
    assert [p.name for p in written] == ["footprints.png", "labels.png", "entropy.png"]
    for p in written:
        assert_png(p)


def _comparison_table(xs):
    rows = []
    for strategy, base in (("geospatial", 1.7), ("random", 1.4)):
        for n in xs:
            rows.append(dict(
                label=f"{strategy[:3]}-{n}", strategy=strategy, samples_per_project=n, num_samples=3 * n,
                stratum_entropy=base - 0.5 / n, landcover_entropy=0.69 - 0.1 / n, strata_coverage=min(1.0, n / 12),
                height_entropy_mean=3.5,
            ))
    return pd.DataFrame(rows)


def test_comparison_curves(tmp_path):
    table = _comparison_table([5, 10, 20, 40])
    assert_png(plots.plot_comparison(table, tmp_path / "cmp.png"))
    assert_png(plots.plot_comparison(table, tmp_path / "cmp_multi.png",
                                     metric=["stratum_entropy", "strata_coverage", "height_entropy_mean"]))


def test_comparison_bars_when_x_is_constant(tmp_path):
    table = _comparison_table([10])
    table = pd.concat([table, pd.DataFrame([dict(label="europe-10", strategy="continent:Europe",
                                                 samples_per_project=10, num_samples=30,
                                                 stratum_entropy=1.1)])], ignore_index=True)
    assert_png(plots.plot_comparison(table, tmp_path / "bars.png"))
    # and with no x column at all
    assert_png(plots.plot_comparison(table.drop(columns=["samples_per_project"]), tmp_path / "bars2.png"))
    with pytest.raises(ValueError, match="not_a_metric"):
        plots.plot_comparison(table, tmp_path / "bad.png", metric="not_a_metric")


def test_write_plots_reads_build_folder(als, tmp_path):
    index, frame = als
    index.to_parquet(tmp_path / "index.parquet")
    frame.to_parquet(tmp_path / "frame.parquet")
    written = plots.write_plots(tmp_path)
    assert [p.name for p in written] == ["footprints.png", "labels.png", "entropy.png"]
    for p in written:
        assert p.parent == tmp_path / "report"
        assert_png(p)


def test_output_is_deterministic(als, tmp_path):
    index, frame = als
    a = plots.plot_label_bars(index, frame, tmp_path / "a.png").read_bytes()
    b = plots.plot_label_bars(index, frame, tmp_path / "b.png").read_bytes()
    assert a == b


def test_category_colours_stable_and_distinct():
    one = plots.category_colors(["forest/flat", "developed/steep", "geospatial", "random"])
    two = plots.category_colors(["random", "forest/flat", "other/flat", "zzz"])
    assert one["forest/flat"] == two["forest/flat"] and one["random"] == two["random"]
    many = plots.category_colors([f"biome {i}" for i in range(14)] + ["geospatial", "continent:Europe"])
    assert len(set(many.values())) == len(many)
