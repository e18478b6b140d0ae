"""Seeded satellite products in their real formats, for the metadata, cloud-screening and STAC tests.

* :func:`landsat_c2l2` — a Landsat-8 Collection-2 Level-2 scene: ``<ID>_SR_B1.TIF`` … ``_SR_B7.TIF``
  (uint16, reflectance = DN × 0.0000275 − 0.2, nodata 0), optionally ``<ID>_QA_PIXEL.TIF`` (bit 0
  fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 6 clear, 7 water), and ``<ID>_MTL.txt``
  (ODL groups as USGS writes them) or ``<ID>_MTL.xml``.
* :func:`s2_l2a_safe_mtd` — a Sentinel-2 SAFE product ``MTD_MSIL2A.xml`` (baseline 04.00 with
  ``BOA_ADD_OFFSET`` −1000) and :func:`s2_tileinfo` — an AWS ``tileInfo.json``.
* :func:`stac_item_s2_l2a`, :func:`stac_item_landsat_c2l2` — STAC 1.0 items with the ``eo``,
  ``raster``, ``view``, ``proj`` extensions as the public Sentinel-2 L2A and Landsat C2 L2 collections
  publish them (asset keys ``blue``/``red``/``scl`` …; ``blue``/``qa_pixel`` … with ``SR_B2``
  file names), asset hrefs pointing where the caller serves the COGs.

Images: land (fields of a few reflectances), with bright white clouds (all visible bands ≈ 0.5-0.7
reflectance) over a chosen share of the scene and their shadows, seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

L8_ID = "LC08_L2SP_232066_20201031_20201106_02_T1"
L8_CRS, L8_X0, L8_Y0 = 32719, 300000.0, 8800020.0  # UTM 19S, Peru / Brazil (path 232 row 066)
S2_ID = "S2B_19LCK_20201031_0_L2A"
OLI = {1: 0.443, 2: 0.482, 3: 0.562, 4: 0.655, 5: 0.865, 6: 1.609, 7: 2.201}
QA_CLOUD, QA_SHADOW, QA_CLEAR = (1 << 1) | (1 << 3), 1 << 4, 1 << 6


def scene_reflectance(seed: int, shape=(192, 192), cloud_share: float = 0.3, bands: int = 7):
    """(bands, H, W) reflectance and (cloud, shadow) boolean masks; land of 5 cover types in
    blocks, clouds as smooth blobs covering about ``cloud_share`` of the scene."""
    rng = np.random.default_rng(seed)
    h, w = shape
    covers = np.array([[0.03, 0.05, 0.04, 0.30, 0.15, 0.08, 0.04],   # forest
                       [0.08, 0.10, 0.14, 0.18, 0.28, 0.32, 0.25],   # bare soil
                       [0.05, 0.07, 0.09, 0.07, 0.40, 0.20, 0.10],   # crops
                       [0.04, 0.05, 0.05, 0.03, 0.02, 0.01, 0.01],   # water
                       [0.12, 0.14, 0.16, 0.18, 0.24, 0.26, 0.22]])  # built-up
    blocks = rng.integers(0, len(covers), (h // 16 + 1, w // 16 + 1))
    cls = np.kron(blocks, np.ones((16, 16), dtype=int))[:h, :w]
    refl = covers[cls][..., :bands].transpose(2, 0, 1) + rng.normal(0, 0.005, (bands, h, w))
    field = np.zeros((h, w))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 40)
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    cloud = field >= np.quantile(field, 1 - cloud_share) if cloud_share > 0 else np.zeros((h, w), bool)
    if cloud_share >= 1:
        cloud[:] = True
    shadow = np.roll(cloud, (8, 8), axis=(0, 1)) & ~cloud
    thick = rng.uniform(0.5, 0.7, (h, w))
    refl = np.where(cloud[None], thick[None] * np.array([1.0, 1.0, 1.0, 1.0, 0.95, 0.75, 0.6])[:bands, None, None],
                    refl)
    refl = np.where(shadow[None], refl * 0.4, refl)
    return np.clip(refl, 0.0, 1.2), cloud, shadow


def _tif(path: Path, arr, res, x0, y0, crs, nodata=None, tiled=False, overviews=False):
    a = np.asarray(arr)
    a = a[None] if a.ndim == 2 else a
    kw = dict(driver="GTiff", width=a.shape[2], height=a.shape[1], count=a.shape[0], dtype=a.dtype, crs=f"EPSG:{crs}",
              transform=from_origin(x0, y0, res, res), compress="deflate")
    if nodata is not None:
        kw["nodata"] = nodata
    if tiled:
        kw.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **kw) as ds:
        ds.write(a)
        if overviews:
            ds.build_overviews([2, 4], rasterio.enums.Resampling.nearest)
    return path


def _mtl_groups(date: str, cloud_cover: float, qa: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    files = [(f"FILE_NAME_BAND_{b}", f'"{L8_ID}_SR_B{b}.TIF"') for b in range(1, 8)]
    if qa:
        files.append(("FILE_NAME_QUALITY_L1_PIXEL", f'"{L8_ID}_QA_PIXEL.TIF"'))
    sr = [(f"REFLECTANCE_MULT_BAND_{b}", "2.75E-05") for b in range(1, 8)] + \
         [(f"REFLECTANCE_ADD_BAND_{b}", "-0.200000") for b in range(1, 8)]
    toa = [(f"REFLECTANCE_MULT_BAND_{b}", "2.0000E-05") for b in range(1, 10)] + \
          [(f"REFLECTANCE_ADD_BAND_{b}", "-0.100000") for b in range(1, 10)]
    return [
        ("PRODUCT_CONTENTS", [("ORIGIN", '"Image courtesy of the U.S. Geological Survey"'),
                              ("LANDSAT_PRODUCT_ID", f'"{L8_ID}"'), ("PROCESSING_LEVEL", '"L2SP"'),
                              ("COLLECTION_NUMBER", "02"), ("COLLECTION_CATEGORY", '"T1"'), *files]),
        ("IMAGE_ATTRIBUTES", [("SPACECRAFT_ID", '"LANDSAT_8"'), ("SENSOR_ID", '"OLI_TIRS"'), ("WRS_PATH", "232"),
                              ("WRS_ROW", "66"), ("DATE_ACQUIRED", date), ("SCENE_CENTER_TIME", '"14:30:11.2700610Z"'),
                              ("CLOUD_COVER", f"{cloud_cover:.2f}"), ("CLOUD_COVER_LAND", f"{cloud_cover:.2f}")]),
        ("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS", sr),
        ("LEVEL1_RADIOMETRIC_RESCALING", toa),
    ]


def write_mtl_txt(path: Path, date: str, cloud_cover: float, qa: bool) -> Path:
    lines = ["GROUP = LANDSAT_METADATA_FILE"]
    for g, kv in _mtl_groups(date, cloud_cover, qa):
        lines.append(f"  GROUP = {g}")
        lines += [f"    {k} = {v}" for k, v in kv]
        lines.append(f"  END_GROUP = {g}")
    lines += ["END_GROUP = LANDSAT_METADATA_FILE", "END"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mtl_xml(path: Path, date: str, cloud_cover: float, qa: bool) -> Path:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<LANDSAT_METADATA_FILE>"]
    for g, kv in _mtl_groups(date, cloud_cover, qa):
        parts.append(f"  <{g}>")
        parts += [f"    <{k}>{v.strip(chr(34))}</{k}>" for k, v in kv]
        parts.append(f"  </{g}>")
    parts.append("</LANDSAT_METADATA_FILE>")
    path.write_text("\n".join(parts) + "\n")
    return path


def landsat_c2l2(folder: Path, seed: int = 0, cloud_share: float = 0.3, cloud_cover: float | None = None,
                 qa: bool = True, mtl: str | None = "txt", shape=(192, 192), res: float = 30.0,
                 tiled: bool = False) -> Path:
    """A Landsat-8 C2 L2 folder (see the module docstring); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    refl, cloud, shadow = scene_reflectance(seed, shape, cloud_share)
    dn = np.clip(np.round((refl + 0.2) / 2.75e-5), 1, 65535).astype(np.uint16)
    for b in range(1, 8):
        _tif(folder / f"{L8_ID}_SR_B{b}.TIF", dn[b - 1], res, L8_X0, L8_Y0, L8_CRS, nodata=0, tiled=tiled,
             overviews=tiled)
    if qa:
        q = np.full(shape, QA_CLEAR, dtype=np.uint16)
        q[cloud] = QA_CLOUD
        q[shadow] = QA_SHADOW
        _tif(folder / f"{L8_ID}_QA_PIXEL.TIF", q, res, L8_X0, L8_Y0, L8_CRS, nodata=1, tiled=tiled)
    cc = float(cloud.mean() * 100) if cloud_cover is None else cloud_cover
    if mtl == "txt":
        write_mtl_txt(folder / f"{L8_ID}_MTL.txt", "2020-10-31", cc, qa)
    elif mtl == "xml":
        write_mtl_xml(folder / f"{L8_ID}_MTL.xml", "2020-10-31", cc, qa)
    return folder


