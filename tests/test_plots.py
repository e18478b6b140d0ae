"""Report plots: each function writes a real PNG, for ALS-like and satellite-like indexes, and
draws what it says: the tests capture the private Figure before it is saved (the modules look up
``_save`` by name) and check its artists against the data: bar lengths against the label
proportions, histogram counts against the samples, map limits against the footprints, legend
entries against the categories, comparison bars and curves against the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from als_datasets.report import plots
from als_datasets.report.plots import charts, footprints, style

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


# ------------------------------------------------------------------------- capturing the figures
@pytest.fixture
def drawn(monkeypatch):
    """File name → the Figure saved under it (the PNG is still written by the real ``_save``)."""
    figs: dict[str, object] = {}
    real = style._save

    def capture(fig, path):
        out = real(fig, path)
        figs[Path(path).name] = fig
        return out

    for mod in (charts, footprints):
        assert hasattr(mod, "_save"), f"{mod.__name__} no longer saves through _save: update this fixture"
        monkeypatch.setattr(mod, "_save", capture)
    return figs


def _rgba(c):
    from matplotlib.colors import to_rgba

    return np.round(np.asarray(to_rgba(c), dtype=float), 4)


def _legend_texts(fig):
    assert len(fig.legends) == 1, "expected one figure legend"
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _used_axes(fig):
    return [ax for ax in fig.axes if ax.axison]


def _bars_by_tick(ax, container):
    """{tick label: bar length} for horizontal bars, matched to the y tick nearest the bar centre."""
    ticks = np.asarray(ax.get_yticks(), dtype=float)
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert len(names) == len(ticks) and all(names)
    out = {}
    for bar in container:
        yc = bar.get_y() + bar.get_height() / 2
        i = int(np.argmin(np.abs(ticks - yc)))
        assert abs(ticks[i] - yc) < 0.5
        assert names[i] not in out, f"two bars of one kind on tick {names[i]!r}"
        out[names[i]] = (bar.get_width(), _rgba(bar.get_facecolor()))
    return out


def _proportions(df, col):
    return df[col].astype(str).value_counts(normalize=True).to_dict()


def _polys(ax):
    from matplotlib.collections import PolyCollection

    cols = [c for c in ax.collections if isinstance(c, PolyCollection)]
    return {c.get_zorder(): c for c in cols}  # frame outlines zorder 1, samples zorder 2


def _vertex_bounds(coll):
    v = np.vstack([p.vertices for p in coll.get_paths()])
    return v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()


def _assert_limits_cover(ax, bounds, slack=5.0):
    """The axes' final limits contain ``bounds`` and are not absurdly larger (a blank (0, 1) axis,
    or metres instead of degrees, fail)."""
    x0, y0, x1, y1 = bounds
    (lx0, lx1), (ly0, ly1) = ax.get_xlim(), ax.get_ylim()
    assert lx0 <= x0 and lx1 >= x1 and ly0 <= y0 and ly1 >= y1, ((lx0, lx1, ly0, ly1), bounds)
    span = max(x1 - x0, y1 - y0)
    assert (lx1 - lx0) <= slack * span + 1e-9 and (ly1 - ly0) <= slack * span + 1e-9, ((lx0, lx1, ly0, ly1), bounds)


def _assert_samples_drawn(ax, index, color_by):
    """The sample polygons: one per sample, in index order, filled with the category colour."""
    polys = _polys(ax)
    samples = polys[2]
    assert len(samples.get_paths()) == len(index)
    assert np.allclose(_vertex_bounds(samples), index.total_bounds, atol=1e-6)
    colors = plots.category_colors(index[color_by].astype(str).unique())
    want = np.array([_rgba(colors[c]) for c in index[color_by].astype(str)])
    assert np.allclose(np.round(samples.get_facecolors(), 4), want)
    return polys


# ----------------------------------------------------------------------------------- footprints
def test_footprints_single_panel(als, tmp_path, drawn):
    index, frame = als
    out = plots.plot_footprints(index, frame, tmp_path / "fp.png", title="ALS test")
    assert out == tmp_path / "fp.png"
    assert_png(out)
    fig = drawn["fp.png"]
    axes = _used_axes(fig)
    assert len(axes) == 1  # two projects 0.1 degree apart share one panel
    ax = axes[0]
    polys = _assert_samples_drawn(ax, index, "stratum")
    # every candidate tile outlined, the eligible ones (and only those) filled
    cand = polys[1]
    assert len(cand.get_paths()) == len(frame)
    assert np.allclose(_vertex_bounds(cand), frame.total_bounds, atol=1e-6)
    filled = cand.get_facecolors()[:, 3] > 0
    assert filled.tolist() == frame["eligible"].tolist()
    lo = np.minimum(index.total_bounds[:2], frame.total_bounds[:2])
    hi = np.maximum(index.total_bounds[2:], frame.total_bounds[2:])
    _assert_limits_cover(ax, (*lo, *hi))
    counts = index["stratum"].value_counts()
    assert _legend_texts(fig) == [f"{c} ({counts[c]})" for c in sorted(counts.index)] + [
        "candidate tile", "eligible candidate"]
    assert fig.legends[0].get_title().get_text() == "stratum (samples)"
    assert fig.get_suptitle() == "ALS test"
    # project names written above their tiles
    texts = {t.get_text() for t in ax.texts}
    assert {"proj-a", "proj-b"} <= texts


def test_footprints_far_apart_projects_and_missing_colour_column(tmp_path, drawn):
    origins = {"west": (-122.4, 45.5), "east": (-75.0, 40.0), "south": (-60.0, -10.0)}
    index, frame = _frame_and_index(origins)
    assert_png(plots.plot_footprints(index, frame, tmp_path / "fp.png", color_by="landcover"))
    fig = drawn["fp.png"]
    axes = _used_axes(fig)
    assert len(axes) == 3  # one panel per project
    by_title = {ax.get_title(): ax for ax in axes}
    assert set(by_title) == set(origins)
    for name, ax in by_title.items():
        sub, subf = index[index["project"] == name], frame[frame["project"] == name]
        _assert_samples_drawn(ax, sub, "landcover")
        assert len(_polys(ax)[1].get_paths()) == len(subf)
        _assert_limits_cover(ax, subf.total_bounds)
        # the panel shows its own project, not the others (thousands of km away)
        (lx0, lx1) = ax.get_xlim()
        assert lx1 - lx0 < 1.0
    counts = index["landcover"].value_counts()
    assert _legend_texts(fig)[:len(counts)] == [f"{c} ({counts[c]})" for c in sorted(counts.index)]
    assert fig.legends[0].get_title().get_text() == "land cover (samples)"

    # an unknown colour column falls back to a label that exists; no frame is fine
    assert_png(plots.plot_footprints(index, None, tmp_path / "fp2.png", color_by="nope"))
    fig = drawn["fp2.png"]
    texts = _legend_texts(fig)
    assert "candidate tile" not in texts and "eligible candidate" not in texts
    used = [c for c in ("landcover", "slope_class", "stratum")
            if sorted(texts) == sorted(f"{k} ({v})" for k, v in index[c].value_counts().items())]
    assert len(used) == 1, texts
    for ax in _used_axes(fig):
        polys = _polys(ax)
        assert set(polys) == {2}  # samples only
        _assert_samples_drawn(ax, index[index["project"] == ax.get_title()], used[0])


def test_footprints_reprojects_non_wgs84(als, tmp_path, drawn):
    index, frame = als
    assert_png(plots.plot_footprints(index.to_crs("EPSG:32610"), frame.to_crs("EPSG:32610"), tmp_path / "fp.png"))
    ax, = _used_axes(drawn["fp.png"])
    polys = _polys(ax)
    # drawn in lon/lat (degrees), back where the tiles are, not in UTM metres
    assert np.allclose(_vertex_bounds(polys[2]), index.total_bounds, atol=1e-6)
    assert np.allclose(_vertex_bounds(polys[1]), frame.total_bounds, atol=1e-6)
    _assert_limits_cover(ax, frame.total_bounds)


# ----------------------------------------------------------------------------------- label bars
def _check_label_axes(fig, index, ref, columns):
    """One axes per column (y label = the column); per category a sample bar whose length is the
    category's share of the sample and, with a frame, a second (hatched) bar with its share of
    the eligible frame; both in the category's colour; categories = union of both."""
    pretty = {"landcover": "land cover", "slope_class": "slope class", "stratum": "stratum",
              "continent": "continent", "biome": "biome"}
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == [pretty[c] for c in columns]
    for ax, col in zip(axes, columns):
        s = _proportions(index, col)
        f = _proportions(ref, col) if ref is not None else {}
        cats = sorted(set(s) | set(f))
        assert len(ax.containers) == (2 if ref is not None else 1)
        assert len(ax.patches) == len(cats) * len(ax.containers)
        colors = plots.category_colors(cats)
        sample = _bars_by_tick(ax, ax.containers[0])
        assert set(sample) == set(cats)
        for c in cats:
            width, face = sample[c]
            assert width == pytest.approx(s.get(c, 0.0)), (col, c)
            assert np.allclose(face, _rgba(colors[c]))
        assert sum(w for w, _ in sample.values()) == pytest.approx(1.0)
        if ref is not None:
            frame_bars = _bars_by_tick(ax, ax.containers[1])
            assert set(frame_bars) == set(cats)
            for c in cats:
                assert frame_bars[c][0] == pytest.approx(f.get(c, 0.0)), (col, c)
                assert all(b.get_hatch() == "///" for b in ax.containers[1])
        # the x axis shows the longest bar
        longest = max(list(s.values()) + list(f.values()))
        assert ax.get_xlim()[1] >= longest


