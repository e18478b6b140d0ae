"""ALS projects from where the data lives: a 3DEP-style archive index, COPC files through STAC.

Two recipe sections (DESIGN.md §12), read when the recipe is loaded:

``source: {archive: 3dep-ept, index: URL-or-file, projects: [names] | all, bbox: [w, s, e, n],
pointclouds: ept | stac}``
    every project of the archive index (:mod:`als_datasets.archives`) that is named (or all)
    and intersects ``bbox`` becomes a recipe project: its name, its boundary from the index
    (lon/lat), and as point cloud its ``ept.json`` URL (``pointclouds: ept``, the default) or
    the COPC files that the ``stac:`` section finds over its boundary (``pointclouds: stac``).

``stac: {api: URL, collection: ID | collections: [...], sign: pkg.mod:func, assets: [keys],
datetime: ..., query: {...}, project_property: NAME}``
    a STAC API to find COPC point clouds: the items whose footprint intersects a project's
    boundary (and, with ``project_property``, whose property of that name equals the project's
    name) give their COPC assets (by ``assets`` keys, else by COPC media type) as the project's
    point-cloud URLs.  A recipe project takes them with ``pointclouds: stac``.  ``sign`` names an
    optional URL-signing hook: hrefs are stored unsigned and signed only when fetched
    (:func:`als_datasets.remote.register_signer`).

The resolved projects are sorted by name and their URLs by the usual canonical order, so the
same index and catalogue always give the same build.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from als_datasets.errors import InputError

SOURCE_KEYS = {"archive", "index", "projects", "bbox", "pointclouds"}
STAC_KEYS = {"api", "collection", "collections", "sign", "assets", "datetime", "query", "project_property",
             "max_items"}
ARCHIVES = ("3dep-ept",)


@dataclass(frozen=True)
class ArchiveProject:
    """A project resolved from an archive: ``boundary`` names where its geometry came from."""

    name: str
    boundary: str
    boundary_geojson: str
    pointclouds: tuple[str, ...]


def _bbox(where, value, key: str):
    if value is None:
        return None
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]) or not all(-180 <= v <= 180 for v in box):
        raise InputError(where, f"{key} must be [west, south, east, north] in degrees, got {value!r}")
    return box


def check_stac(where, stac) -> dict | None:
    """The recipe's ``stac:`` section, validated (None when absent)."""
    if stac is None:
        return None
    if not isinstance(stac, dict) or not stac.get("api"):
        raise InputError(where, "stac must be a mapping with at least api: URL and collection: ID")
    extra = set(stac) - STAC_KEYS
    if extra:
        raise InputError(where, f"stac: unknown key(s): {', '.join(sorted(map(str, extra)))}")
    cols = stac.get("collections") or ([stac["collection"]] if stac.get("collection") else [])
    if isinstance(cols, str):
        cols = [cols]
    if not cols:
        raise InputError(where, "stac needs collection: ID (or collections: [IDs])")
    out = dict(stac)
    out["collections"] = [str(c) for c in cols]
    out.pop("collection", None)
    if stac.get("sign"):
        from als_datasets.remote import load_callable

        load_callable(str(stac["sign"]))
    return out


def stac_pointclouds(where, stac: dict, project: str, boundary) -> tuple[str, ...]:
    """COPC asset hrefs (unsigned) of the STAC items over ``boundary`` (shapely, lon/lat)."""
    from shapely.geometry import mapping

    from als_datasets import stac as stac_api

    items = stac_api.search(stac["api"], collections=stac["collections"], intersects=mapping(boundary),
                            datetime=stac.get("datetime"), query=stac.get("query"),
                            max_items=stac.get("max_items"))
    prop = stac.get("project_property")
    hrefs = []
    for it in items:
        if prop and str(it.properties.get(prop)) != project:
            continue
        foot = it.footprint()
        if foot is not None and not foot.intersects(boundary):
            continue
        keys = stac.get("assets")
        found = (stac_api.asset_hrefs(it, keys=keys) if keys
                 else stac_api.asset_hrefs(it, media_types=stac_api.COPC_MEDIA_TYPES))
        if not found and not keys:  # a catalogue without media types: the item's data assets
            found = [h for h in stac_api.asset_hrefs(it, roles=["data"]) if ".laz" in h.lower()]
        hrefs.extend(found)
    if not hrefs:
        raise InputError(where, f"project {project!r}: the STAC search of {stac_api.redact(stac['api'])} "
                                f"({', '.join(stac['collections'])}) found no COPC item over its boundary")
    return tuple(hrefs)


def register_stac_signer(stac: dict | None, hrefs) -> None:
    """Sign the hrefs' hosts with the recipe's hook when fetched (never stored signed)."""
    if not stac or not stac.get("sign"):
        return
    from urllib.parse import urlsplit

    from als_datasets.remote import register_signer

    for prefix in sorted({f"{urlsplit(h).scheme}://{urlsplit(h).netloc}/" for h in hrefs}):
        register_signer(prefix, str(stac["sign"]))


def archive_projects(where, base, source, stac: dict | None) -> list[ArchiveProject]:
    """The projects a recipe's ``source:`` section names (see the module's docstring)."""
    from shapely.geometry import shape

    from als_datasets.archives import read_index, select
    from als_datasets.recipe import resolve_path
    from als_datasets.remote import is_remote, redact

    if not isinstance(source, dict):
        raise InputError(where, "source must be a mapping {archive, index, projects, bbox}")
    extra = set(source) - SOURCE_KEYS
    if extra:
        raise InputError(where, f"source: unknown key(s): {', '.join(sorted(map(str, extra)))}")
    if source.get("archive") not in ARCHIVES:
        raise InputError(where, f"source.archive must be one of {', '.join(ARCHIVES)}, got {source.get('archive')!r}")
    index = source.get("index")
    if not index:
        raise InputError(where, "source.index is required (the archive's resources GeoJSON: a file or URL)")
    index = str(index) if is_remote(str(index)) else str(resolve_path(base, str(index)))
    names = source.get("projects", "all")
    if names != "all" and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise InputError(where, f"source.projects must be 'all' or a list of names, got {names!r}")
    mode = source.get("pointclouds", "ept")
    if mode not in ("ept", "stac"):
        raise InputError(where, f"source.pointclouds must be ept or stac, got {mode!r}")
    if mode == "stac" and not stac:
        raise InputError(where, "source.pointclouds: stac needs a stac: section (api, collection)")
    entries = select(read_index(index), names, _bbox(where, source.get("bbox"), "source.bbox"), where=where)
    if not entries:
        raise InputError(where, f"the archive index {redact(index)} has no project in source.projects/bbox")
    out = []
    for e in entries:
        if mode == "ept":
            if not e.url:
                raise InputError(redact(index), f"project {e.name!r} has no url (its ept.json) in the index")
            pcs = (e.url,)
        else:
            pcs = stac_pointclouds(where, stac, e.name, shape(e.geometry))
        name = re.sub(r"[^A-Za-z0-9_-]", "-", e.name)  # sample keys allow no other character
        out.append(ArchiveProject(name, f"{redact(index)}#{e.name}", json.dumps(e.geometry, sort_keys=True), pcs))
    return out
