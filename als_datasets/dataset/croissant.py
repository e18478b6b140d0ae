"""Croissant JSON-LD (``croissant.json``) for a build folder, with the GeoCroissant fields.

The document conforms to **Croissant 1.1** (``http://mlcommons.org/croissant/1.1``, the latest
version ``mlcroissant`` 1.1.1 knows; it is what gives ``isArray`` / ``arrayShape`` for the
point arrays) and declares **GeoCroissant 1.0** (``http://mlcommons.org/croissant/geo/1.0``)
as a second ``conformsTo`` value, as the GeoCroissant specification asks.

GeoCroissant property names follow the GeoCroissant 1.0 specification
(``docs/croissant-geo-spec.md`` in mlcommons/croissant, namespace prefix ``geocr`` =
``http://mlcommons.org/croissant/geo/``):

* ``geocr:coordinateReferenceSystem`` -- one ``sc:Text`` (cardinality ONE): the CRS of the
  samples' coordinates when they share one (ALS: the UTM zone each tile's ``xyz`` is in); a build
  spanning several leaves it out, lists them in the description, and each sample states its own
  in the record field ``json/crs``.
* ``geocr:spatialResolution`` -- a ``QuantitativeValue`` length (a ground sampling distance).
  ALS has no pixel size: the value is the mean point spacing, 1 / sqrt(mean point density), in
  metres; ``additionalProperty`` carries the density, the tile size and the sampling grid.
  Satellite builds give the ground sampling distance in metres when the recipe states it.
* ``geocr:bandConfiguration`` -- a ``geocr:BandConfiguration`` with ``geocr:totalBands`` and
  ``geocr:bandNamesList`` (the term of the vocabulary file ``croissant_geo.ttl``; the spec's prose
  writes ``bandNameList``) (ALS: the per-point attributes; raster: the band names) when every
  sample has the same channels, else a text stating each sensor's layout (see
  :func:`band_configuration`).
* ``geocr:samplingStrategy`` -- how the samples were drawn (strategy, seed, strata).
* ``spatialCoverage`` (schema.org ``Place`` / ``GeoShape`` ``box`` = "south west north east" in
  WGS 84 degrees, from ``index.parquet``'s total bounds) and ``temporalCoverage`` (only when
  known: passed in, or read from the recipe; never invented).

Reading: the ``default`` record set reads ``parquet/<split>/*.parquet`` through a ``cr:FileSet``
(``mlcroissant`` resolves ``includes`` globs against the folder holding ``croissant.json``), one
field per Parquet column (array columns as ``isArray`` with ``arrayShape``, the ``json`` struct
as sub-fields extracted with ``jsonPath``) plus a ``split`` field taken from the file path.  The
``index`` record set reads ``index.parquet`` (one row per sample, no point data).  Every shard is
also listed as a ``cr:FileObject`` with its ``sha256`` and ``contentSize`` from manifest.json.
WebDataset tars are described (FileSet + FileObjects) but have no record set: ``mlcroissant``
cannot read records out of tar members without extracting the whole archive.

Deterministic: no timestamps (``datePublished`` only when passed in), keys sorted, and every
value derived from the folder (manifest.json, recipe.yaml, index.parquet, the Parquet schema).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from als_datasets import __version__
from als_datasets.registry import get_kind
from als_datasets.shards.writer import atomic_write, sha256_file

__all__ = [
    "CROISSANT_FILE",
    "CROISSANT_VERSION",
    "GEOCROISSANT_VERSION",
    "croissant_bytes",
    "croissant_metadata",
    "write_croissant",
]

CROISSANT_FILE = "croissant.json"
CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
GEOCROISSANT_VERSION = "http://mlcommons.org/croissant/geo/1.0"
GEOCR_NS = "http://mlcommons.org/croissant/geo/"

#: The Croissant 1.1 @context (the terms mlcroissant 1.1.1 expects) plus the GeoCroissant prefix.
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "geocr": GEOCR_NS,
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

#: The papers behind the tool (DESIGN.md §1), as arXiv references (no invented titles).
PAPERS: list[dict[str, str]] = [
    {"arxiv": "2501.05095", "key": "als_pretraining_2025", "year": "2025",
     "about": "Large-scale ALS (airborne LiDAR) pre-training with geospatial sampling over land cover x slope"},
    {"arxiv": "2309.03367", "key": "dem_mae_2023", "year": "2023",
     "about": "Masked autoencoders on digital elevation models for low-resource downstream tasks"},
    {"arxiv": "2604.21104", "key": "pretrain_where_2026", "year": "2026",
     "about": "Pretrain Where? Geographic and spectral diversity of Sentinel-2 pre-training sets"},
]

#: field descriptions every kind shares; a kind adds its own (``Kind.croissant_facts`` ``field_docs``)
FIELD_DOCS = {
    "json": "Per-sample metadata (the dataset card's sample schema).",
    "lon": "Longitude of the sample centre (EPSG:4326, degrees).",
    "lat": "Latitude of the sample centre (EPSG:4326, degrees).",
    "split": "Dataset split.",
}

_MIME = {"parquet": "application/x-parquet", "webdataset": "application/x-tar"}


# --------------------------------------------------------------------------------------------- helpers

def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _card_yaml(out: Path) -> dict:
    """The YAML front matter of the folder's README.md (the Hub card), or {}."""
    p = out / "README.md"
    if not p.is_file():
        return {}
    text = p.read_text()
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _clean_float(x: float, nd: int = 6) -> float:
    return float(round(float(x), nd))