def test_label_bars(als, tmp_path, drawn):
    index, frame = als
    eligible = frame[frame["eligible"]].assign(stratum=lambda d: d["landcover"] + "/" + d["slope_class"])
    assert_png(plots.plot_label_bars(index, frame, tmp_path / "labels.png"))
    fig = drawn["labels.png"]
    _check_label_axes(fig, index, eligible, ("landcover", "slope_class", "stratum"))
    assert _legend_texts(fig) == [f"sample (n={len(index)})", f"eligible frame (n={len(eligible)})"]
    # frame without a stratum column gets one derived; explicit columns honoured
    assert "stratum" not in frame.columns
    assert_png(plots.plot_label_bars(index, frame, tmp_path / "labels2.png", columns=("stratum",)))
    _check_label_axes(drawn["labels2.png"], index, eligible, ("stratum",))
    # sample only
    assert_png(plots.plot_label_bars(index, None, tmp_path / "labels3.png"))
    fig = drawn["labels3.png"]
    _check_label_axes(fig, index, None, ("landcover", "slope_class", "stratum"))
    assert _legend_texts(fig) == [f"sample (n={len(index)})"]


def test_label_bars_frame_category_absent_from_sample(als, tmp_path, drawn):
    """A stratum of the eligible frame that no sample has gets a zero-length sample bar."""
    index, frame = als
    eligible = frame[frame["eligible"]].assign(stratum=lambda d: d["landcover"] + "/" + d["slope_class"])
    keep = index["stratum"] != index["stratum"].iloc[0]
    dropped = index["stratum"].iloc[0]
    plots.plot_label_bars(index[keep], frame, tmp_path / "labels.png", columns=("stratum",))
    ax, = drawn["labels.png"].axes
    assert _bars_by_tick(ax, ax.containers[0])[dropped][0] == 0.0
    _check_label_axes(drawn["labels.png"], index[keep], eligible, ("stratum",))