S2_BANDS = [("B01", "coastal", 60), ("B02", "blue", 10), ("B03", "green", 10), ("B04", "red", 10),
            ("B05", "rededge1", 20), ("B06", "rededge2", 20), ("B07", "rededge3", 20), ("B08", "nir", 10),
            ("B8A", "nir08", 20), ("B09", "nir09", 60), ("B11", "swir16", 20), ("B12", "swir22", 20)]


def s2_l2a_safe_mtd(path: Path, cloud: float = 12.5, baseline: str = "04.00") -> Path:
    """``MTD_MSIL2A.xml`` of a SAFE product (the elements a reader needs, in their real nesting)."""
    offs = "\n".join(f'          <BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    spec = "\n".join(f'        <Spectral_Information bandId="{i}" physicalBand="{b}"/>'
                     for i, b in enumerate(["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10",
                                            "B11", "B12"]))
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>2020-10-31T14:47:29.024Z</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>2020-10-31T14:47:29.024Z</PRODUCT_STOP_TIME>
      <PRODUCT_URI>S2B_MSIL2A_20201031T144729_N{baseline.replace('.', '')}_R139_T19LCK_20201031T170401.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="GS2B_20201031T144729_019045_N{baseline}">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_SENSING_START>2020-10-31T14:47:29.024Z</DATATAKE_SENSING_START>
      </Datatake>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      <BOA_ADD_OFFSET_VALUES_LIST>
{offs}
      </BOA_ADD_OFFSET_VALUES_LIST>
      <Spectral_Information_List>
{spec}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>{cloud}</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:Level-2A_User_Product>
""")
    return path


def s2_tileinfo(path: Path, cloud: float = 37.2) -> Path:
    path.write_text(json.dumps({
        "path": "tiles/19/L/CK/2020/10/31/0", "timestamp": "2020-10-31T14:52:41.543Z", "utmZone": 19,
        "latitudeBand": "L", "gridSquare": "CK", "datastrip": {"id": "S2B_OPER_MSI_L2A_DS_EPAE_20201031T170401"},
        "tileGeometry": {"type": "Polygon", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG:8.8.1:32719"}},
                         "coordinates": [[[300000, 8800020], [409800, 8800020], [409800, 8690220], [300000, 8690220],
                                          [300000, 8800020]]]},
        "dataCoveragePercentage": 100.0, "cloudyPixelPercentage": cloud,
        "productName": "S2B_MSIL2A_20201031T144729_N0214_R139_T19LCK_20201031T170401",
        "productPath": "products/2020/10/31/S2B_MSIL2A_20201031T144729_N0214_R139_T19LCK_20201031T170401"}, indent=1))
    return path


def _bbox(x0, y0, w, h, res, crs):
    import pyproj

    tr = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
    xs, ys = tr.transform([x0, x0 + w * res, x0, x0 + w * res], [y0, y0, y0 - h * res, y0 - h * res])
    return [min(xs), min(ys), max(xs), max(ys)]


def _geometry(b):
    return {"type": "Polygon", "coordinates": [[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]]}


EXT = ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
       "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
       "https://stac-extensions.github.io/view/v1.0.0/schema.json",
       "https://stac-extensions.github.io/projection/v1.1.0/schema.json"]


def stac_item_s2_l2a(item_id: str, base_href: str, shape: tuple[int, int], x0: float, y0: float, crs: int,
                     datetime: str = "2020-10-31T14:52:41.543000Z", cloud: float = 12.5, res10: float = 10.0,
                     collection: str = "sentinel-2-l2a") -> dict:
    """A Sentinel-2 L2A item as the public collection publishes it: asset keys by common name
    (``blue``, ``nir08``, ``scl`` …), file ``B02.tif`` …, ``raster:bands`` scale 0.0001 offset
    −0.1 (baseline ≥ 04.00), nodata 0, ``eo:bands`` with name and common_name."""
    h, w = shape
    bbox = _bbox(x0, y0, w, h, res10, crs)
    assets = {}
    for band, common, res in S2_BANDS:
        f = int(res // 10)
        assets[common] = {
            "href": f"{base_href}/{band}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": f"{common} ({band}) - {res}m", "roles": ["data", "reflectance"], "gsd": res,
            "eo:bands": [{"name": band, "common_name": common, "center_wavelength": 0.5}],
            "proj:shape": [h // f, w // f], "proj:transform": [res10 * f, 0, x0, 0, -res10 * f, y0],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                              "spatial_resolution": res, "scale": 0.0001, "offset": -0.1}]}
    assets["scl"] = {"href": f"{base_href}/SCL.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                     "title": "Scene classification map (SCL)", "roles": ["data"],
                     "proj:shape": [h // 2, w // 2], "proj:transform": [res10 * 2, 0, x0, 0, -res10 * 2, y0],
                     "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}]}
    assets["thumbnail"] = {"href": f"{base_href}/thumbnail.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    return {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": EXT, "id": item_id, "collection": collection,
        "bbox": bbox, "geometry": _geometry(bbox),
        "properties": {"datetime": datetime, "platform": "sentinel-2b", "constellation": "sentinel-2",
                       "instruments": ["msi"], "eo:cloud_cover": cloud, "proj:epsg": crs,
                       "view:sun_azimuth": 80.1, "view:sun_elevation": 65.2, "s2:processing_baseline": "04.00",
                       "s2:product_type": "S2MSI2A", "processing:level": "L2A"},
        "assets": assets, "links": [{"rel": "collection", "href": f"{base_href}/collection.json"}],
    }


def stac_item_landsat_c2l2(item_id: str, base_href: str, shape: tuple[int, int], x0: float, y0: float, crs: int,
                           datetime: str = "2020-10-31T14:30:11.270061Z", cloud: float = 99.94,
                           collection: str = "landsat-c2-l2", res: float = 30.0) -> dict:
    """A Landsat C2 L2 item (USGS / Planetary Computer style): assets ``coastal`` … ``swir22`` with
    ``SR_B1.TIF`` … files, ``raster:bands`` scale 2.75e-05 offset −0.2 nodata 0, and ``qa_pixel``."""
    h, w = shape
    bbox = _bbox(x0, y0, w, h, res, crs)
    names = ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"]
    assets = {}
    for b, common in enumerate(names, start=1):
        assets[common] = {
            "href": f"{base_href}/{item_id}_SR_B{b}.TIF", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": f"{common} band (B{b})", "roles": ["data", "reflectance"],
            "eo:bands": [{"name": f"OLI_B{b}", "common_name": common, "center_wavelength": OLI[b]}],
            "proj:shape": [h, w], "proj:transform": [res, 0, x0, 0, -res, y0],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": res,
                              "scale": 2.75e-05, "offset": -0.2, "unit": "1"}]}
    assets["qa_pixel"] = {"href": f"{base_href}/{item_id}_QA_PIXEL.TIF",
                          "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                          "title": "Pixel Quality Assessment Band", "roles": ["cloud", "cloud-shadow", "snow-ice",
                                                                              "water-mask"],
                          "raster:bands": [{"nodata": 1, "data_type": "uint16", "spatial_resolution": res,
                                            "unit": "bit index"}]}
    assets["mtl.txt"] = {"href": f"{base_href}/{item_id}_MTL.txt", "type": "text/plain", "roles": ["metadata"]}
    return {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": EXT, "id": item_id, "collection": collection,
        "bbox": bbox, "geometry": _geometry(bbox),
        "properties": {"datetime": datetime, "platform": "landsat-8", "instruments": ["oli", "tirs"],
                       "eo:cloud_cover": cloud, "view:sun_azimuth": 70.0, "view:sun_elevation": 60.0,
                       "view:off_nadir": 0, "proj:epsg": crs, "landsat:correction": "L2SP",
                       "landsat:wrs_path": "232", "landsat:wrs_row": "066", "landsat:collection_number": "02"},
        "assets": assets, "links": [],
    }


def _cog(path: Path, arr, res, x0, y0, crs, nodata=0, block=64):
    from cog_fixtures import write_cog
    from rasterio.transform import from_origin

    return write_cog(path, np.asarray(arr), f"EPSG:{crs}", from_origin(x0, y0, res, res), nodata=nodata, block=block)


def s2_l2a_cogs(folder: Path, seed: int, shape10: tuple[int, int], x0: float, y0: float, crs: int,
                cloud_share: float = 0.1) -> Path:
    """A Sentinel-2 L2A scene as the archive serves it: one COG per band at 10 / 20 / 60 m
    (``B02.tif`` …, DN = (ρ + 0.1) × 10000, nodata 0) and ``SCL.tif`` at 20 m (4 vegetation,
    5 bare, 6 water, 8/9 cloud, 3 shadow)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = shape10
    refl, cloud, shadow = scene_reflectance(seed, (h, w), cloud_share, bands=7)
    # 7 reflectance layers → the 12 L2A bands (coastal … swir22), nearest by wavelength
    pick = {"B01": 0, "B02": 1, "B03": 2, "B04": 3, "B05": 3, "B06": 4, "B07": 4, "B08": 4, "B8A": 4, "B09": 4,
            "B11": 5, "B12": 6}
    for band, _, res in S2_BANDS:
        f = res // 10
        a = refl[pick[band]].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        dn = np.clip(np.round((a + 0.1) * 10000), 1, 65535).astype(np.uint16)
        _cog(folder / f"{band}.tif", dn, float(res), x0, y0, crs)
    scl = np.where(cloud, 9, np.where(shadow, 3, 4)).astype(np.uint8)[::2, ::2]
    _cog(folder / "SCL.tif", scl, 20.0, x0, y0, crs)
    return folder


def landsat_c2l2_cogs(folder: Path, seed: int, shape: tuple[int, int], x0: float, y0: float, crs: int,
                      cloud_share: float = 0.97) -> Path:
    """Landsat C2 L2 ``<ID>_SR_B1.TIF`` … and ``<ID>_QA_PIXEL.TIF`` as COGs."""
    folder.mkdir(parents=True, exist_ok=True)
    refl, cloud, shadow = scene_reflectance(seed, shape, cloud_share)
    dn = np.clip(np.round((refl + 0.2) / 2.75e-5), 1, 65535).astype(np.uint16)
    for b in range(1, 8):
        _cog(folder / f"{L8_ID}_SR_B{b}.TIF", dn[b - 1], 30.0, x0, y0, crs)
    q = np.full(shape, QA_CLEAR, dtype=np.uint16)
    q[cloud] = QA_CLOUD
    q[shadow] = QA_SHADOW
    _cog(folder / f"{L8_ID}_QA_PIXEL.TIF", q, 30.0, x0, y0, crs, nodata=1)
    return folder
