"""Diversity report and build comparison (als_datasets.report), on small hand-made tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from als_datasets.report.compare import (
    compare_builds,
    compare_table,
    differences,
    format_markdown,
    format_table,
)
from als_datasets.report.diversity import (
    SCHEMA,
    distribution_stats,
    diversity,
    label_stats,
    load_diversity,
    write_diversity,
)

H_211 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))  # 1.0397...


# ---------------------------------------------------------------- label_stats

def test_label_stats_hand_computed():
    s = label_stats(pd.Series(["b", "a", "a", "c"]))
    assert s["counts"] == {"a": 2, "b": 1, "c": 1}
    assert list(s["counts"]) == ["a", "b", "c"]  # sorted by label
    assert s["proportions"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert s["entropy"] == pytest.approx(1.0397207708, abs=1e-9)
    assert s["entropy"] == pytest.approx(H_211)
    assert s["normalised"] == pytest.approx(H_211 / math.log(3))
    assert s["K"] == 3 and s["n"] == 4 and s["missing"] == 0


def test_label_stats_single_class_and_uniform():
    one = label_stats(pd.Series(["forest"] * 7))
    assert one["entropy"] == 0.0 and one["normalised"] == 0.0 and one["K"] == 1 and one["n"] == 7
    for k in (2, 5, 13):
        u = label_stats(pd.Series([f"c{i}" for i in range(k)] * 3))
        assert u["entropy"] == pytest.approx(math.log(k))
        assert u["normalised"] == pytest.approx(1.0)
        assert u["K"] == k


def test_label_stats_missing_and_empty():
    s = label_stats(pd.Series(["a", None, "b", np.nan, "a", "b"], dtype=object))
    assert s["counts"] == {"a": 2, "b": 2} and s["n"] == 4 and s["missing"] == 2
    assert s["entropy"] == pytest.approx(math.log(2)) and s["normalised"] == pytest.approx(1.0)
    e = label_stats(pd.Series([], dtype=object))
    assert e == {"counts": {}, "proportions": {}, "entropy": 0.0, "K": 0, "K_frame": None, "normalised": 0.0, "n": 0,
                 "missing": 0}
    allna = label_stats(pd.Series([None, None], dtype=object))
    assert allna["n"] == 0 and allna["missing"] == 2 and allna["entropy"] == 0.0


def test_label_stats_non_string_labels_become_string_keys():
    s = label_stats(pd.Series([3, 1, 1, 2]))
    assert s["counts"] == {"1": 2, "2": 1, "3": 1}
    assert s["entropy"] == pytest.approx(H_211)
    json.dumps(s, allow_nan=False)


def test_normalised_entropy_divides_by_the_frame_labels():
    # 2 of 6 possible labels, used evenly: ln 2 / ln 6, not 1
    s = label_stats(pd.Series(["a", "b"] * 5), frame_labels=["a", "b", "c", "d", "e", "f"])
    assert s["K"] == 2 and s["K_frame"] == 6
    assert s["entropy"] == pytest.approx(math.log(2))
    assert s["normalised"] == pytest.approx(math.log(2) / math.log(6))
    # all 6, evenly: 1; a frame given as a Series with repeats and missing values counts distinct labels
    frame = pd.Series(list("abcdef") * 3 + [None, np.nan], dtype=object)
    assert label_stats(pd.Series(list("abcdef")), frame)["normalised"] == pytest.approx(1.0)
    assert label_stats(pd.Series(list("abcdef")), frame)["K_frame"] == 6
    # a sample label the frame lacks still counts (normalised never above 1)
    odd = label_stats(pd.Series(["a", "z"]), frame_labels=["a"])
    assert odd["K_frame"] == 2 and odd["normalised"] == pytest.approx(1.0)
    # no frame: K present, as before
    alone = label_stats(pd.Series(["a", "b"] * 5))
    assert alone["K_frame"] is None and alone["normalised"] == pytest.approx(1.0)
    # the stats function itself
    from als_datasets.stats import normalised_entropy
    assert normalised_entropy([5, 5, 0, 0], k=6) == pytest.approx(math.log(2) / math.log(6))
    assert normalised_entropy([5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([5], k=1) == 0.0
    with pytest.raises(ValueError):
        normalised_entropy([1, 1, 1], k=2)


# ---------------------------------------------------------- distribution_stats

def test_distribution_stats_known_array():
    d = distribution_stats(pd.Series(np.arange(1, 101, dtype=float)))  # 1..100
    assert d["n"] == 100 and d["missing"] == 0
    assert d["mean"] == pytest.approx(50.5)
    assert d["std"] == pytest.approx(np.arange(1, 101).std())  # population std
    assert d["min"] == 1.0 and d["max"] == 100.0
    assert d["median"] == pytest.approx(50.5)
    assert d["p05"] == pytest.approx(5.95) and d["p95"] == pytest.approx(95.05)
    assert d["p25"] == pytest.approx(25.75) and d["p75"] == pytest.approx(75.25)
    h = d["histogram"]
    assert len(h["edges"]) == 21 and len(h["counts"]) == 20
    assert h["edges"][0] == 1.0 and h["edges"][-1] == 100.0
    assert sum(h["counts"]) == 100 and h["counts"] == [5] * 20


def test_distribution_stats_nan_none_inf_and_empty():
    d = distribution_stats(pd.Series([1.0, None, np.nan, np.inf, 3.0, -np.inf], dtype=object))
    assert d["n"] == 2 and d["missing"] == 4
    assert d["mean"] == 2.0 and d["min"] == 1.0 and d["max"] == 3.0 and d["std"] == 1.0
    assert sum(d["histogram"]["counts"]) == 2
    for empty in (pd.Series([], dtype=float), pd.Series([np.nan, None], dtype=object)):
        e = distribution_stats(empty)
        assert e["n"] == 0
        for k in ("mean", "std", "min", "p05", "p25", "median", "p75", "p95", "max"):
            assert e[k] is None
        assert e["histogram"] == {"edges": [], "counts": []}
    const = distribution_stats(pd.Series([4, 4, 4]))
    assert const["std"] == 0.0 and const["median"] == 4.0 and sum(const["histogram"]["counts"]) == 3
    assert isinstance(const["mean"], float)


# ------------------------------------------------------------------ diversity

def _frame():
    # 4 eligible strata (developed/flat, developed/steep, forest/flat, forest/steep) + ineligible "other"
    rows = []
    for lc in ("developed", "forest"):
        for sc in ("flat", "steep"):
            rows += [dict(landcover=lc, slope_class=sc, project="p1", eligible=True)] * 3
    rows += [dict(landcover="other", slope_class="flat", project="p1", eligible=False)] * 5
    return pd.DataFrame(rows)


def _index(strata, **extra):
    lc = [s.split("/")[0] for s in strata]
    sc = [s.split("/")[1] for s in strata]
    n = len(strata)
    df = pd.DataFrame({
        "key": [f"p1_c{i}_r0" for i in range(n)],
        "split": ["train"] * (n - 1) + ["validation"],
        "project": ["p1"] * n,
        "landcover": lc,
        "slope_class": sc,
        "stratum": list(strata),
        "point_count": np.arange(n) * 100 + 1000,
        "height_entropy": np.linspace(1.0, 3.0, n),
    })
    for k, v in extra.items():
        df[k] = v
    return df


META = {"name": "toy", "kind": "als", "strategy": "geospatial", "seed": 7, "samples_per_project": 4}


def test_diversity_coverage_and_frame_stats():
    idx = _index(["developed/flat", "forest/flat", "forest/steep", "forest/steep"])
    r = diversity(idx, _frame(), META)
    assert r["schema"] == SCHEMA
    assert (r["name"], r["kind"], r["strategy"], r["seed"], r["samples_per_project"]) == ("toy", "als", "geospatial", 7, 4)
    assert r["num_samples"] == 4 and r["splits"] == {"train": 3, "validation": 1}
    assert r["coverage"] == {
        "strata_in_frame": 4, "strata_reached": 3, "fraction": 0.75,
        "missing": ["developed/steep"], "outside_frame": [],
    }
    assert set(r["labels"]) == {"landcover", "slope_class", "stratum", "project"}
    st = r["labels"]["stratum"]
    assert st["entropy"] == pytest.approx(H_211) and st["K"] == 3
    # the frame's stratum stats: eligible tiles only, 4 equal strata
    assert st["frame"]["K"] == 4 and st["frame"]["n"] == 12
    assert st["frame"]["entropy"] == pytest.approx(math.log(4))
    assert r["labels"]["landcover"]["frame"]["counts"] == {"developed": 6, "forest": 6}  # no "other"
    assert r["labels"]["project"]["entropy"] == 0.0
    assert set(r["distributions"]) == {"point_count", "height_entropy"}
    assert r["distributions"]["point_count"]["mean"] == pytest.approx(1150.0)
    assert "nats" in json.dumps(r["entropy_definitions"])


def _frame6():
    # 6 eligible strata: developed/forest x flat/sloped/steep, 4 tiles each
    rows = [dict(landcover=lc, slope_class=sc, project="p1", eligible=True)
            for lc in ("developed", "forest") for sc in ("flat", "sloped", "steep") for _ in range(4)]
    return pd.DataFrame(rows)


def test_diversity_normalises_by_the_frame_strata():
    # 2 of the frame's 6 strata, evenly: ln 2 / ln 6 (today's code said 1.000)
    idx = _index(["forest/flat", "forest/steep"] * 3)
    r = diversity(idx, _frame6(), META)
    st = r["labels"]["stratum"]
    assert st["K"] == 2 and st["K_frame"] == 6
    assert st["normalised"] == pytest.approx(math.log(2) / math.log(6))
    assert st["frame"]["K"] == 6 and st["frame"]["K_frame"] == 6 and st["frame"]["normalised"] == pytest.approx(1.0)
    lc = r["labels"]["landcover"]  # one of the frame's two land covers
    assert lc["K"] == 1 and lc["K_frame"] == 2 and lc["normalised"] == 0.0
    sc = r["labels"]["slope_class"]  # flat, steep of flat, sloped, steep
    assert sc["K_frame"] == 3 and sc["normalised"] == pytest.approx(math.log(2) / math.log(3))
    assert "K_frame" in r["entropy_definitions"]["labels"] and "no frame" in r["entropy_definitions"]["labels"]
    # without a frame: the labels present, and K_frame says so (null)
    alone = diversity(idx, None, META)["labels"]["stratum"]
    assert alone["K_frame"] is None and alone["normalised"] == pytest.approx(1.0)


def test_compare_ranks_geospatial_above_an_even_random_pair():
    """A geospatial draw over all 6 strata (a little uneven) against a random one that hit 2 strata
    evenly: dividing by ln K present ranked the random one first (1.000 vs 0.967)."""
    frame = _frame6()
    geo_strata = ["developed/flat", "developed/flat", "developed/sloped", "developed/steep", "forest/flat",
                  "forest/sloped", "forest/steep", "forest/steep"]
    geo = diversity(_index(geo_strata), frame, {**META, "strategy": "geospatial"})
    rnd = diversity(_index(["forest/flat", "forest/sloped"] * 4), frame, {**META, "strategy": "random"})
    t = compare_table([geo, rnd], ["geo", "rnd"])
    assert t.loc[0, "stratum_normalised"] > t.loc[1, "stratum_normalised"]
    assert t.loc[1, "stratum_normalised"] == pytest.approx(math.log(2) / math.log(6))
    assert t.loc[0, "stratum_normalised"] == pytest.approx(t.loc[0, "stratum_entropy"] / math.log(6))
    assert list(t["stratum_K_frame"]) == [6, 6] and str(t["stratum_K_frame"].dtype) == "Int64"
    assert list(t["stratum_K"]) == [6, 2]
    # the card's table says what the sample's H was divided by
    from als_datasets.report.card import diversity_markdown
    md = diversity_markdown(rnd)
    assert "H / ln K frame" in md and "| Stratum (land cover / slope) | 2 | 0.693 | 0.387 | 6 |" in md
    assert "¹" not in md
    md_alone = diversity_markdown(diversity(_index(["forest/flat", "forest/sloped"] * 4), None, META))
    assert "| 1.000 ¹ |" in md_alone and "no frame" in md_alone


def test_diversity_without_frame_or_meta():
    idx = _index(["forest/flat", "forest/steep"])
    r = diversity(idx)
    assert r["coverage"] is None
    assert r["name"] is None and r["strategy"] is None and r["samples_per_project"] is None
    assert r["kind"] == "als"  # inferred from the columns
    assert all(v["frame"] is None for v in r["labels"].values())
    # a frame, but an index without a stratum column: no coverage
    r2 = diversity(idx.drop(columns="stratum"), _frame(), META)
    assert r2["coverage"] is None and "stratum" not in r2["labels"]


def test_diversity_nan_labels_and_values_json_round_trip():
    idx = _index(["developed/flat", "forest/flat", "forest/steep", "forest/flat"])
    idx["landcover"] = pd.Series(["developed", None, "forest", np.nan], dtype=object)
    idx["height_entropy"] = [np.nan, 1.0, np.inf, 3.0]
    idx["density"] = np.nan  # an all-missing column
    r = diversity(idx, _frame(), META)
    assert r["labels"]["landcover"]["missing"] == 2 and r["labels"]["landcover"]["n"] == 2
    assert r["distributions"]["height_entropy"]["n"] == 2
    assert r["distributions"]["density"]["mean"] is None
    text = json.dumps(r, indent=2, sort_keys=True, allow_nan=False)  # no NaN anywhere
    back = json.loads(text)
    assert back == r
    # deterministic: the same inputs give the same text
    assert json.dumps(diversity(idx, _frame(), META), indent=2, sort_keys=True) == text


def test_satellite_like_index():
    n = 8
    idx = pd.DataFrame({
        "key": [f"scene_c{i}_r0" for i in range(n)],
        "split": ["train"] * n,
        "continent": ["Europe", "Europe", "Africa", "Asia", "Asia", "Asia", "Oceania", None],
        "biome": ["Tundra"] * 4 + ["Deserts"] * 4,
        "spectral_entropy": np.linspace(4.0, 5.0, n),
        "cloud_fraction": [0.0, 0.1, 0.0, 0.2, 0.05, 0.0, 0.0, 0.3],
        "nodata_fraction": [0.0] * n,
    })
    frame = pd.DataFrame({"continent": ["Europe", "Africa", "Asia", "Oceania", "Antarctica"],
                          "biome": ["Tundra"] * 5, "eligible": [True] * 4 + [False]})
    r = diversity(idx, frame, {"name": "sat", "kind": "satellite", "strategy": "global"})
    assert set(r["labels"]) == {"continent", "biome"}
    assert r["labels"]["continent"]["K"] == 4 and r["labels"]["continent"]["missing"] == 1
    assert r["labels"]["continent"]["frame"]["K"] == 4  # the ineligible one left out
    assert r["labels"]["biome"]["entropy"] == pytest.approx(math.log(2))
    assert r["coverage"] is None  # no stratum column
    assert set(r["distributions"]) == {"spectral_entropy", "cloud_fraction", "nodata_fraction"}
    assert r["distributions"]["spectral_entropy"]["mean"] == pytest.approx(4.5)
    json.dumps(r, allow_nan=False)
    assert diversity(idx)["kind"] == "satellite"


# ----------------------------------------------------------------- file I/O

def _write_build(out, idx, frame, meta):
    out.mkdir(parents=True)
    idx.to_parquet(out / "index.parquet")
    if frame is not None:
        frame.to_parquet(out / "frame.parquet")
    (out / "manifest.json").write_text(json.dumps({**meta, "shards": []}))


def test_write_and_load_diversity(tmp_path):
    out = tmp_path / "build"
    _write_build(out, _index(["developed/flat", "forest/flat", "forest/steep"]), _frame(), META)
    computed = load_diversity(out)  # not written yet: computed
    assert not (out / "report" / "diversity.json").exists()
    written = write_diversity(out)
    path = out / "report" / "diversity.json"
    assert path.exists() and json.loads(path.read_text()) == written == computed
    assert path.read_text() == json.dumps(written, indent=2, sort_keys=True) + "\n"
    assert load_diversity(out) == written
    assert [p.name for p in (out / "report").iterdir()] == ["diversity.json"]  # no temp file left
    # without a frame
    out2 = tmp_path / "noframe"
    _write_build(out2, _index(["forest/flat"]), None, META)
    assert write_diversity(out2)["coverage"] is None


# ------------------------------------------------------------------ compare

def _geo_rnd_reports():
    frame = _frame()
    geo = diversity(_index(["developed/flat", "developed/steep", "forest/flat", "forest/steep"]), frame,
                    {**META, "strategy": "geospatial"})
    rnd = diversity(_index(["forest/flat", "forest/flat", "forest/flat", "developed/flat"]), frame,
                    {**META, "strategy": "random"})
    return geo, rnd


def test_compare_table_and_differences():
    geo, rnd = _geo_rnd_reports()
    t = compare_table([geo, rnd], ["geo", "rnd"])
    assert list(t["label"]) == ["geo", "rnd"]
    assert list(t.columns[:4]) == ["label", "strategy", "samples_per_project", "num_samples"]
    for c in ("landcover", "slope_class", "stratum", "project"):
        assert {f"{c}_entropy", f"{c}_normalised", f"{c}_K"} <= set(t.columns)
    assert {"strata_coverage", "point_count_mean", "height_entropy_mean"} <= set(t.columns)
    assert t.loc[0, "stratum_entropy"] == pytest.approx(math.log(4))
    assert t.loc[0, "stratum_entropy"] > t.loc[1, "stratum_entropy"]  # geospatial more diverse
    assert t.loc[0, "stratum_K"] == 4 and t.loc[1, "stratum_K"] == 2
    assert t.loc[0, "strata_coverage"] == 1.0 and t.loc[1, "strata_coverage"] == 0.5
    d = differences(t, baseline="rnd")
    assert d.loc[1, "stratum_entropy"] == 0.0 and d.loc[0, "stratum_entropy"] > 0
    assert d.loc[0, "stratum_K"] == 2 and d.loc[0, "strata_coverage"] == 0.5
    assert list(d["label"]) == ["geo", "rnd"] and list(d["strategy"]) == ["geospatial", "random"]
    d0 = differences(t)  # baseline row 0
    assert d0.loc[1, "stratum_entropy"] < 0 and d0.loc[0, "num_samples"] == 0
    with pytest.raises(KeyError):
        differences(t, "nope")
    with pytest.raises(IndexError):
        differences(t, 5)


def test_compare_table_mixed_kinds_and_default_labels():
    geo, rnd = _geo_rnd_reports()
    sat = diversity(pd.DataFrame({"continent": ["Europe", "Asia"], "spectral_entropy": [4.0, 5.0]}),
                    meta={"name": "sat", "strategy": "global"})
    t = compare_table([geo, rnd, sat])
    # same name: told apart by strategy; a unique name kept
    assert list(t["label"]) == ["toy (geospatial, 4/project)", "toy (random, 4/project)", "sat"]
    assert pd.isna(t.loc[2, "stratum_entropy"]) and pd.isna(t.loc[0, "continent_entropy"])
    assert pd.isna(t.loc[2, "samples_per_project"]) and pd.isna(t.loc[2, "strata_coverage"])
    assert t.loc[2, "spectral_entropy_mean"] == 4.5 and pd.isna(t.loc[0, "spectral_entropy_mean"])
    assert t.loc[2, "continent_K"] == 2
    with pytest.raises(ValueError):
        compare_table([geo], ["a", "b"])


def test_format_table_and_markdown():
    geo, rnd = _geo_rnd_reports()
    t = compare_table([geo, rnd], ["geo", "rnd"])
    cols = ["label", "strategy", "num_samples", "stratum_entropy", "stratum_K", "strata_coverage"]
    text = format_table(t, cols)
    lines = text.splitlines()
    assert lines[0].split() == cols and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["geo", "geospatial", "4", f"{math.log(4):.3f}", "4", "1.000"]
    assert len({len(line) for line in lines[:2]}) == 1  # fixed width header / rule
    assert format_table(t).splitlines()[0].split() == list(t.columns)
    md = format_markdown(t, cols).splitlines()
    assert md[0] == "| " + " | ".join(cols) + " |"
    assert md[1] == "|:---|:---|---:|---:|---:|---:|"
    assert md[3] == "| rnd | random | 4 | 0.562 | 2 | 0.500 |"
    t.loc[1, "stratum_entropy"] = np.nan
    assert format_markdown(t, cols).splitlines()[3].split(" | ")[3] == "-"
    with pytest.raises(KeyError):
        format_table(t, ["nope"])


def test_compare_builds_labels_by_folder(tmp_path):
    frame = _frame()
    _write_build(tmp_path / "geo", _index(["developed/flat", "developed/steep", "forest/flat", "forest/steep"]),
                 frame, {**META, "strategy": "geospatial"})
    _write_build(tmp_path / "rnd", _index(["forest/flat"] * 3 + ["developed/flat"]), frame,
                 {**META, "strategy": "random"})
    t = compare_builds([tmp_path / "geo", tmp_path / "rnd"])
    assert list(t["label"]) == ["geo", "rnd"]
    assert t.loc[0, "stratum_entropy"] > t.loc[1, "stratum_entropy"]


def test_card_templates_say_what_the_normalised_entropy_divides_by():
    from pathlib import Path

    cards = Path(__file__).resolve().parents[1] / "cards"
    for name in ("als_dataset_card.md", "raster_dataset_card.md"):
        text = " ".join((cards / name).read_text(encoding="utf-8").split())
        assert "ln K frame, the number of labels of the eligible frame" in text, name
        assert "ln 2 / ln 6 = 0.387, not 1" in text, name
        assert "with K the number of labels present and H / ln K" not in text, name
