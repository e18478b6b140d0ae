"""Does per-sample spectral entropy follow visible land-cover variety on the real scenes?
(issue 14, item 4; not a speed benchmark: a measurement on ``../shared/data/satellite``.)

    python bench/entropy_real_scenes.py            # needs the shared data beside the repository

For every candidate patch (96 px) of the six real scenes of ``builders/satellite-real.yaml``:

* a *land-cover variety* proxy independent of the entropy: k-means (k = 8, seeded) of the scene's
  pixels on its bands standardised per scene, and the number of clusters covering ≥ 5 % of the
  patch's valid pixels; for the Sentinel-2 L2A scene (Sahara) also the number of SCL classes
  covering ≥ 5 % (the product's own scene classification);
* spectral entropy normalised per patch (``normalise: patch``, the old default) and on the
  dataset's per-sensor, per-band statistics (``normalise: dataset``, the new default).

Prints Spearman ρ of each entropy against the variety proxies, pooled and per scene, and writes
``bench/results/entropy_real_scenes.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _variety(pix, valid, centroids, mean, std, share=0.05):
    from scipy.cluster.vq import vq

    out = np.zeros(len(pix), dtype=int)
    for i in range(len(pix)):
        v = valid[i].ravel()
        if not v.any():
            continue
        x = (pix[i].reshape(pix.shape[1], -1)[:, v].T.astype(np.float64) - mean) / std
        lab, _ = vq(x, centroids)
        frac = np.bincount(lab, minlength=len(centroids)) / len(lab)
        out[i] = int((frac >= share).sum())
    return out


def main() -> None:
    from scipy.cluster.vq import kmeans2
    from scipy.stats import spearmanr

    from als_datasets.kinds.raster.entropy import spectral_entropy
    from als_datasets.kinds.raster.frame import strip_cells
    from als_datasets.kinds.raster.plan import dataset_band_stats, open_scenes, scene_norms
    from als_datasets.kinds.raster.scenes import read_patches
    from als_datasets.recipe import load_recipe
    from als_datasets.registry import get_kind

    recipe = load_recipe(ROOT / "builders" / "satellite-real.yaml", out_dir="/tmp/entropy-bench-unused")
    kind = get_kind("satellite")
    scenes, commons = open_scenes(recipe, kind)
    stats = dataset_band_stats(recipe, scenes, commons)
    norms = scene_norms(recipe, scenes, commons, stats)
    rows = []
    for s in scenes:
        nc, nr = strip_cells(s, 96, 96)
        cells = [(c, r) for r in range(nr) for c in range(nc)]
        pix, valid = read_patches(s, cells, 96, 96)
        ok = valid.reshape(len(pix), -1).mean(axis=1) >= 0.95
        x = pix.transpose(1, 0, 2, 3).reshape(pix.shape[1], -1)[:, valid.ravel()].T.astype(np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        rng = np.random.default_rng(0)
        sub = (x[rng.choice(len(x), min(len(x), 50_000), replace=False)] - mean) / std
        centroids, _ = kmeans2(sub, 8, seed=0, minit="++")
        var = _variety(pix, valid, centroids, mean, std)
        e_patch = spectral_entropy(pix, valid)
        e_ds = spectral_entropy(pix, valid, norm=np.asarray(norms[s.name]))
        scl = [None] * len(cells)
        if s.cloud_mask is not None:
            import rasterio
            from rasterio.enums import Resampling
            from rasterio.windows import from_bounds

            with rasterio.open(s.cloud_mask.path) as ds:
                for i, (c, r) in enumerate(cells):
                    left, top = s.transform * (c * 96, r * 96)
                    right, bottom = s.transform * (c * 96 + 96, r * 96 + 96)
                    a = ds.read(1, window=from_bounds(left, bottom, right, top, ds.transform), out_shape=(96, 96),
                                resampling=Resampling.nearest)
                    frac = np.bincount(a.ravel(), minlength=16) / a.size
                    scl[i] = int((frac >= 0.05).sum())
        for i in np.flatnonzero(ok):
            rows.append({"scene": s.name, "variety": int(var[i]), "scl_classes": scl[i],
                         "entropy_patch": float(e_patch[i]), "entropy_dataset": float(e_ds[i])})
    res = {"patches": len(rows), "per_scene": {}}
    def rho(a, b):
        r = spearmanr(a, b).statistic
        return None if r != r else round(float(r), 3)
    v = [r["variety"] for r in rows]
    res["pooled"] = {"rho_variety_patch": rho(v, [r["entropy_patch"] for r in rows]),
                     "rho_variety_dataset": rho(v, [r["entropy_dataset"] for r in rows])}
    for name in dict.fromkeys(r["scene"] for r in rows):
        rs = [r for r in rows if r["scene"] == name]
        d = {"patches": len(rs),
             "rho_variety_patch": rho([r["variety"] for r in rs], [r["entropy_patch"] for r in rs]),
             "rho_variety_dataset": rho([r["variety"] for r in rs], [r["entropy_dataset"] for r in rs])}
        if rs[0]["scl_classes"] is not None:
            d["rho_scl_patch"] = rho([r["scl_classes"] for r in rs], [r["entropy_patch"] for r in rs])
            d["rho_scl_dataset"] = rho([r["scl_classes"] for r in rs], [r["entropy_dataset"] for r in rs])
        res["per_scene"][name] = d
    print(json.dumps(res, indent=1))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "entropy_real_scenes.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
