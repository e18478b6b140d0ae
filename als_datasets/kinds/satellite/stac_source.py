"""Satellite scenes from a STAC archive (issue 14, item 3): a recipe's ``stac:`` section → a search
through the core client (:func:`als_datasets.stac.search`, pystac-client) → one scene per item,
its COG assets read by window (GDAL ``/vsicurl/``; only the candidate patches' windows).

Recipe section (``kind: satellite``)::

    stac:
      api: https://earth-search.aws.element84.com/v1
      collections: [sentinel-2-l2a]
      datetime: 2021-04-01/2021-09-30      # RFC 3339 interval
      max_cloud_cover: 10                  # items with eo:cloud_cover below (percent)
      bbox: [w, s, e, n]                   # or:
      continents: [Europe, Africa]         # | all: one search per continent of the shipped layer
      scenes_per_continent: 2              # items kept per continent (seeded choice); with bbox: max_scenes
      biomes: [Tundra, 13]                 # | all: one search per biome of the recipe's ``biomes`` layer
      scenes_per_biome: 2                  # (RESOLVE 2017: a name, or its BIOME_NUM 1-14)
      max_scenes: 10
      max_items: 200                       # items asked per search
      bands: [B2, B3, B4, B8, B11, B12]    # default: every spectral band asset of the item
      candidate_patches: 64                # candidate patches per scene (a seeded sample of its grid)
      signer: planetary_computer:sign      # optional href-signing hook (hrefs stay unsigned in outputs)

Each item becomes a scene spec: band URLs by band name (from the asset file names / ``eo:bands``),
nodata and per-band scale / offset from ``raster:bands``, the ``scl`` / ``qa_pixel`` asset as the
cloud mask, the item's product facts (:func:`~.metadata.from_stac_item`).  The choice of items is a
pure function of the search results (sorted by collection and id) and the recipe's seed.

Areas: an item counts for the continent (biome) its footprint centre falls in, looked up as the
labels are (:mod:`als_datasets.kinds.raster.labels`); each continent's (biome's) search uses the
layer's simplified polygons of that area.  ``continents`` and ``biomes`` together draw both quotas
and keep their union (an item drawn twice counts once); ``bbox`` with either narrows each search to
the box; ``bbox`` alone: ``max_scenes`` items from the box.  ``biomes`` needs the recipe's
``biomes: {raster, table}`` layer (the one the satellite labels use; not shipped).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from als_datasets.errors import InputError

DEFAULT_CANDIDATES = 64
DEFAULT_PER_CONTINENT = 1


def _name(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", item_id)


def item_spec(item: dict, bands=None, candidates: int = DEFAULT_CANDIDATES) -> dict | None:
    """A scene spec for one STAC item (a dict as the API returns it), or None when it has no
    spectral band asset."""
    from als_datasets.kinds.raster.scenes import normalise_band_name
    from als_datasets.kinds.satellite.metadata import from_stac_item, sensor_label

    product = from_stac_item(item)
    files = dict(product.pop("files", {}))
    if bands:
        common = _common_to_band(item)
        want = [common.get(str(b).lower()) or normalise_band_name(b) for b in bands]
        files = {b: files[b] for b in want if b in files}
    if not files:
        return None
    order = sorted(files, key=_band_order)
    spec = {"name": _name(item["id"]), "path": f"stac:{item.get('collection', '')}/{item['id']}",
            "band_urls": {b: files[b] for b in order}, "product": product,
            "sensor": sensor_label(product), "candidate_patches": int(candidates)}
    if product.get("dates"):
        spec["date"] = product["dates"][0]
    if product.get("nodata") is not None:
        spec["nodata"] = product["nodata"]
    mask = product.get("mask")
    if mask and mask.get("href"):
        spec["cloud_mask"] = {"band": mask["band"], "path": mask["href"],
                              **({"bits": mask["bits"]} if mask.get("bits") else {"classes": mask["classes"]})}
    return spec


def _band_order(name: str):
    m = re.fullmatch(r"B(\d+)(A?)", name)
    return (int(m.group(1)), m.group(2)) if m else (99, name)


def _common_to_band(item: dict) -> dict[str, str]:
    """Common name (``red``) or asset key → band name (``B4``) for the item's spectral assets."""
    from als_datasets.kinds.satellite.metadata import asset_band

    out = {}
    for key, asset in (item.get("assets") or {}).items():
        b = asset_band(key, asset)
        if b is None:
            continue
        out[key.lower()] = b
        for eb in asset.get("eo:bands") or []:
            if eb.get("common_name"):
                out[str(eb["common_name"]).lower()] = b
    return out


def _as_dict(it) -> dict:
    return {"id": it.id, "collection": it.collection, "geometry": it.geometry, "bbox": it.bbox,
            "properties": dict(it.properties), "assets": dict(it.assets)}


def _choose(items: list[dict], n: int, seed: int, stream: str) -> list[dict]:
    if len(items) <= n:
        return items
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode())])
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False).tolist())]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", str(name).lower().replace("&", "and"))


def _continent_shapes(recipe, where) -> tuple[dict, object, dict]:
    """Continent name → simplified (multi)polygon of the recipe's continent layer, the lookup, aliases."""
    import shapely

    from als_datasets.kinds.raster.labels import ContinentLookup

    c = recipe.continents or {}
    lk = ContinentLookup(c.get("path"), field=c.get("field", "CONTINENT"), nearest_max_km=c.get("nearest_max_km", 500))
    out = {}
    for name in lk.continents:
        geom = shapely.union_all(lk.geoms[lk.names == name])
        out[name] = shapely.simplify(geom, 0.5, preserve_topology=True)
    return out, lk, {}


