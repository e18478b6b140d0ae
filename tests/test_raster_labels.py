"""Where-on-Earth labels (continent, biome) and per-sample spectral entropy (DESIGN.md §7)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from als_datasets.errors import InputError
from als_datasets.kinds.raster.entropy import (
    band_moments,
    norm_ranges,
    per_band_entropy,
    pool_moments,
    spectral_entropy,
)
from als_datasets.kinds.raster.labels import BIOMES, DEFAULT_CONTINENTS, BiomeLookup, ContinentLookup
from als_datasets.stats import satmae_entropy

SHARED = Path(os.environ.get("ALS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESOLVE = SHARED / "reference" / "resolve_ecoregions_1deg"
NE50 = SHARED / "reference" / "natural_earth" / "ne_50m_admin_0_countries.geojson"

# the six real scene centres of SOURCES.md, "Satellite": (lat, lon), continent, rule, biome
SCENES = {
    "spain": ((38.1058, -0.7589), "Europe", "within", "Mediterranean Forests, Woodlands & Scrub"),
    "sahara": ((24.8005, -11.4269), "Africa", "within", "Deserts & Xeric Shrublands"),
    "olinda": ((-7.9954, -34.8713), "South America", "nearest", "Mangroves"),
    "canberra": ((-35.3057, 149.1415), "Oceania", "within", "Temperate Broadleaf & Mixed Forests"),
    "guangdong": ((23.1050, 115.1144), "Asia", "within", "Tropical & Subtropical Moist Broadleaf Forests"),
    "alabama": ((30.7286, -87.3983), "North America", "within", "Temperate Grasslands, Savannas & Shrublands"),
}


def _scene_points():
    lat = np.array([v[0][0] for v in SCENES.values()])
    lon = np.array([v[0][1] for v in SCENES.values()])
    return lon, lat


# ---- spectral entropy -------------------------------------------------------------------------

def test_entropy_four_equal_values_is_ln4_and_constant_is_zero():
    band = np.tile(np.array([0, 1, 2, 3], dtype=np.uint16), (8, 2))  # 8 x 8, four values equally often
    px = np.stack([band, np.full_like(band, 7)])[None]  # (1, 2, 8, 8): varied band + constant band
    pb = per_band_entropy(px)
    assert pb.shape == (1, 2)
    assert pb[0, 0] == pytest.approx(math.log(4), abs=1e-12)
    assert pb[0, 1] == 0.0
    assert spectral_entropy(px)[0] == pytest.approx(math.log(4) / 2, abs=1e-12)


def test_entropy_bins_and_base():
    band = np.tile(np.array([0, 1, 2, 3], dtype=np.uint16), (8, 2))[None, None]
    assert per_band_entropy(band, base=2)[0, 0] == pytest.approx(2.0, abs=1e-12)  # 2 bits
    # mean 1.5, sd 1.118: the values normalise to ~42, ~99, ~156, ~213, so 2 bins get 2 + 2 -> ln 2
    assert per_band_entropy(band, bins=2)[0, 0] == pytest.approx(math.log(2), abs=1e-12)
    assert per_band_entropy(band, bins=1)[0, 0] == 0.0
    with pytest.raises(ValueError):
        per_band_entropy(band, bins=0)
    with pytest.raises(ValueError):
        per_band_entropy(band, base=1)
    with pytest.raises(ValueError):
        per_band_entropy(band[0])  # not 4-D


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("bins", [16, 100, 256])
def test_entropy_equals_stats_satmae_entropy_per_band(dtype, bins):
    rng = np.random.default_rng(bins)
    if np.issubdtype(dtype, np.integer):
        hi = min(np.iinfo(dtype).max, 12000)
        px = rng.integers(0, hi, (6, 4, 24, 24)).astype(dtype)
    else:
        px = rng.gamma(2.0, 500.0, (6, 4, 24, 24)).astype(dtype)
    px[1, 2] = px[1, 2, 0, 0]  # a constant band
    got = per_band_entropy(px, bins=bins, base=2.0)
    ref = np.array([[satmae_entropy(px[i, c].ravel(), bins=bins, base=2.0) for c in range(4)] for i in range(6)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(spectral_entropy(px, bins=bins, base=2.0), ref.mean(axis=1), rtol=0, atol=1e-12)


def _lake_and_mosaic(seed: int = 5) -> np.ndarray:
    """(2, 4, 96, 96): a uniform lake with sensor noise, and a four-class land mosaic with the same noise."""
    rng = np.random.default_rng(seed)
    lake = np.full((4, 96, 96), 400.0)
    mosaic = np.zeros((4, 96, 96))
    levels = np.array([[300, 500, 800, 2500], [900, 1200, 1400, 3000], [1800, 2200, 2600, 3500], [250, 1500, 3000, 4000]])
    for q, (r, c) in enumerate([(0, 0), (0, 48), (48, 0), (48, 48)]):
        mosaic[:, r:r + 48, c:c + 48] = levels[:, q][:, None, None]
    px = np.stack([lake, mosaic]) + rng.normal(0, 15, (2, 4, 96, 96))
    return np.clip(px, 0, None).astype(np.uint16)


def test_entropy_dataset_normalisation_ranks_variety_over_noise():
    """Issue 14: per-patch normalisation stretches a noisy uniform lake over 0-255, so it outscores a
    land mosaic; with the dataset's per-band mean ± 2σ the mosaic scores higher."""
    px = _lake_and_mosaic()
    valid = np.ones((2, 96, 96), dtype=bool)
    per_patch = spectral_entropy(px, valid)
    assert per_patch[0] > per_patch[1]  # the defect the issue describes
    stats = pool_moments([("s2", f"b{j}", m, 2) for j, m in enumerate(band_moments(px, valid))])
    norm = norm_ranges(stats, "s2", [f"b{j}" for j in range(4)])
    assert norm.shape == (4, 2) and (norm[:, 1] > norm[:, 0]).all()
    ds = spectral_entropy(px, valid, norm=norm)
    assert ds[1] > ds[0] + 1.0 and ds[0] < 2.5
    # pooled moments are the plain mean / std of all valid pixels
    assert stats["s2"]["b0"]["mean"] == pytest.approx(px[:, 0].mean(), rel=1e-6)
    assert stats["s2"]["b0"]["std"] == pytest.approx(px[:, 0].astype(float).std(), rel=1e-5)
    # a fixed range: the same operations as satmae_entropy on values pre-clipped to that range
    with pytest.raises(ValueError):
        spectral_entropy(px, valid, norm=norm[:3])