def _arrow_type(t) -> tuple[str | None, list[int] | None]:
    """(Croissant dataType, array shape) of a pyarrow type; shape None for scalars."""
    import pyarrow as pa

    shape: list[int] = []
    t = getattr(t, "storage_type", t)  # extension types (datasets' ArrayND): describe their storage
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        shape.append(t.list_size if pa.types.is_fixed_size_list(t) else -1)
        t = getattr(t.value_type, "storage_type", t.value_type)
    scalar = {
        "string": "sc:Text", "large_string": "sc:Text", "bool": "sc:Boolean",
        "float": "cr:Float32", "halffloat": "cr:Float16", "double": "cr:Float64",
        "int8": "cr:Int8", "int16": "cr:Int16", "int32": "cr:Int32", "int64": "cr:Int64",
        "uint8": "cr:UInt8", "uint16": "cr:UInt16", "uint32": "cr:UInt32", "uint64": "cr:UInt64",
        "date32[day]": "sc:Date", "binary": "sc:Text", "large_binary": "sc:Text",
    }.get(str(t))
    if scalar is None and pa.types.is_timestamp(t):
        scalar = "sc:DateTime"
    return scalar, (shape or None)


def _hf_shape(field) -> list[int] | None:
    """Fixed dimensions declared by a `datasets` ArrayND extension (``[[null, 3], "float32"]``)."""
    ext_shape = getattr(field.type, "shape", None)  # the extension type, when `datasets` is imported
    if isinstance(ext_shape, (tuple, list)):
        return [-1 if d is None else int(d) for d in ext_shape]
    meta = field.metadata or {}
    raw = meta.get(b"ARROW:extension:metadata")
    if not raw or b"Array" not in meta.get(b"ARROW:extension:name", b""):
        return None
    try:
        dims = json.loads(raw)[0]
        return [-1 if d is None else int(d) for d in dims]
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def _array_props(shape: list[int] | None) -> dict:
    if not shape:
        return {}
    return {"isArray": True, "arrayShape": ",".join(str(d) for d in shape)}


def _column_field(rs: str, fs: str, col, docs: Mapping[str, str]) -> dict | None:
    """A cr:Field for one Parquet column (None when its type has no Croissant equivalent)."""
    dtype, shape = _arrow_type(col.type)
    if dtype is None:
        return None
    shape = _hf_shape(col) or shape
    f = {
        "@type": "cr:Field", "@id": f"{rs}/{col.name}", "name": col.name, "dataType": dtype,
        "source": {"fileSet": {"@id": fs}, "extract": {"column": col.name}},
        **_array_props(shape),
    }
    if docs.get(col.name):
        f["description"] = docs[col.name]
    return f


def _json_field(rs: str, fs: str, col, docs: Mapping[str, str], json_fields: Iterable[str]) -> dict | None:
    """The ``json`` struct column as a field with one sub-field per interesting key (``json_fields``)."""
    import pyarrow as pa

    if not pa.types.is_struct(col.type):
        return _column_field(rs, fs, col, docs)
    parent = f"{rs}/{col.name}"
    children = {col.type.field(i).name: col.type.field(i) for i in range(col.type.num_fields)}
    subs = []
    for name in json_fields:
        child = children.get(name)
        if child is None:
            continue
        dtype, shape = _arrow_type(child.type)
        if dtype is None:
            continue
        sf = {
            "@type": "cr:Field", "@id": f"{parent}/{name}", "name": name, "dataType": dtype,
            "source": {"fileSet": {"@id": fs}, "extract": {"column": col.name},
                       "transform": {"jsonPath": name}},
            **_array_props(shape),
        }
        if name in docs:
            sf["description"] = docs[name]
        subs.append(sf)
    return {"@type": "cr:Field", "@id": parent, "name": col.name, "description": docs["json"],
            "subField": subs}