def _biome_shapes(recipe, where) -> tuple[dict, object, dict]:
    """Biome name → simplified lon/lat (multi)polygon of its pixels in the recipe's RESOLVE layer,
    the lookup, and the RESOLVE BIOME_NUM aliases ("1" … "14")."""
    import shapely
    from rasterio.features import shapes as raster_shapes
    from shapely.geometry import shape

    from als_datasets.kinds.raster.labels import BIOMES, BiomeLookup

    b = recipe.biomes
    if not b:
        raise InputError(where, "stac.biomes needs the recipe's biome layer (biomes: {raster, table}, RESOLVE 2017)")
    lk = BiomeLookup(b["raster"], b["table"], nearest_px=b.get("nearest_px", 2))
    back = None
    if lk._to_crs is not None:
        from pyproj import Transformer

        t = Transformer.from_crs(lk.crs, "EPSG:4326", always_xy=True)
        back = lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))  # noqa: E731
    tol = 0.5 if lk.geographic else 0.5 * 111_320.0
    out = {}
    for i, name in enumerate(lk.biomes):
        mask = lk.grid == i
        if not mask.any():
            continue
        polys = [shape(g) for g, _ in raster_shapes(mask.astype(np.uint8), mask=mask, transform=lk.transform)]
        geom = shapely.simplify(shapely.union_all(polys), tol, preserve_topology=True)
        out[name] = shapely.transform(geom, back) if back is not None else geom
    aliases = {str(i + 1): n for i, n in enumerate(BIOMES) if n in out}
    return out, lk, aliases


def _draw_by_area(key: str, per_key: str, cfg: dict, loaded, search, seed: int, where) -> list[dict]:
    """Items per area of ``cfg[key]`` (a list or ``all``): one search per area, the items whose
    footprint centre falls in it, ``cfg[per_key]`` of them (seeded)."""
    from shapely.geometry import box

    shapes, lookup, aliases = loaded
    raw = cfg[key]
    wanted = list(shapes) if raw == "all" else (raw if isinstance(raw, list) else [raw])
    norm = {_norm(k): k for k in shapes} | {_norm(a): k for a, k in aliases.items()}
    per = int(cfg.get(per_key, DEFAULT_PER_CONTINENT))
    bb = [float(v) for v in cfg.get("bbox") or []]
    clip = box(*(bb if len(bb) == 4 else bb[:2] + bb[3:5])) if bb else None
    chosen = []
    for w in wanted:
        name = norm.get(_norm(w))
        if name is None:
            num = {v: a for a, v in aliases.items()}
            valid = "; ".join(f"{k} ({num[k]})" if k in num else k for k in shapes)
            raise InputError(where, f"stac.{key}: unknown {key[:-1]} {w!r} (layer has: {valid})")
        geom = shapes[name] if clip is None else shapes[name].intersection(clip)
        if geom.is_empty:
            continue
        items = [d for d in search(geom.__geo_interface__) if _centre_in(d, lookup) == name]
        # continents keep their stream names (earlier builds unchanged); biomes get their own
        chosen += _choose(items, per, seed, name if key == "continents" else f"{key}:{name}")
    return chosen


def stac_specs(recipe) -> list[dict]:
    """The scene specs of the recipe's ``stac`` section (see the module docstring)."""
    from als_datasets import stac as stac_api
    from als_datasets.remote import redact, register_signer

    cfg = dict(recipe.stac or {})
    where = recipe.path or "<recipe>"
    api = str(cfg["api"])
    collections = cfg["collections"] if isinstance(cfg["collections"], list) else [cfg["collections"]]
    query = {}
    if cfg.get("max_cloud_cover") is not None:
        query["eo:cloud_cover"] = {"lt": float(cfg["max_cloud_cover"])}
    if cfg.get("signer"):
        register_signer(str(cfg.get("signer_prefix") or "https://"), str(cfg["signer"]))
    common = dict(collections=collections, datetime=cfg.get("datetime"), query=query or None,
                  max_items=int(cfg.get("max_items", 200)))
    cand = int(cfg.get("candidate_patches", DEFAULT_CANDIDATES))
    chosen: list[dict] = []
    search = lambda geom: [_as_dict(i) for i in stac_api.search(api, intersects=geom, **common)]  # noqa: E731
    areas = [("continents", "scenes_per_continent", _continent_shapes), ("biomes", "scenes_per_biome", _biome_shapes)]
    if any(cfg.get(k) for k, _, _ in areas):
        for key, per_key, load in areas:
            if cfg.get(key):
                chosen += _draw_by_area(key, per_key, cfg, load(recipe, where), search, recipe.seed, where)
    else:
        items = [_as_dict(i) for i in stac_api.search(api, bbox=cfg.get("bbox"), **common)]
        chosen = _choose(items, int(cfg.get("max_scenes", 10)), recipe.seed, "bbox")
    specs, seen = [], set()
    for d in chosen:
        spec = item_spec(d, cfg.get("bands"), cand)
        if spec is None or spec["name"] in seen:
            continue
        seen.add(spec["name"])
        specs.append(spec)
    if not specs:
        raise InputError(redact(api), f"the STAC search found no item with band assets in {', '.join(collections)}"
                                      f"{''.join(f' for {k} {cfg[k]}' for k in ('continents', 'biomes') if cfg.get(k))}")
    return specs


def _centre_in(d: dict, lookup) -> str | None:
    from shapely.geometry import box, shape

    g = shape(d["geometry"]) if d.get("geometry") else box(*d["bbox"][:4])
    c = g.centroid
    names, _ = lookup.lookup(np.array([c.x]), np.array([c.y]))
    return names[0]