def test_entropy_valid_mask_respected():
    rng = np.random.default_rng(3)
    px = rng.integers(1, 5000, (5, 3, 32, 32)).astype(np.uint16)
    valid = rng.random((5, 32, 32)) > 0.4
    valid[4] = False  # a sample with no valid pixel
    # garbage in the invalid pixels must not change anything
    noisy = px.copy()
    noisy[np.broadcast_to(~valid[:, None], px.shape)] = 65535
    got = per_band_entropy(noisy, valid)
    np.testing.assert_array_equal(got, per_band_entropy(px, valid))
    ref = np.array([[satmae_entropy(px[i, c][valid[i]]) if valid[i].any() else 0.0 for c in range(3)]
                    for i in range(5)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    se = spectral_entropy(noisy, valid)
    np.testing.assert_allclose(se[:4], ref[:4].mean(axis=1), rtol=0, atol=1e-12)
    assert se[4] == 0.0
    # per-band mask (N, C, H, W): a band with no valid pixel is left out of the sample's mean
    vb = np.broadcast_to(valid[:, None], px.shape).copy()
    vb[0, 1] = False
    se_b = spectral_entropy(px, vb)
    assert se_b[0] == pytest.approx((ref[0, 0] + ref[0, 2]) / 2, abs=1e-12)
    # non-finite values are invalid too
    f = px.astype(np.float64)
    f[~np.broadcast_to(valid[:, None], px.shape)] = np.nan
    np.testing.assert_allclose(per_band_entropy(f), ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        per_band_entropy(px, valid[:, :5])


def test_entropy_chunking_does_not_change_results(monkeypatch):
    from als_datasets.kinds.raster import entropy

    rng = np.random.default_rng(5)
    px = rng.integers(0, 3000, (7, 2, 16, 16)).astype(np.int16)
    whole = per_band_entropy(px)
    monkeypatch.setattr(entropy, "CHUNK_VALUES", 2 * 16 * 16 * 2)  # 2 samples per chunk
    np.testing.assert_array_equal(per_band_entropy(px), whole)


# ---- continent --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def continents():
    return ContinentLookup()


def test_continent_six_scenes(continents):
    lon, lat = _scene_points()
    names, rules = continents.lookup(lon, lat)
    assert list(names) == [v[1] for v in SCENES.values()]
    assert list(rules) == [v[2] for v in SCENES.values()]


def test_continent_quirks_sea_and_shapes(continents):
    assert DEFAULT_CONTINENTS.is_file()
    assert continents.n_repaired == 2  # USA and Sudan are invalid in the 110m file
    assert "Seven seas (open ocean)" not in continents.continents
    lon = np.array([[82.92, -150.0], [-34.8713, float("nan")]])  # Novosibirsk, mid-Pacific; Olinda, NaN
    lat = np.array([[55.03, 0.0], [-7.9954, 10.0]])
    names, rules, dist = continents.lookup(lon, lat, return_distance=True)
    assert names.shape == rules.shape == dist.shape == (2, 2)
    assert names[0, 0] == "Europe" and rules[0, 0] == "within" and dist[0, 0] == 0.0  # Natural Earth: Russia
    assert names[0, 1] is None and rules[0, 1] == "none" and np.isnan(dist[0, 1])
    assert names[1, 0] == "South America" and 0 < dist[1, 0] < 10  # ~2 km off the coarse coastline
    assert names[1, 1] is None and rules[1, 1] == "none"
    # the fallback limit: Olinda is ~2 km out, so 1 km is too little
    strict = ContinentLookup(nearest_max_km=1.0)
    names, rules = strict.lookup(-34.8713, -7.9954)
    assert names.shape == () and names.item() is None and rules.item() == "none"
    assert "nearest polygon within 500 km" in continents.rule_text
    assert continents.rule_text.startswith("Natural Earth 110m admin-0 CONTINENT (public domain)")
    # longitude wrap-around and the antimeridian: Fiji straddles it
    assert continents.lookup(np.array([179.9, 179.9 - 360]), np.array([-16.5, -16.5]))[0].tolist() == ["Oceania"] * 2
    with pytest.raises(ValueError):
        continents.lookup(np.array([10.0]), np.array([95.0]))


@pytest.mark.skipif(not NE50.is_file(), reason="shared Natural Earth 50m layer not present")
def test_continent_50m_lowercase_field():
    c50 = ContinentLookup(NE50)
    assert c50.field == "continent"
    assert c50.rule_text.startswith("Natural Earth 50m admin-0 continent")
    lon, lat = _scene_points()
    names, _ = c50.lookup(lon, lat)
    assert list(names) == [v[1] for v in SCENES.values()]


def test_continent_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        ContinentLookup(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        ContinentLookup(bad)
    with pytest.raises(InputError):
        ContinentLookup(field="NO_SUCH_FIELD")


# ---- biome ------------------------------------------------------------------------------------

def test_biome_missing_layer_is_input_error(tmp_path):
    with pytest.raises(InputError):
        BiomeLookup(tmp_path / "biomes.tif", tmp_path / "ecoregions.csv")


@pytest.mark.skipif(not (RESOLVE / "biomes.tif").is_file(), reason="shared RESOLVE 1° layer not present")
def test_biome_six_scenes_and_fallback():
    b = BiomeLookup(RESOLVE / "biomes.tif", RESOLVE / "ecoregions.csv")
    assert set(b.biomes) == set(BIOMES) and len(b.biomes) == 14
    lon, lat = _scene_points()
    names, rules = b.lookup(lon, lat)
    assert list(names) == [v[3] for v in SCENES.values()]
    assert list(rules) == ["pixel"] * 6
    names, rules = b.lookup(np.array([-150.0, float("nan")]), np.array([0.0, 0.0]))  # mid-Pacific, NaN
    assert names.tolist() == [None, None] and rules.tolist() == ["none", "none"]
    # a nodata pixel next to land takes the nearest pixel's biome
    nod = np.argwhere(b.grid == -1)
    land = b.grid >= 0
    for r, c in nod:
        if 2 <= r < b.grid.shape[0] - 2 and land[r - 1:r + 2, max(c - 1, 0):c + 2].any():
            x, y = b.transform * (c + 0.5, r + 0.5)
            n1, r1 = b.lookup(x, y)
            assert r1 == "nearest" and n1.item() in BIOMES
            break
    else:
        pytest.fail("no coastal nodata pixel found")
    assert "RESOLVE Ecoregions 2017" in b.rule_text and "2 px" in b.rule_text
    assert BiomeLookup(RESOLVE / "biomes.tif", RESOLVE / "ecoregions.csv", nearest_px=0).lookup(x, y)[1] == "none"