def _first_shard_schema(out: Path, shards: list[dict], fmt: str):
    import pyarrow.parquet as pq

    for e in shards:
        if e.get("format") == fmt and (out / e["path"]).is_file():
            return pq.read_schema(out / e["path"])
    return None


def _index_stats(out: Path) -> dict:
    """CRSs, WGS 84 bbox, mean density and the column schema of index.parquet."""
    p = out / "index.parquet"
    if not p.is_file():
        return {}
    import geopandas as gpd
    import pyarrow.parquet as pq

    gdf = gpd.read_parquet(p)
    stats: dict[str, Any] = {"schema": pq.read_schema(p), "rows": len(gdf)}
    if "crs" in gdf:
        stats["crs"] = sorted({str(c) for c in gdf["crs"].dropna()})
    if len(gdf) and gdf.geometry.notna().any():
        g = gdf.geometry
        if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
            g = g.to_crs(4326)
        w, s, e, n = (float(v) for v in g.total_bounds)
        if all(math.isfinite(v) for v in (w, s, e, n)):
            stats["bbox"] = (s, w, n, e)
    elif {"lon", "lat"} <= set(gdf.columns) and len(gdf):
        stats["bbox"] = (float(gdf.lat.min()), float(gdf.lon.min()), float(gdf.lat.max()), float(gdf.lon.max()))
    if "density" in gdf and gdf["density"].notna().any():
        stats["density_mean"] = float(gdf["density"].mean())
    return stats


def _citations(citations: Iterable[str | Mapping] | None) -> tuple[str, list]:
    """(citeAs BibTeX text, schema.org ``citation`` list)."""
    if citations is not None:
        items = list(citations)
        texts = [c if isinstance(c, str) else json.dumps(dict(c), sort_keys=True) for c in items]
        return "\n".join(texts), [c if isinstance(c, str) else dict(c) for c in items]
    bib = "\n".join(
        f"@misc{{{p['key']},\n  note          = {{{p['about']}}},\n  eprint        = {{{p['arxiv']}}},\n"
        f"  archivePrefix = {{arXiv}},\n  year          = {{{p['year']}}},\n"
        f"  url           = {{https://arxiv.org/abs/{p['arxiv']}}}\n}}"
        for p in PAPERS)
    cites = [{"@type": "ScholarlyArticle", "identifier": f"arXiv:{p['arxiv']}", "description": p["about"],
              "url": f"https://arxiv.org/abs/{p['arxiv']}"} for p in PAPERS]
    return bib, cites