# -------------------------------------------------------------------------------------- entropy
def _check_hist(ax, values, column):
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    bars = ax.containers[0]
    assert sum(b.get_height() for b in bars) == len(v)
    left = min(b.get_x() for b in bars)
    right = max(b.get_x() + b.get_width() for b in bars)
    assert left <= v.min() + 1e-12 and right >= v.max() - 1e-12
    # each bar's height is the number of values in its bin
    for i, b in enumerate(bars):
        lo, hi = b.get_x(), b.get_x() + b.get_width()
        inside = (v >= lo - 1e-12) & ((v < hi - 1e-12) if i < len(bars) - 1 else (v <= hi + 1e-12))
        assert b.get_height() == inside.sum()
    mean_line, = ax.lines
    assert mean_line.get_xdata()[0] == pytest.approx(v.mean())
    assert ax.get_title().endswith(f"(n={len(v)})")
    assert column.replace("_", " ") in ax.get_xlabel()


def test_entropy_hist(als, tmp_path, drawn):
    index, _ = als
    index = index.copy()
    index.loc[0, "height_entropy"] = np.nan  # a sample without a value is left out, not counted as 0
    assert_png(plots.plot_entropy_hist(index, tmp_path / "entropy.png"))
    axes = drawn["entropy.png"].axes
    assert len(axes) == 2
    _check_hist(axes[0], index["height_entropy"], "height_entropy")
    _check_hist(axes[1], index["intensity_entropy"], "intensity_entropy")
    assert sum(b.get_height() for b in axes[0].containers[0]) == len(index) - 1
    assert plots.plot_entropy_hist(index.drop(columns=["height_entropy", "intensity_entropy"]),
                                   tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists() and "none.png" not in drawn


def test_entropy_hist_constant_values(tmp_path, drawn):
    index = pd.DataFrame({"spectral_entropy": [2.5] * 7})
    plots.plot_entropy_hist(index, tmp_path / "flat.png")
    ax, = drawn["flat.png"].axes
    _check_hist(ax, index["spectral_entropy"], "spectral_entropy")


def test_satellite_like_index(satellite, tmp_path, drawn):
    assert "slope_class" not in satellite.columns
    assert_png(plots.plot_footprints(satellite, None, tmp_path / "fp.png"))
    assert_png(plots.plot_footprints(satellite, None, tmp_path / "fp_c.png", color_by="continent"))
    fig = drawn["fp_c.png"]
    axes = _used_axes(fig)
    assert {ax.get_title() for ax in axes} == set(satellite["scene"])
    for ax in axes:
        sub = satellite[satellite["scene"] == ax.get_title()]
        _assert_samples_drawn(ax, sub, "continent")
        _assert_limits_cover(ax, sub.total_bounds)
        # patches 0.008 degree wide over half a degree: the centres are marked too
        (scatter,) = [c for c in ax.collections if c not in _polys(ax).values()]
        assert np.allclose(np.sort(scatter.get_offsets(), axis=0), np.sort(sub[["lon", "lat"]].to_numpy(), axis=0))
    counts = satellite["continent"].value_counts()
    assert _legend_texts(fig) == [f"{c} ({counts[c]})" for c in sorted(counts.index)] + ["sample centre"]
    assert_png(plots.plot_label_bars(satellite, None, tmp_path / "labels.png"))
    _check_label_axes(drawn["labels.png"], satellite, None, ("landcover", "continent", "biome"))
    assert_png(plots.plot_entropy_hist(satellite, tmp_path / "entropy.png"))
    ax, = drawn["entropy.png"].axes
    _check_hist(ax, satellite["spectral_entropy"], "spectral_entropy")
    written = plots.write_plots(tmp_path / "build", index=satellite)
    assert [p.name for p in written] == ["footprints.png", "labels.png", "entropy.png"]
    for p in written:
        assert_png(p)


# ----------------------------------------------------------------------------------- comparison
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


def _check_curves(ax, table, metric):
    """One line per strategy (sorted), x = samples per project, y = the table's metric."""
    lines = {ln.get_label(): ln for ln in ax.lines}
    groups = sorted(table["strategy"].unique())
    assert sorted(lines) == groups
    for g in groups:
        t = table[table["strategy"] == g].sort_values("samples_per_project")
        assert np.asarray(lines[g].get_xdata(), float).tolist() == t["samples_per_project"].astype(float).tolist()
        assert np.allclose(np.asarray(lines[g].get_ydata(), float), t[metric].to_numpy(float))
        assert np.allclose(_rgba(lines[g].get_color()), _rgba(plots.category_colors(groups)[g]))


def test_comparison_curves(tmp_path, drawn):
    table = _comparison_table([5, 10, 20, 40])
    assert_png(plots.plot_comparison(table, tmp_path / "cmp.png"))
    ax, = _used_axes(drawn["cmp.png"])
    _check_curves(ax, table, "stratum_entropy")
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["geospatial", "random"]
    metrics = ["stratum_entropy", "strata_coverage", "height_entropy_mean"]
    assert_png(plots.plot_comparison(table, tmp_path / "cmp_multi.png", metric=metrics))
    fig = drawn["cmp_multi.png"]
    axes = _used_axes(fig)
    assert [ax.get_title() for ax in axes] == ["stratum entropy", "strata coverage", "height entropy mean"]
    for ax, m in zip(axes, metrics):
        _check_curves(ax, table, m)
    assert _legend_texts(fig) == ["geospatial", "random"]


def _check_comparison_bars(ax, table, metric):
    order = table.sort_values(["strategy", "label"])
    bars = ax.containers[0]
    assert len(bars) == len(table)
    assert [t.get_text() for t in ax.get_xticklabels()] == order["label"].tolist()
    assert np.allclose([b.get_height() for b in bars], order[metric].to_numpy(float))
    colors = plots.category_colors(table["strategy"].unique())
    for b, g in zip(bars, order["strategy"]):
        assert np.allclose(_rgba(b.get_facecolor()), _rgba(colors[g]))
    assert ax.get_ylim()[1] >= order[metric].max()


def test_comparison_bars_when_x_is_constant(tmp_path, drawn):
    table = _comparison_table([10])
    table = pd.concat([table, pd.DataFrame([dict(label="europe-10", strategy="continent:Europe",
                                                 samples_per_project=10, num_samples=30,
                                                 stratum_entropy=1.1)])], ignore_index=True)
    assert_png(plots.plot_comparison(table, tmp_path / "bars.png"))
    fig = drawn["bars.png"]
    ax, = _used_axes(fig)
    _check_comparison_bars(ax, table, "stratum_entropy")
    assert _legend_texts(fig) == sorted(table["strategy"].unique())
    # and with no x column at all
    assert_png(plots.plot_comparison(table.drop(columns=["samples_per_project"]), tmp_path / "bars2.png"))
    ax, = _used_axes(drawn["bars2.png"])
    _check_comparison_bars(ax, table, "stratum_entropy")
    with pytest.raises(ValueError, match="not_a_metric"):
        plots.plot_comparison(table, tmp_path / "bad.png", metric="not_a_metric")


def test_write_plots_reads_build_folder(als, tmp_path, drawn):
    index, frame = als
    index.to_parquet(tmp_path / "index.parquet")
    frame.to_parquet(tmp_path / "frame.parquet")
    written = plots.write_plots(tmp_path)
    assert [p.name for p in written] == ["footprints.png", "labels.png", "entropy.png"]
    for p in written:
        assert p.parent == tmp_path / "report"
        assert_png(p)
    eligible = frame[frame["eligible"]].assign(stratum=lambda d: d["landcover"] + "/" + d["slope_class"])
    _check_label_axes(drawn["labels.png"], index, eligible, ("landcover", "slope_class", "stratum"))
    ax, = _used_axes(drawn["footprints.png"])
    _assert_samples_drawn(ax, index, "stratum")
    assert len(drawn["entropy.png"].axes) == 2


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
