"""Product metadata of a satellite scene, read from what ships with it (issue 14, item 1).

Per scene: acquisition date(s), scene cloud cover, platform / sensor, processing level, per-band
scale and offset (physical value = DN × scale + offset) and nodata, and the cloud-mask band.  The
sources, first found wins:

* Landsat ``*_MTL.txt`` (ODL ``GROUP = … / KEY = value``) or ``*_MTL.xml`` (Collection 2):
  ``DATE_ACQUIRED``, ``CLOUD_COVER``, ``SPACECRAFT_ID``, ``PROCESSING_LEVEL`` (C2) / ``DATA_TYPE`` (C1),
  ``REFLECTANCE_MULT_BAND_n`` / ``REFLECTANCE_ADD_BAND_n`` — from the Level-2 surface-reflectance
  group when there is one (C2 L2: 0.0000275 and −0.2), else the Level-1 TOA rescaling;
* Sentinel-2 SAFE ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` (``PRODUCT_START_TIME``,
  ``Cloud_Coverage_Assessment``, ``(BOA_)QUANTIFICATION_VALUE``, ``BOA_ADD_OFFSET`` /
  ``RADIO_ADD_OFFSET`` per band id since baseline 04.00) or tile ``MTD_TL.xml``, or AWS
  ``tileInfo.json`` (``timestamp``, ``cloudyPixelPercentage``, ``productName``);
* a STAC item JSON beside the files (``datetime``, ``eo:cloud_cover``, ``platform``, assets'
  ``raster:bands`` scale / offset / nodata, matched to the band files by file name; the ``scl`` /
  ``qa_pixel`` asset is the cloud mask) — :func:`from_stac_item`, also used for STAC archives;
* an Open Data Cube ``agdc-metadata.yaml`` (``extent.center_dt``, ``platform.code``);
* the file-name conventions as a fallback: Landsat product / scene ids (``LC08_L2SP_232066_20201031_…``,
  ``LC80200392015216LGN00``), Sentinel-2 product / tile names (``S2A_MSIL2A_20200219T112111_…``,
  ``S2A_29RKH_20200219_0_L2A``, ``T29RKH_20200219T113421_B02``).

Several acquisition dates in one scene (dates in band descriptions or tags, a file name with
several dates outside a known convention) are recorded in ``dates`` and warned about.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

#: Landsat Collection-2 ``QA_PIXEL`` bits counted as cloud: dilated cloud 1, cirrus 2, cloud 3, shadow 4
LANDSAT_QA_BITS = (1, 2, 3, 4)
#: Sentinel-2 SCL classes counted as cloud: shadow 3, medium 8, high 9, thin cirrus 10
S2_SCL_CLASSES = (3, 8, 9, 10)
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")
_L_PRODUCT = re.compile(r"L([COTEM])0?([45789])_(L\w{3})_(\d{6})_(\d{8})_(\d{8})_(\d{2})_(T1|T2|RT)")
_L_SCENE = re.compile(r"L([COTEM])([45789])(\d{3})(\d{3})(\d{4})(\d{3})[A-Z]{3}\d{2}")
_S2_PRODUCT = re.compile(r"S2([ABCD])_MSI(L1C|L2A)_(\d{8})T(\d{6})")
_S2_COG = re.compile(r"S2([ABCD])_(\d{2}[A-Z]{3})_(\d{8})_\d+_(L1C|L2A)")
_S2_TILE = re.compile(r"T(\d{2}[A-Z]{3})_(\d{8})T(\d{6})")
_LANDSAT_SENSOR = {"C": "oli-tirs", "O": "oli", "T": "tm", "E": "etm", "M": "mss"}


def _iso_date(y, m, d) -> str:
    return f"{y}-{m}-{d}"


def _float(v):
    try:
        return float(str(v).strip().strip('"'))
    except (TypeError, ValueError):
        return None


def empty_product(source: str, source_file: str | None = None) -> dict:
    return {"source": source, "source_file": source_file, "product_id": None, "platform": None, "sensor": None,
            "processing_level": None, "dates": [], "datetime": None, "cloud_cover": None, "scale": {},
            "offset": {}, "nodata": None, "mask": None, "warnings": []}


def _band_key(name) -> str:
    from als_datasets.kinds.raster.scenes import normalise_band_name

    return normalise_band_name(name)


# ---- Landsat MTL ------------------------------------------------------------------------------

def parse_mtl_text(text: str) -> dict[str, dict[str, str]]:
    """``{group: {KEY: value}}`` of an ODL ``_MTL.txt`` (innermost group of each key)."""
    groups: dict[str, dict[str, str]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        k, v = (x.strip() for x in line.split("=", 1))
        if k == "GROUP":
            stack.append(v)
        elif k == "END_GROUP":
            if stack:
                stack.pop()
        else:
            groups.setdefault(stack[-1] if stack else "", {})[k] = v.strip('"')
    return groups


def parse_mtl_xml(text: str) -> dict[str, dict[str, str]]:
    """The same for a Collection-2 ``_MTL.xml`` (group = the parent element)."""
    root = ET.fromstring(text)
    groups: dict[str, dict[str, str]] = {}
    for parent in root.iter():
        for child in parent:
            if len(child) == 0 and child.text is not None:
                groups.setdefault(parent.tag, {})[child.tag] = child.text.strip()
    return groups


def from_mtl(groups: dict[str, dict[str, str]], source: str, source_file: str) -> dict:
    flat = {k: v for g in groups.values() for k, v in g.items()}
    p = empty_product(source, source_file)
    p["product_id"] = flat.get("LANDSAT_PRODUCT_ID") or flat.get("LANDSAT_SCENE_ID")
    sc = flat.get("SPACECRAFT_ID", "")
    m = re.search(r"(\d)", sc)
    p["platform"] = f"landsat-{m.group(1)}" if m else (sc.lower() or None)
    p["sensor"] = flat.get("SENSOR_ID", "").lower().replace("_", "-") or None
    p["processing_level"] = flat.get("PROCESSING_LEVEL") or flat.get("DATA_TYPE")
    d = flat.get("DATE_ACQUIRED")
    if d:
        p["dates"] = [d[:10]]
        t = flat.get("SCENE_CENTER_TIME")
        p["datetime"] = f"{d[:10]}T{t}" if t else d[:10]
    p["cloud_cover"] = _float(flat.get("CLOUD_COVER"))
    l2 = next((g for name, g in groups.items() if "SURFACE_REFLECTANCE" in name), None)
    rescale = l2 or next((g for name, g in groups.items() if "RADIOMETRIC_RESCALING" in name), None) or {}
    for k, v in rescale.items():
        m = re.fullmatch(r"REFLECTANCE_(MULT|ADD)_BAND_(\d+)", k)
        if m and _float(v) is not None:
            p["scale" if m.group(1) == "MULT" else "offset"][f"B{int(m.group(2))}"] = _float(v)
    p["scale_meaning"] = ("surface reflectance" if l2 else "top-of-atmosphere reflectance (without the sun-elevation "
                          "correction)") if rescale else None
    if any("QA_PIXEL" in k for k in flat):
        p["mask"] = {"band": "QA_PIXEL", "bits": list(LANDSAT_QA_BITS)}
    return p


# ---- Sentinel-2 --------------------------------------------------------------------------------

def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def from_s2_xml(text: str, source_file: str) -> dict:
    """Sentinel-2 SAFE product ``MTD_MSIL*.xml`` or tile ``MTD_TL.xml``."""
    root = ET.fromstring(text)
    vals: dict[str, str] = {}
    offsets: dict[str, float] = {}
    band_ids: dict[str, str] = {}
    for el in root.iter():
        tag = _local(el.tag)
        if tag in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") and el.get("band_id") is not None:
            offsets[el.get("band_id")] = float(el.text)
        elif tag == "SPECTRAL_INFORMATION" and el.get("bandId") is not None:
            band_ids[el.get("bandId")] = el.get("physicalBand")
        elif len(el) == 0 and el.text and el.text.strip():
            vals.setdefault(tag, el.text.strip())
    p = empty_product("Sentinel-2 SAFE metadata", source_file)
    p["product_id"] = vals.get("PRODUCT_URI") or vals.get("TILE_ID")
    sp = vals.get("SPACECRAFT_NAME", "")
    p["platform"] = sp.lower() if sp else None
    p["sensor"] = "msi"
    lvl = vals.get("PROCESSING_LEVEL") or ("Level-2A" if "L2A" in source_file else None)
    p["processing_level"] = lvl.replace("Level-", "L") if lvl else None
    when = vals.get("PRODUCT_START_TIME") or vals.get("SENSING_TIME") or vals.get("DATATAKE_SENSING_START")
    if when:
        p["datetime"], p["dates"] = when, [when[:10]]
    p["cloud_cover"] = _float(vals.get("Cloud_Coverage_Assessment") or vals.get("CLOUDY_PIXEL_PERCENTAGE"))
    q = _float(vals.get("BOA_QUANTIFICATION_VALUE") or vals.get("QUANTIFICATION_VALUE"))
    names = [f"B{i}" for i in range(1, 13)] + ["B8A"]
    if q:
        p["scale"] = {b: 1.0 / q for b in names}
        p["offset"] = {b: 0.0 for b in names}
        for bid, off in offsets.items():  # band_id 0..12 in the SAFE order B1..B8, B8A, B9..B12
            name = band_ids.get(bid) or _S2_ORDER[int(bid)]
            p["offset"][_band_key(name)] = off / q
        p["scale_meaning"] = "surface reflectance" if "2A" in (p["processing_level"] or "") else "TOA reflectance"
    nod = vals.get("NODATA_PIXEL_VALUE")
    p["nodata"] = _float(nod) if nod else 0.0
    if "2A" in (p["processing_level"] or ""):
        p["mask"] = {"band": "SCL", "classes": list(S2_SCL_CLASSES)}
    return p


_S2_ORDER = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


def from_tileinfo(d: dict, source_file: str) -> dict:
    p = empty_product("Sentinel-2 tileInfo.json", source_file)
    name = str(d.get("productName") or "")
    p["product_id"] = name or None
    m = _S2_PRODUCT.search(name)
    if m:
        p["platform"] = f"sentinel-2{m.group(1).lower()}"
        p["processing_level"] = m.group(2)
    p["sensor"] = "msi"
    ts = d.get("timestamp")
    if ts:
        p["datetime"], p["dates"] = str(ts), [str(ts)[:10]]
    p["cloud_cover"] = _float(d.get("cloudyPixelPercentage"))
    if p["processing_level"] == "L2A":
        p["mask"] = {"band": "SCL", "classes": list(S2_SCL_CLASSES)}
    return p


# ---- STAC item ---------------------------------------------------------------------------------

#: STAC asset keys of the cloud masks (Earth Search / Planetary Computer / USGS spellings)
MASK_ASSETS = {"scl": ("SCL", {"classes": list(S2_SCL_CLASSES)}), "SCL": ("SCL", {"classes": list(S2_SCL_CLASSES)}),
               "qa_pixel": ("QA_PIXEL", {"bits": list(LANDSAT_QA_BITS)}),
               "QA_PIXEL": ("QA_PIXEL", {"bits": list(LANDSAT_QA_BITS)})}


def asset_band(key: str, asset: dict) -> str | None:
    """The band name of a STAC asset (``B2``, ``B8A``): from its file name (``…/B02.tif``,
    ``…_SR_B4.TIF``), else its ``eo:bands`` name or key when that is a band number; None for
    assets that are not spectral bands (AOT, WVP, TCI, thumbnails, metadata)."""
    from als_datasets.kinds.raster.scenes import band_name_from_file

    pat = re.compile(r"(?:SR_)?(B\d{1,2}A?)", re.IGNORECASE)
    href = str(asset.get("href") or "").split("?", 1)[0]
    for cand in ([band_name_from_file(href.rsplit("/", 1)[-1])] if href else []) + \
            [b.get("name") or "" for b in (asset.get("eo:bands") or [])][:1] + [key]:
        m = pat.fullmatch(str(cand))
        if m:
            return _band_key(m.group(1))
    return None


def from_stac_item(item: dict, source_file: str | None = None) -> dict:
    """Product facts of a STAC item (core, ``eo``, ``raster``, ``view``, ``proj`` fields)."""
    props = item.get("properties") or {}
    p = empty_product("STAC item", source_file)
    p["product_id"] = props.get("s2:product_uri") or props.get("landsat:scene_id") or item.get("id")
    p["platform"] = str(props.get("platform") or "").lower() or None
    inst = props.get("instruments") or []
    p["sensor"] = "-".join(str(i).lower() for i in inst) or None
    level = props.get("processing:level") or props.get("s2:product_type") or props.get("landsat:correction")
    if not level:
        m = re.search(r"(L1C|L2A|L2SP|L2SR|L1TP|L1GT)", str(item.get("id", "")) + str(item.get("collection", "")),
                      re.IGNORECASE)
        level = m.group(1).upper() if m else None
    p["processing_level"] = {"S2MSI2A": "L2A", "S2MSI1C": "L1C"}.get(str(level), level)
    dt = props.get("datetime") or props.get("start_datetime")
    if dt:
        p["datetime"], p["dates"] = str(dt), [str(dt)[:10]]
    if props.get("start_datetime") and props.get("end_datetime") and props["start_datetime"][:10] != props["end_datetime"][:10]:
        p["dates"] = [props["start_datetime"][:10], props["end_datetime"][:10]]
    p["cloud_cover"] = _float(props.get("eo:cloud_cover"))
    p["files"] = {}
    for key, asset in (item.get("assets") or {}).items():
        if key in MASK_ASSETS:
            name, rule = MASK_ASSETS[key]
            p["mask"] = {"band": name, **rule, "href": asset.get("href")}
            continue
        band = asset_band(key, asset)
        rb = (asset.get("raster:bands") or [{}])[0]
        if band is None or "data" not in (asset.get("roles") or ["data"]):
            continue
        p["files"][band] = asset.get("href")
        if rb.get("scale") is not None:
            p["scale"][band] = float(rb["scale"])
            p["offset"][band] = float(rb.get("offset") or 0.0)
        if rb.get("nodata") is not None and p["nodata"] is None:
            p["nodata"] = _float(rb["nodata"])
    if p["scale"]:
        p["scale_meaning"] = "STAC raster:bands scale / offset"
    return p


def from_odc_yaml(text: str, source_file: str) -> dict:
    import yaml

    d = yaml.safe_load(text) or {}
    p = empty_product("Open Data Cube metadata", source_file)
    ext = d.get("extent") or {}
    dt = ext.get("center_dt") or ext.get("from_dt")
    if dt:
        p["datetime"], p["dates"] = str(dt), [str(dt)[:10]]
    plat = (d.get("platform") or {}).get("code")
    p["platform"] = str(plat).lower().replace("_", "-") if plat else None
    inst = (d.get("instrument") or {}).get("name")
    p["sensor"] = str(inst).lower() if inst else None
    p["processing_level"] = d.get("product_type")
    p["product_id"] = d.get("ga_label") or d.get("id")
    return p


# ---- file names ----------------------------------------------------------------------------------

def from_filename(name: str) -> dict | None:
    """Facts from a Landsat / Sentinel-2 naming convention, else None."""
    p = empty_product("file name", name)
    m = _L_PRODUCT.search(name)
    if m:
        d = m.group(5)
        p.update(product_id=m.group(0), platform=f"landsat-{m.group(2)}", sensor=_LANDSAT_SENSOR[m.group(1)],
                 processing_level=m.group(3), dates=[_iso_date(d[:4], d[4:6], d[6:])])
        return p
    m = _L_SCENE.search(name)
    if m:
        import datetime as _dt

        day = _dt.date(int(m.group(5)), 1, 1) + _dt.timedelta(days=int(m.group(6)) - 1)
        p.update(product_id=m.group(0), platform=f"landsat-{m.group(2)}", sensor=_LANDSAT_SENSOR[m.group(1)],
                 dates=[day.isoformat()])
        return p
    for rx, plat, day, lvl in ((_S2_PRODUCT, 1, 3, 2), (_S2_COG, 1, 3, 4)):
        m = rx.search(name)
        if m:
            d = m.group(day)
            p.update(product_id=m.group(0), platform=f"sentinel-2{m.group(plat).lower()}", sensor="msi",
                     processing_level=m.group(lvl), dates=[_iso_date(d[:4], d[4:6], d[6:])])
            return p
    m = _S2_TILE.search(name)
    if m:
        d = m.group(2)
        p.update(product_id=m.group(0), platform="sentinel-2", sensor="msi", dates=[_iso_date(d[:4], d[4:6], d[6:])])
        return p
    return None


def dates_in(text: str) -> list[str]:
    """Distinct calendar dates written in ``text`` (``20201031`` or ``2020-10-31``), in order."""
    return list(dict.fromkeys(_iso_date(*m.groups()) for m in _DATE.finditer(str(text))))


# ---- finding the metadata of a scene ------------------------------------------------------------

def _candidates(root: Path) -> list[Path]:
    """Metadata files that belong to the scene at ``root`` (a band folder, or one file)."""
    if root.is_dir():
        return sorted(f for f in root.iterdir() if f.is_file())
    folder = root.parent
    rasters = [f for f in folder.iterdir() if f.suffix.lower() in (".tif", ".tiff", ".jp2", ".vrt", ".img")]
    stem = root.stem
    if len(rasters) == 1:
        return sorted(f for f in folder.iterdir() if f.is_file())
    return sorted(f for f in folder.iterdir() if f.is_file() and f != root and f.name.startswith(stem))


def read_product(root: str | Path) -> dict:
    """The product metadata of the scene at ``root`` (see the module docstring); a product with
    ``source: "none"`` when nothing is found."""
    root = Path(root)
    files = _candidates(root) if root.exists() else []
    by_rule = [
        (lambda f: f.name.upper().endswith("_MTL.TXT"), lambda f, t: from_mtl(parse_mtl_text(t), "Landsat MTL", f.name)),
        (lambda f: f.name.upper().endswith("_MTL.XML"), lambda f, t: from_mtl(parse_mtl_xml(t), "Landsat MTL", f.name)),
        (lambda f: re.fullmatch(r"MTD_MSIL(1C|2A)\.XML", f.name.upper()), lambda f, t: from_s2_xml(t, f.name)),
        (lambda f: f.name.upper() == "MTD_TL.XML", lambda f, t: from_s2_xml(t, f.name)),
        (lambda f: f.name == "tileInfo.json", lambda f, t: from_tileinfo(json.loads(t), f.name)),
        (lambda f: f.suffix.lower() == ".json" and f.name != "tileInfo.json", _stac_or_none),
        (lambda f: f.name.lower() in ("agdc-metadata.yaml", "ga-metadata.yaml"), lambda f, t: from_odc_yaml(t, f.name)),
    ]
    for match, parse in by_rule:
        for f in files:
            if match(f) and f.stat().st_size < 20_000_000:
                try:
                    p = parse(f, f.read_text(encoding="utf-8", errors="replace"))
                except (ValueError, ET.ParseError, KeyError, IndexError, TypeError):
                    p = None
                if p is not None:
                    return _with_name_facts(p, root)
    return _with_name_facts(empty_product("none"), root)


def _stac_or_none(f: Path, text: str) -> dict | None:
    d = json.loads(text)
    if isinstance(d, dict) and d.get("type") == "Feature" and ("stac_version" in d or "assets" in d):
        return from_stac_item(d, f.name)
    return None


def _with_name_facts(p: dict, root: Path) -> dict:
    """Fill what the metadata file left empty from the file-name conventions."""
    names = [root.name] + ([f.name for f in sorted(root.iterdir())][:50] if root.is_dir() else [])
    for n in names:
        q = from_filename(n)
        if q is None:
            continue
        if p["source"] == "none":
            q["source_file"] = n
            return q
        for k in ("product_id", "platform", "sensor", "processing_level", "dates"):
            if not p.get(k):
                p[k] = q[k]
        return p
    return p


def sensor_label(p: dict) -> str | None:
    """A sensor key for a scene without one in the recipe: platform and processing level,
    e.g. ``landsat-8-l2sp``, ``sentinel-2a-l2a`` (scenes under one key share dataset statistics)."""
    if not p.get("platform"):
        return None
    plat = str(p["platform"]).lower().replace("_", "-")
    if plat.startswith("sentinel-2"):
        plat = "sentinel-2"
    lvl = str(p.get("processing_level") or "").lower().replace("level-", "l")
    return f"{plat}-{lvl}" if lvl else plat


# ---- the product as one opened scene sees it ---------------------------------------------------------

#: band counts of one Sentinel-2 acquisition as distributed (10 m set, 20 m set, L2A, L1C, …)
_S2_COUNTS = {3, 4, 6, 9, 10, 11, 12, 13}
#: fraction of cloud above which a scene is flagged from its metadata alone
NEARLY_ALL_CLOUD = 90.0


def _band_file_dates(scene) -> tuple[list[str], list[str]]:
    """(dates written in the bands' descriptions / tags, warnings about the stack) of a scene's files."""
    import rasterio

    from als_datasets.kinds.raster.scenes import ropen

    dates, notes = [], []
    by_file: dict[str, list[int]] = {}
    for b in scene.bands:
        by_file.setdefault(b.path, []).append(b.band_index)
    for path, idx in by_file.items():
        try:
            with ropen(path) as ds:
                desc = list(ds.descriptions)
                for i in idx:
                    d = desc[i - 1] or ""
                    tags = {k: v for k, v in ds.tags(i).items() if "DATE" in k.upper() or "TIME" in k.upper()}
                    dates += dates_in(d) + [x for v in tags.values() for x in dates_in(v)]
                count = ds.count
        except rasterio.errors.RasterioIOError:
            continue
        names = [_band_key(re.sub(r"[_\-. ]*(?:19|20)\d{2}-?\d{2}-?\d{2}.*$", "", d)) for d in desc if d]
        if len(names) == count and len(set(names)) < len(names):
            notes.append(f"{Path(path).name}: band names repeat ({', '.join(desc)}): several acquisitions stacked?")
        if not all(desc) and count > 1 and count not in _S2_COUNTS and count % 2 == 0 and count // 2 in _S2_COUNTS \
                and "sentinel-2" in str(scene.sensor or "").lower():
            notes.append(f"{Path(path).name}: {count} undescribed bands = 2 × {count // 2}: possibly two "
                         "acquisitions stacked in one file (name the bands, or split the file)")
    return list(dict.fromkeys(dates)), notes


def scene_product(product: dict, scene, spec: dict) -> dict:
    """``product`` completed for the opened ``scene``: per-band scale / offset in the scene's band
    order, nodata, the acquisition dates (several in a stack: recorded and warned about), the mask."""
    p = dict(product)
    keys = [_band_key(b.name) for b in scene.bands]
    tm_x10 = keys and all(re.fullmatch(r"B[1-7]0", k) for k in keys)  # GA's TM B10…B70
    look = [f"B{int(k[1:]) // 10}" if tm_x10 else k for k in keys]
    p["band_scale"] = [p["scale"].get(k) for k in look]
    p["band_offset"] = [p["offset"].get(k) for k in look] if p["scale"] else [None] * len(keys)
    p["band_offset"] = [o if o is not None or s is None else 0.0 for s, o in zip(p["band_scale"], p["band_offset"])]
    p["nodata"] = scene.nodata if scene.nodata is not None else (0.0 if scene.zero_is_nodata else p.get("nodata"))
    notes = list(p.get("warnings") or [])
    from als_datasets.remote import is_remote

    # an archive's item states its date; a local file may say more in its band descriptions / tags
    remote = any(is_remote(b.path) for b in scene.bands)
    stack_dates, stack_notes = ([], []) if remote else _band_file_dates(scene)
    notes += stack_notes
    names = [Path(b.path).name for b in scene.bands]
    name_dates = [] if p["source"] != "none" or from_filename(Path(spec["path"]).name) else \
        list(dict.fromkeys(d for n in dict.fromkeys([Path(spec["path"]).name] + names) for d in dates_in(n)))
    dates = list(dict.fromkeys((p.get("dates") or []) + stack_dates + name_dates))
    if spec.get("date"):
        dates = list(dict.fromkeys([str(spec["date"])[:10]] + dates)) if not dates else dates
    if len(dates) > 1:
        notes.append(f"{len(dates)} acquisition dates in one scene ({', '.join(dates)}): a multi-date stack; "
                     "each sample records them in 'dates'")
    p["dates"] = dates
    cc = p.get("cloud_cover")
    if cc is not None and cc >= NEARLY_ALL_CLOUD:
        notes.append(f"scene cloud cover {cc:g} % ({p['source']}): nearly all cloud")
    if scene.cloud_mask is not None:
        p["mask"] = {"band": scene.cloud_mask.name, "path": Path(scene.cloud_mask.path).name,
                     **({"bits": list(scene.cloud_bits)} if scene.cloud_bits else
                        {"classes": list(scene.cloud_classes)})}
    p["warnings"] = notes
    p.pop("files", None)
    return p
