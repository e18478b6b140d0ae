"""The dataset card of a satellite or DEM build (``cards/raster_dataset_card.md``).

Like the ALS card (:mod:`.card`), everything comes from the folder: manifest.json, recipe.yaml,
index.parquet and the diversity report; the label rules (continent, biome, land cover) are the
ones written into the samples' metadata.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from als_datasets import SCHEMA_VERSION, __version__
from als_datasets.report.card import card_splits, distribution_markdown, diversity_markdown

BIBTEX = {
    "pretrain-where": """@misc{arxiv_2604_21104,
  howpublished = {arXiv:2604.21104},
  note         = {Pretrain Where? Global vs per-continent pre-training sets and per-sample spectral entropy},
  url          = {https://arxiv.org/abs/2604.21104}
}""",
    "satmae": """@inproceedings{cong2022satmae,
  title     = {SatMAE: Pre-training Transformers for Temporal and Multi-Spectral Satellite Imagery},
  author    = {Cong, Yezhen and others},
  booktitle = {NeurIPS},
  year      = {2022}
}""",
    "dem-mae": """@misc{arxiv_2309_03367,
  howpublished = {arXiv:2309.03367},
  note         = {Masked autoencoders on digital elevation models},
  url          = {https://arxiv.org/abs/2309.03367}
}""",
}


def citations(keys) -> str:
    """The card's citation block: the works (``BIBTEX`` keys) whose methods built this kind's set."""
    body = "\n".join(BIBTEX[k] for k in keys)
    return f"If you use this dataset, cite the works whose methods built it:\n\n```bibtex\n{body}\n```"

STRATEGY_TEXT = {
    "global": "**Global** (balanced across continents): each continent's eligible patches in a seeded random order, "
              "interleaved round-robin, so every prefix holds as many patches of each continent as it can",
    "random": "**Random**: a seeded uniform random order of all eligible patches",
    "spectral": "**Spectral**: a seeded weighted order of all eligible patches, weight exp(β·z) with z the patch's "
                "standardised spectral entropy (β = {beta}), so high-entropy patches come first while low-entropy "
                "land keeps a chance; the first patch of every continent present is moved to the front",
}


def _schema(kind, dtype: str) -> str:
    stats = ", ".join(kind.sample_stats)
    pix_type, _, pix_meaning = kind.pixels_text(dtype).partition(": ")
    return (
        "Sample key: `<scene>_c<col>_r<row>` (letters, digits, `_` and `-` only).\n\n"
        "| member / column | type | meaning |\n|---|---|---|\n"
        f"| `pixels.npy` | {pix_type} | {pix_meaning or 'the patch, one channel per band'} |\n"
        "| `json` | struct | scene, sensor, date, tile_id, split, crs, bounds (scene CRS), col, row, patch_size_px, "
        "resolution, lon, lat (centre), bands (source names), common_bands (STAC common names), continent, "
        f"continent_rule, biome, biome_rule, landcover, cloud_fraction, nodata_fraction, {stats}, strategy, "
        "draw_rank, weight, seed |")


def raster_sources(recipe: dict) -> list[str]:
    """The card's "Source data" lines when the recipe states no ``sources:``."""
    scenes = ", ".join(f"`{Path(str(sc.get('path'))).name}`" for sc in recipe.get("scenes") or [])
    lines = [f"- scenes: {scenes}"] if scenes else []
    stac = recipe.get("stac") or {}
    if stac:
        cols = stac.get("collections")
        lines.append(f"- STAC archive: `{stac.get('api')}`, collection(s) {', '.join(cols) if isinstance(cols, list) else cols}"
                     + (f", {stac['datetime']}" if stac.get("datetime") else "")
                     + (f", scene cloud cover < {stac['max_cloud_cover']} %" if stac.get("max_cloud_cover") is not None else "")
                     + " (the items used are listed below)")
    if not lines:
        lines = ["- scenes: none"]
    cont = recipe.get("continents") or {}
    lines.append(f"- continents: `{Path(cont['path']).name if cont.get('path') else 'Natural Earth 110m admin-0 (shipped)'}`")
    if recipe.get("biomes"):
        lines.append(f"- biomes: `{Path(recipe['biomes']['raster']).name}`")
    if recipe.get("landcover"):
        lines.append(f"- land cover: `{Path(recipe['landcover']['path']).name}`")
    return lines


def render_raster_card(kind, out_dir, div: dict, plots: list[Path], repo_id: str | None = None) -> tuple[dict, str]:
    """(card YAML dict, README text) of a build of the raster ``kind`` (a RasterKind)."""
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, DatasetCardData

    from als_datasets.dataset.card import card_yaml
    from als_datasets.report.card import sources_markdown

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    strategy = manifest["strategy"]
    dtype, patch = manifest.get("pixel_dtype", "uint16"), int(manifest.get("patch_size_px", 96))
    splits, formats = card_splits(manifest, recipe)
    what = kind.what
    pretty = f"{manifest['name']} — {what}, {strategy} sampling"
    tags = ["geospatial", "remote-sensing", "pretraining", f"sampling-{strategy.replace(':', '-')}"]
    tags += list(kind.tags)
    ydict = card_yaml(kind.features(manifest, recipe), splits, pretty_name=pretty,
                      license=recipe.get("license") or "other", tags=tags,
                      extra={"task_categories": ["image-feature-extraction"]}, formats=formats)
    if strategy.startswith("continent:"):
        st = f"**Continent** `{strategy.split(':', 1)[1]}`: only that continent's eligible patches, seeded random order"
    else:
        st = STRATEGY_TEXT.get(strategy, strategy).format(beta=recipe.get("spectral_beta"))
    method = (
        f"Every scene was brought to one grid (its finest band, or the declared resolution; coarser bands "
        f"nearest-resampled, finer ones averaged) and cut into {patch} px patches (stride "
        f"{recipe.get('stride_px') or patch} px). A patch is eligible when at most "
        f"{float(recipe.get('max_nodata_fraction', 0)):.0%} of its pixels are nodata (declared nodata, or zero fill "
        f"where a scene has no nodata tag) and at most {float(recipe.get('max_cloud_fraction', 0)):.0%} are cloud "
        f"({kind.cloud_text}). {st}. Walking that order, a patch is dropped when "
        f"more than {float(recipe.get('max_overlap', 0)):.0%} of its area is covered by a patch kept earlier (any "
        f"scene; R-tree over equal-area footprints); the first {manifest.get('samples')} kept patches form the set."
    )
    index = pq.read_table(out / "index.parquet").to_pandas()
    rules = []
    cont = recipe.get("continents") or {}
    rules.append(f"- **Continent**: Natural Earth admin-0 `{cont.get('field', 'CONTINENT')}` of the polygon holding "
                 f"the patch centre (layer: `{Path(cont['path']).name if cont.get('path') else 'ne_110m_admin_0_countries.geojson, shipped'}`); "
                 f"a centre at sea takes the nearest polygon's continent within {cont.get('nearest_max_km', 500)} km. "
                 "Natural Earth puts all of Russia and French Guiana in Europe.")
    rules.append("- **Biome**: RESOLVE Ecoregions 2017 biome at the patch centre (nearest pixel with a biome nearby "
                 "when the centre is on nodata)" if recipe.get("biomes") else "- **Biome**: none (no layer in the recipe)")
    rules.append("- **Land cover**: mode of a 5 × 5 grid of points in the patch" if recipe.get("landcover")
                 else "- **Land cover**: none (no layer in the recipe)")
    rules.append("\nEach sample's `continent_rule` / `biome_rule` says which rule gave its label.")
    limitations = [
        "Pixel values keep each sensor's units (reflectance × 10000, or raw DN): samples from different sensors are "
        "not radiometrically comparable; normalise per band (e.g. SatMAE-style) before training.",
        "Continent and biome are looked up at the patch centre; coarse layers (Natural Earth 110m, 1° biomes) "
        "mislabel patches near coasts and borders.",
    ]
    if "demo" in str(recipe.get("name", "")) or any("synthetic" in str(s.get("name", "")).lower()
                                                    for s in recipe.get("sources") or []):
        limitations.insert(0, "**This is an embedded synthetic demo**: the scenes are generated, not observed.")
    shards = [e for e in manifest["shards"] if e["format"] == "webdataset" and e["split"] == "train"]
    body = dict(
        pretty_name=pretty,
        summary=(f"{what.capitalize()} for self-supervised pre-training "
                 f"({kind.model_text}), built from "
                 f"{int(index['scene'].nunique()) if len(index) else 0} scene(s) with the *Pretrain Where?* (arXiv 2604.21104) "
                 "sampling strategies and per-sample diversity measures."),
        num_samples=div.get("num_samples"), splits_text=", ".join(f"{k}: {v}" for k, v in manifest["splits"].items()),
        num_scenes=int(index["scene"].nunique()) if len(index) else 0, strategy=strategy, seed=manifest["seed"],
        samples=manifest.get("samples"), patch_size_px=patch, bands_text=", ".join(manifest.get("bands") or []),
        dtype=dtype, tool_version=manifest.get("tool_version", __version__),
        schema_version=manifest.get("schema_version", SCHEMA_VERSION), method=method,
        sources=sources_markdown(recipe, raster_sources(recipe)) + kind.card_scenes(out),
        labels_note="\n".join(rules), diversity_table=diversity_markdown(div),
        distribution_table=distribution_markdown(div),
        entropy_note=kind.entropy_note(recipe, div),
        plots=[{"path": p.relative_to(out).as_posix(), "alt": p.stem.replace("_", " ")} for p in plots],
        schema=_schema(kind, dtype), repo_id=repo_id or f"ORG/{manifest['name']}",
        last_shard=f"{max(len(shards) - 1, 0):06d}", limitations="\n".join(f"- {x}" for x in limitations),
        citations=citations(kind.citation_keys),
    )
    template = resources.files("als_datasets.cards").joinpath("raster_dataset_card.md").read_text(encoding="utf-8")
    card = DatasetCard.from_template(DatasetCardData(**ydict), template_str=template, **body)
    return ydict, str(card)
