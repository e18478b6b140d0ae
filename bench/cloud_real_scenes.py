"""Per-scene cloud fraction from the build's screen against the product's own cloud cover, on the
real scenes of ``../shared/data/satellite`` (issue 14; a measurement, not a speed benchmark).

    python bench/cloud_real_scenes.py

For each scene of ``builders/satellite-real.yaml``: the product's scene cloud cover (from the
metadata the scene ships with, where it has any), the method the build uses (mask band or pixel
test), and the screened cloud fraction over all valid pixels of the scene's candidate 96 px
patches.  For the Sentinel-2 L2A scene the pixel test is also run *instead of* its SCL mask, to
compare the two on the same pixels (per-pixel agreement).  Writes
``bench/results/cloud_real_scenes.json`` and prints a markdown table.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    from als_datasets.kinds.raster.frame import strip_cells
    from als_datasets.kinds.raster.plan import open_scenes
    from als_datasets.kinds.raster.scenes import read_cloud, read_patches
    from als_datasets.kinds.satellite.clouds import pixel_cloud, screen_setup
    from als_datasets.kinds.satellite.kind import cloud_method
    from als_datasets.recipe import load_recipe
    from als_datasets.registry import get_kind

    recipe = load_recipe(ROOT / "builders" / "satellite-real.yaml", out_dir="/tmp/cloud-bench-unused")
    kind = get_kind("satellite")
    scenes, commons = open_scenes(recipe, kind)
    rows = []
    for s, common in zip(scenes, commons):
        nc, nr = strip_cells(s, 96, 96)
        cells = [(c, r) for r in range(nr) for c in range(nc)]
        pix, valid = read_patches(s, cells, 96, 96)
        mask = read_cloud(s, cells, 96, 96)
        cloud = mask if mask is not None else kind.pixel_cloud(s, pix, valid)
        p = s.product
        row = {"scene": s.name, "sensor": s.sensor, "product_cloud_cover_pct": p.get("cloud_cover"),
               "metadata": p.get("source"), "method": cloud_method(s),
               "screened_pct": round(100 * float(cloud[valid].mean()), 2), "valid_pixels": int(valid.sum())}
        if mask is not None:
            setup = screen_setup(common, p["band_scale"], p["band_offset"], s.sensor, s.dtype,
                                 p.get("processing_level"))
            test = pixel_cloud(pix, valid, setup)
            m = mask & valid
            row["pixel_test_pct"] = round(100 * float(test[valid].mean()), 2)
            row["pixel_test_vs_mask"] = {
                "agreement": round(float((test[valid] == m[valid]).mean()), 4),
                "mask_cloud_found_by_test": round(float(test[m].mean()), 4) if m.any() else None,
                "test_cloud_in_mask": round(float(m[test].mean()), 4) if test.any() else None}
        rows.append(row)
    print("| scene | sensor | product cloud cover | metadata | method | screened cloud (valid pixels) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cc = r["product_cloud_cover_pct"]
        print(f"| {r['scene']} | {r['sensor']} | {'–' if cc is None else f'{cc:.2f} %'} | {r['metadata']} | "
              f"{r['method']} | {r['screened_pct']:.2f} % |")
    print(json.dumps([r for r in rows if "pixel_test_pct" in r], indent=1))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cloud_real_scenes.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