def quantity(value, unit: str, description: str | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    q: dict[str, Any] = {"@type": "QuantitativeValue", "value": value, "unitText": unit}
    if description:
        q["description"] = description
    if extra:
        q["additionalProperty"] = [{"@type": "PropertyValue", "name": k, "value": v, "unitText": "m"}
                                   for k, v in extra.items()]
    return q


# --------------------------------------------------------------------------------------------- API

def croissant_metadata(out_dir, name: str | None = None, description: str | None = None,
                       license: str | None = None, url: str | None = None,
                       citations: Iterable[str | Mapping] | None = None,
                       date_published: str | None = None, temporal_coverage: str | None = None) -> dict:
    """Croissant 1.1 + GeoCroissant 1.0 JSON-LD describing the build folder ``out_dir``.

    ``citations``: BibTeX strings (joined into ``citeAs``) or schema.org objects; default the
    three papers of DESIGN.md §1.  ``license`` defaults to the recipe's ``license`` or the card's
    (README.md YAML) ``license``.  ``date_published`` / ``temporal_coverage`` are written only
    when given (``temporal_coverage`` also from the recipe's ``temporal_coverage``), so the output
    depends on nothing but the folder and the arguments.
    """
    out = Path(out_dir)
    manifest = _read_json(out / "manifest.json")
    if not manifest:
        raise FileNotFoundError(f"{out / 'manifest.json'} not found: not a build folder")
    recipe = _read_yaml(out / "recipe.yaml")
    kind = get_kind(manifest.get("kind") or recipe.get("kind"), out / "manifest.json")
    docs = {**FIELD_DOCS, **kind.field_docs}
    json_fields = kind.json_fields
    shards = sorted(manifest.get("shards", []), key=lambda e: e["path"])
    splits = sorted(manifest.get("splits") or {e["split"] for e in shards if "split" in e})
    idx = _index_stats(out)
    ds_name = name or manifest.get("name") or recipe.get("name") or out.name
    strategy = manifest.get("strategy") or recipe.get("strategy")
    seed = manifest.get("seed", recipe.get("seed"))
    n_samples = sum(int(v) for v in (manifest.get("splits") or {}).values())
    if description is None:
        what = kind.croissant_facts(manifest, recipe, idx, [])["what"]
        description = (f"{n_samples} {what} for pre-training geospatial foundation models, drawn by "
                       f"{strategy or 'unspecified'} sampling (seed {seed}); built with als-datasets "
                       f"{manifest.get('tool_version', __version__)}.")
    cite_as, cites = _citations(citations)

    # ---- distribution: every shard (integrity) + one FileSet per format/split (reading)
    dist: list[dict] = []
    for e in shards:
        fmt = e.get("format", "parquet" if e["path"].endswith(".parquet") else "webdataset")
        dist.append({
            "@type": "cr:FileObject", "@id": e["path"], "name": e["path"], "contentUrl": e["path"],
            "encodingFormat": _MIME.get(fmt, "application/octet-stream"), "sha256": e["sha256"],
            "contentSize": f"{int(e['bytes'])} B",
        })
    formats = sorted({e.get("format") for e in shards if e.get("format") in _MIME})
    filesets = {}
    for fmt in formats:
        ext = "parquet" if fmt == "parquet" else "tar"
        fs_id = f"{fmt}-files"
        filesets[fmt] = fs_id
        dist.append({
            "@type": "cr:FileSet", "@id": fs_id, "name": fs_id, "encodingFormat": _MIME[fmt],
            "description": f"All {fmt} shards ({fmt}/<split>/*.{ext}).",
            "includes": [f"{fmt}/{s}/*.{ext}" for s in splits],
        })
    if idx:
        dist.append({
            "@type": "cr:FileObject", "@id": "index.parquet", "name": "index.parquet", "contentUrl": "index.parquet",
            "encodingFormat": "application/x-parquet",
            "description": "GeoParquet (EPSG:4326), one row per sample: key, split, footprint and labels.",
            "sha256": sha256_file(out / "index.parquet"),
            "contentSize": f"{(out / 'index.parquet').stat().st_size} B",
        })

    # ---- record sets
    record_sets: list[dict] = []
    columns: list[str] = []
    schema = _first_shard_schema(out, shards, "parquet") if "parquet" in filesets else None
    if schema is not None:
        rs, fs = "default", filesets["parquet"]
        fields = []
        for col in schema:
            columns.append(col.name)
            f = _json_field(rs, fs, col, docs, json_fields) if col.name == "json" else _column_field(rs, fs, col, docs)
            if f is not None:
                fields.append(f)
        fields.append({
            "@type": "cr:Field", "@id": f"{rs}/split", "name": "split", "dataType": "sc:Text",
            "description": "Split, from the shard's folder (parquet/<split>/).",
            "source": {"fileSet": {"@id": fs}, "extract": {"fileProperty": "fullpath"},
                       "transform": {"regex": r"^(?:.*/)?parquet/([^/]+)/[^/]+$"}},
        })
        rec = {"@type": "cr:RecordSet", "@id": rs, "name": rs, "field": fields,
               "description": "One record per sample, read from the Parquet shards (the Hub's `default` config)."}
        if "__key__" in columns:
            rec["key"] = {"@id": f"{rs}/__key__"}
        record_sets.append(rec)
    if idx:
        rs = "index"
        fields = []
        for col in idx["schema"]:
            if col.name == "geometry" or col.name.startswith("__"):
                continue
            dtype, shape = _arrow_type(col.type)
            if dtype is None:
                continue
            f = {"@type": "cr:Field", "@id": f"{rs}/{col.name}", "name": col.name, "dataType": dtype,
                 "source": {"fileObject": {"@id": "index.parquet"}, "extract": {"column": col.name}},
                 **_array_props(shape)}
            if col.name in docs:
                f["description"] = docs[col.name]
            fields.append(f)
        rec = {"@type": "cr:RecordSet", "@id": rs, "name": rs, "field": fields,
               "description": "Sample catalogue (index.parquet): one row per sample, labels and centre, no points."}
        if any(f["name"] == "key" for f in fields):
            rec["key"] = {"@id": f"{rs}/key"}
        record_sets.append(rec)

    facts = kind.croissant_facts(manifest, recipe, idx, columns)

    # ---- dataset
    meta: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT_VERSION, GEOCROISSANT_VERSION],
        "name": str(ds_name),
        "description": description,
        "version": str(manifest.get("tool_version") or __version__),
        "citeAs": cite_as,
        "citation": cites,
        "keywords": sorted({"geospatial", "pre-training"} | set(facts["keywords"])),
        "distribution": dist,
        "recordSet": record_sets,
    }
    license = license or recipe.get("license") or _card_yaml(out).get("license")
    if license:
        meta["license"] = str(license)
    if url:
        meta["url"] = url
    if date_published:
        meta["datePublished"] = date_published
    temporal = temporal_coverage or recipe.get("temporal_coverage")
    if temporal:
        meta["temporalCoverage"] = str(temporal)

    # ---- GeoCroissant
    crs = idx.get("crs") or []
    if len(crs) == 1:  # cardinality ONE (sc:Text): several CRSs are stated per sample, not here
        meta["geocr:coordinateReferenceSystem"] = crs[0]
    elif crs:
        meta["description"] += (f" The samples are in {len(crs)} coordinate reference systems ({', '.join(crs)}), "
                                "each sample's in its json.crs field.")
    if "bbox" in idx:
        s, w, n, e = (_clean_float(v) for v in idx["bbox"])
        meta["spatialCoverage"] = {"@type": "Place", "geo": {"@type": "GeoShape", "box": f"{s} {w} {n} {e}"}}
    res = facts["resolution"]
    if res:
        meta["geocr:spatialResolution"] = res
    band_config = band_configuration(manifest.get("band_layouts"), list(manifest.get("bands") or []) or facts["bands"])
    if band_config:
        meta["geocr:bandConfiguration"] = band_config
    if strategy:
        text = f"{strategy} sampling, seed {seed}" + facts["strategy_note"]
        if recipe.get("samples_per_project") is not None:
            text += f"; {recipe['samples_per_project']} samples per project"
        if manifest.get("patch_size_px") is not None:
            text += f"; {manifest['patch_size_px']} px patches, at most {manifest.get('samples')} samples"
        if recipe.get("tile_size_m") is not None:
            text += f"; {recipe['tile_size_m']} m tiles"
        meta["geocr:samplingStrategy"] = text + "."
    return json.loads(json.dumps(meta))  # plain JSON types only


def band_configuration(layouts: list[dict] | None, bands: list[str]) -> dict | str | None:
    """``geocr:bandConfiguration`` (cardinality ONE): a ``geocr:BandConfiguration`` when every
    sample has the same channels (``geocr:totalBands`` = their number, ``geocr:bandNamesList`` in
    channel order — the vocabulary's term, croissant_geo.ttl; the spec's prose writes
    ``bandNameList``); when the channels vary by sensor (``layouts`` of the manifest), the text
    the vocabulary also allows, stating each layout, since no single band stack is true."""
    if layouts and len(layouts) > 1:
        parts = [f"{x['sensor']}: {x['channels']} ({', '.join(x['bands'])})" for x in layouts]
        return ("Channels vary by sensor; a sample's pixels.npy holds its sensor's bands in the order of its "
                "json.common_bands. Layouts: " + "; ".join(parts) + ".")
    if layouts:
        bands = list(layouts[0]["bands"])
    if not bands:
        return None
    return {"@type": "geocr:BandConfiguration", "geocr:totalBands": len(bands), "geocr:bandNamesList": bands}


def croissant_bytes(out_dir, **kw) -> bytes:
    """The exact bytes :func:`write_croissant` writes."""
    return (json.dumps(croissant_metadata(out_dir, **kw), indent=2, sort_keys=True, ensure_ascii=False)
            + "\n").encode("utf-8")


def write_croissant(out_dir, **kw) -> Path:
    """Write ``OUT/croissant.json`` atomically; returns its path."""
    path = Path(out_dir) / CROISSANT_FILE
    data = croissant_bytes(out_dir, **kw)
    atomic_write(path, lambda f: f.write(data))
    return path
