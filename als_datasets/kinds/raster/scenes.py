"""Satellite / DEM scenes: open them onto one common grid and read fixed-size patches.

A scene is either one multiband file or a folder of one file per band, possibly at mixed
resolutions (Sentinel-2: 10/20/60 m). :func:`open_scene` validates the files once (CRS, extents,
nodata convention, not all-nodata) and fixes a *common grid*: the grid of the finest band, or a
declared ``resolution`` (in CRS units: metres for projected CRSs, degrees for geographic ones).
Patches are addressed by ``(col, row)`` cell indices on that grid; :func:`read_patches` reads only
the windows that cover the requested patches, band by band at each band's native resolution,
resampling on the fly (nearest when a band is coarser than the grid, average when finer).

Everything here is a pure function of the files and the recipe spec; errors are
:class:`~als_datasets.errors.InputError` naming the offending file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window, from_bounds

from als_datasets.errors import InputError

#: Sentinel-2 scene-classification (SCL) classes counted as cloud by default:
#: 3 cloud shadow, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus.
DEFAULT_CLOUD_CLASSES = (3, 8, 9, 10)
#: Landsat Collection-2 ``QA_PIXEL`` bits counted as cloud: dilated cloud 1, cirrus 2, cloud 3, cloud shadow 4
DEFAULT_QA_BITS = (1, 2, 3, 4)
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
_BAND_RE = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?|SCL|BQA|QA_?PIXEL)$", re.IGNORECASE)
_DECIMATED_PX = 256  # long side of the cheap validity / zero-fill reads


@dataclass(frozen=True)
class BandSource:
    """One band: a name, the file holding it and its 1-based index inside that file."""

    name: str
    path: str
    band_index: int


@dataclass(frozen=True)
class Scene:
    """A scene on its common grid (``transform``, ``width`` x ``height`` pixels of ``res``)."""

    name: str
    bands: tuple[BandSource, ...]
    crs: pyproj.CRS
    transform: Affine
    width: int
    height: int
    res: float
    dtype: str
    nodata: float | None
    zero_is_nodata: bool
    cloud_mask: BandSource | None = None
    cloud_classes: tuple[int, ...] = DEFAULT_CLOUD_CLASSES
    sensor: str | None = None
    date: str | None = None
    #: with bits, a mask pixel is cloud when any of these bits is set (Landsat ``QA_PIXEL``); else by class
    cloud_bits: tuple[int, ...] = ()
    #: internal tile width (px) of the finest band file (0: striped); an archive's candidates follow it
    block_px: int = 0
    #: product metadata (the kind's reader: dates, cloud cover, scale / offset …); not part of equality
    product: dict | None = field(default=None, compare=False)

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]


def ropen(path):
    """``rasterio.open`` of a band file: a local path as is; a URL (a STAC asset) through GDAL's
    ranged reads (``/vsicurl/``…), signed at open time when a signer is registered, so that only the
    windows read are fetched.  Run the reads inside :func:`scene_env`."""
    from als_datasets.remote import is_remote

    if not is_remote(str(path)):
        return rasterio.open(path)
    from als_datasets.cog import raster_path
    from als_datasets.remote import signed

    try:
        return rasterio.open(raster_path(signed(str(path))))
    except rasterio.errors.RasterioIOError as e:
        from als_datasets.cog import gdal_reason
        from als_datasets.remote import redact

        raise InputError(redact(str(path)), f"cannot read remote raster ({gdal_reason(e)})") from None


def scene_env(scene_or_paths):
    """GDAL's HTTP settings (no directory listing, merged ranges, block cache, retries) while a
    scene with remote band files is read; nothing for local files."""
    import contextlib

    from als_datasets.remote import is_remote

    paths = ([b.path for b in scene_or_paths.bands] if hasattr(scene_or_paths, "bands") else list(scene_or_paths))
    remote = [p for p in paths if is_remote(str(p))]
    if not remote:
        return contextlib.nullcontext()
    from als_datasets.cog import gdal_env

    return gdal_env(remote[0])


def normalise_band_name(name: str) -> str:
    """``B02`` -> ``B2``, ``b8a`` -> ``B8A``, ``SCL`` -> ``SCL`` (exact-match key, ``B1`` != ``B10``)."""
    s = str(name).strip().upper()
    m = re.fullmatch(r"B0*(\d+)(A?)", s)
    return f"B{m.group(1)}{m.group(2)}" if m else s


def band_name_from_file(path: str | Path) -> str:
    """Band name from a per-band file name: ``B02.tif`` -> ``B02``, ``LC8..._B10.tif`` -> ``B10``."""
    stem = Path(path).stem
    m = _BAND_RE.search(stem)
    return m.group(1).upper() if m else stem


def _band_sort_key(name: str):
    m = re.fullmatch(r"B(\d+)(A?)", normalise_band_name(name))
    return (0, int(m.group(1)), m.group(2), "") if m else (1, 0, "", name)


def _resolve(base_dir, p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else Path(base_dir) / p


def _decimated_read(ds, index) -> np.ndarray:
    """A cheap sample of band(s) ``index`` (an int → 2-D, a list → 3-D): the whole band when
    small, a decimated read from overviews when the file has them, else an 8 x 8 grid of small
    windows spread over the band (a decimated read without overviews would decompress every
    block of a tiled file)."""
    f = max(1.0, max(ds.width, ds.height) / _DECIMATED_PX)
    first = index if isinstance(index, int) else index[0]
    if f <= 2.0 or ds.overviews(first):
        shape = (max(1, int(ds.height / f)), max(1, int(ds.width / f)))
        return ds.read(index, out_shape=shape if isinstance(index, int) else (len(index), *shape),
                       resampling=Resampling.nearest)
    k, w = 8, 32
    cols = np.linspace(0, max(ds.width - w, 0), k).astype(int)
    rows = np.linspace(0, max(ds.height - w, 0), k).astype(int)
    return np.concatenate([ds.read(index, window=Window(int(c), int(r), w, w)) for r in rows for c in cols],
                          axis=-2)


def detect_zero_fill(path) -> bool:
    """Undeclared nodata: no nodata tag AND > 1 % exact zeros in a decimated read of band 1."""
    try:
        with ropen(path) as ds:
            if ds.nodata is not None:
                return False
            a = _decimated_read(ds, 1)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(path, f"cannot read raster: {e}") from None
    return bool(a.size and np.count_nonzero(a == 0) / a.size > 0.01)


def _folder_files(folder: Path) -> dict[str, Path]:
    """Normalised band name -> file for every raster in ``folder``."""
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES:
            key = normalise_band_name(band_name_from_file(f))
            if key in out:
                raise InputError(folder, f"two files for band {key}: {out[key].name}, {f.name}")
            out[key] = f
    return out


def _match_file(folder: Path, files: dict[str, Path], name: str, ref) -> Path:
    """The file for band ``name``: an explicit file / glob ``ref``, else by band name."""
    if isinstance(ref, str):
        hits = sorted(folder.glob(ref))
        if len(hits) != 1:
            why = "no file matches" if not hits else f"{len(hits)} files match"
            raise InputError(folder, f"band {name}: {why} {ref!r}")
        return hits[0]
    f = files.get(normalise_band_name(name))
    if f is None:
        raise InputError(folder, f"no file for band {name} (found: {', '.join(sorted(files)) or 'none'})")
    return f


def _file_bands(path: Path, wanted) -> list[BandSource]:
    """Bands of one multiband file: recipe names (list or {name: index}), descriptions, or B1..Bn."""
    with ropen(path) as ds:
        count, desc = ds.count, list(ds.descriptions)
    known = [d for d in desc] if all(desc) else [f"B{i}" for i in range(1, count + 1)]
    index = {normalise_band_name(n): i for i, n in enumerate(known, start=1)}
    if wanted is None:
        return [BandSource(n, str(path), i) for i, n in enumerate(known, start=1)]
    if isinstance(wanted, dict):
        out = []
        for name, ref in wanted.items():
            i = ref if isinstance(ref, int) else index.get(normalise_band_name(ref if ref else name))
            if not isinstance(i, int) or not 1 <= i <= count:
                raise InputError(path, f"unknown band {name!r} -> {ref!r} (file has {count} bands: {known})")
            out.append(BandSource(str(name), str(path), i))
        return out
    names = [str(n) for n in wanted]
    if all(normalise_band_name(n) in index for n in names):
        return [BandSource(n, str(path), index[normalise_band_name(n)]) for n in names]
    if not all(desc) and len(names) == count:  # undescribed file: recipe names the bands in order
        return [BandSource(n, str(path), i) for i, n in enumerate(names, start=1)]
    bad = [n for n in names if normalise_band_name(n) not in index]
    raise InputError(path, f"unknown band name(s) {bad} (file bands: {known})")


def cloud_pixels(a: np.ndarray, scene: Scene) -> np.ndarray:
    """Boolean cloud pixels of mask values ``a``: any of ``scene.cloud_bits`` set, else a class in
    ``scene.cloud_classes``."""
    if scene.cloud_bits:
        bits = sum(1 << int(b) for b in scene.cloud_bits)
        return (np.asarray(a).astype(np.int64) & bits) != 0
    return np.isin(a, np.asarray(scene.cloud_classes))


def mask_rule(spec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(classes, bits) of a scene spec's ``cloud_mask`` (a ``QA_PIXEL`` band: bits 1-4 by default)."""
    cm = spec.get("cloud_mask")
    if isinstance(cm, str):
        cm = {"band": cm}
    if not isinstance(cm, dict):
        return DEFAULT_CLOUD_CLASSES, ()
    if cm.get("bits") is not None:
        return DEFAULT_CLOUD_CLASSES, tuple(int(b) for b in cm["bits"])
    if cm.get("classes") is None and normalise_band_name(cm.get("band", "")).replace("_", "") == "QAPIXEL":
        return DEFAULT_CLOUD_CLASSES, DEFAULT_QA_BITS
    return tuple(int(c) for c in cm.get("classes", DEFAULT_CLOUD_CLASSES)), ()


def _cloud_source(root: Path, is_dir: bool, files, spec) -> tuple[BandSource | None, tuple[int, ...]]:
    cm = spec.get("cloud_mask")
    if cm is None:  # a Sentinel-2 SCL or Landsat QA_PIXEL file next to the bands is the cloud mask by default
        if is_dir and "SCL" in files:
            return BandSource("SCL", str(files["SCL"]), 1), DEFAULT_CLOUD_CLASSES
        qa = next((k for k in files if k.replace("_", "") == "QAPIXEL"), None)
        if is_dir and qa:
            return BandSource(qa, str(files[qa]), 1), DEFAULT_CLOUD_CLASSES
        return None, DEFAULT_CLOUD_CLASSES
    if isinstance(cm, str):
        cm = {"band": cm}
    classes = mask_rule(spec)[0]
    name = str(cm.get("band", "SCL"))
    if cm.get("path"):
        return BandSource(name, str(_resolve(root if is_dir else root.parent, cm["path"])), 1), classes
    if is_dir:
        return BandSource(name, str(_match_file(root, files, name, None)), 1), classes
    return _file_bands(root, [name])[0], classes


def _band_sources(root: Path, spec) -> tuple[list[BandSource], BandSource | None, tuple[int, ...]]:
    wanted = spec.get("bands")
    if root.is_dir():
        files = _folder_files(root)
        if len(files) == 1 and not isinstance(wanted, dict):  # a folder holding one multiband file
            only = next(iter(files.values()))
            with ropen(only) as ds:
                if ds.count > 1:
                    root = only
    if root.is_dir():
        cloud, classes = _cloud_source(root, True, files, spec)
        if wanted is None:
            skip = {normalise_band_name(cloud.name)} if cloud else set()
            keys = sorted((k for k in files if k not in skip), key=_band_sort_key)
            bands = [BandSource(band_name_from_file(files[k]), str(files[k]), 1) for k in keys]
        else:
            items = wanted.items() if isinstance(wanted, dict) else ((n, None) for n in wanted)
            bands = []
            for name, ref in items:
                if isinstance(ref, int):
                    raise InputError(root, f"band {name}: an index needs a multiband file, not a folder")
                bands.append(BandSource(str(name), str(_match_file(root, files, str(name), ref)), 1))
        if not bands:
            raise InputError(root, "no raster band files in the folder")
        return bands, cloud, classes
    bands = _file_bands(root, wanted)
    cloud, classes = _cloud_source(root, False, {}, spec)
    if cloud is not None and wanted is None:  # the mask band is not a spectral band
        bands = [b for b in bands if (b.path, b.band_index) != (cloud.path, cloud.band_index)]
    return bands, cloud, classes


def _check_alignment(sources: list[BandSource], infos: dict[str, dict]) -> str:
    """Same CRS, north-up, extents within half a coarse pixel; returns the finest band's path."""
    first = sources[0].path
    for s in sources:
        info = infos[s.path]
        if info["crs"] is None:
            raise InputError(s.path, "raster has no CRS (georeference it first)")
        t = info["transform"]
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise InputError(s.path, f"rotated or flipped raster grids are not supported ({tuple(t)[:6]})")
        if info["crs"] != infos[first]["crs"]:
            raise InputError(s.path, f"CRS {info['crs']} differs from {infos[first]['crs']} of {first}")
    finest = min((s.path for s in sources), key=lambda p: abs(infos[p]["transform"].a * infos[p]["transform"].e))
    ref = infos[finest]
    for s in sources:
        info = infos[s.path]
        tol = 0.5 * max(abs(info["transform"].a), abs(info["transform"].e), ref["transform"].a, -ref["transform"].e)
        diff = max(abs(x - y) for x, y in zip(info["bounds"], ref["bounds"]))
        if diff > tol:
            raise InputError(s.path, f"extent {tuple(round(v, 6) for v in info['bounds'])} differs from "
                             f"{Path(finest).name} {tuple(round(v, 6) for v in ref['bounds'])} by {diff:g} "
                             f"(> half a coarse pixel, {tol:g})")
    return finest


def open_scene(spec: dict, base_dir=".") -> Scene:
    """Validate a recipe scene entry and fix its common grid.

    ``spec`` keys: ``path`` (multiband file or per-band folder, relative to ``base_dir``), optional
    ``name``, ``bands`` (list of names, or ``{name: file/glob}`` for a folder, ``{name: index}`` for
    a file), ``resolution`` (CRS units), ``cloud_mask`` (``{"band": "SCL", "classes": [...]}``; an
    ``SCL`` file in a band folder is used by default), ``nodata`` (overrides the files' tags),
    ``zero_is_nodata`` (default: detected, see :func:`detect_zero_fill`), ``sensor``, ``date``.
    """
    if not isinstance(spec, dict) or not spec.get("path"):
        raise InputError(base_dir, f"scene entry needs a 'path': {spec!r}")
    if spec.get("band_urls"):  # an archive's scene (STAC assets): one file per band, by URL
        root = Path(str(spec["name"]))
        bands = [BandSource(str(k), str(v), 1) for k, v in spec["band_urls"].items()]
        cm = spec.get("cloud_mask") or {}
        cloud = BandSource(str(cm.get("band", "SCL")), str(cm["path"]), 1) if cm.get("path") else None
        classes = mask_rule(spec)[0]
    else:
        root = _resolve(base_dir, spec["path"])
        if not root.exists():
            raise InputError(root, "scene file or folder not found")
        bands, cloud, classes = _band_sources(root, spec)
    infos: dict[str, dict] = {}
    for s in bands + ([cloud] if cloud else []):
        if s.path not in infos:
            try:
                with ropen(s.path) as ds:
                    infos[s.path] = dict(crs=ds.crs, transform=ds.transform, bounds=tuple(ds.bounds),
                                         width=ds.width, height=ds.height, nodata=ds.nodata,
                                         dtypes=ds.dtypes, count=ds.count,
                                         block=int(ds.block_shapes[0][1]) if ds.is_tiled else 0)
            except rasterio.errors.RasterioIOError as e:
                raise InputError(s.path, f"cannot read raster: {e}") from None
        if s.band_index > infos[s.path]["count"]:
            raise InputError(s.path, f"band {s.name}: index {s.band_index} > {infos[s.path]['count']} bands")
    finest = _check_alignment(bands + ([cloud] if cloud else []), infos)
    ref = infos[finest]

    if spec.get("resolution"):
        res = float(spec["resolution"])
        left, bottom, right, top = ref["bounds"]
        transform = Affine(res, 0.0, left, 0.0, -res, top)
        width = int(math.floor((right - left) / res + 1e-6))
        height = int(math.floor((top - bottom) / res + 1e-6))
        if width < 1 or height < 1:
            raise InputError(root, f"resolution {res:g} is coarser than the scene extent")
    else:
        transform, width, height = ref["transform"], ref["width"], ref["height"]
        res = float(transform.a)

    if spec.get("nodata") is not None:
        nodata = float(spec["nodata"])
    else:
        declared = {infos[b.path]["nodata"] for b in bands} - {None}
        if len(declared) > 1:
            raise InputError(root, f"bands declare different nodata values {sorted(declared)}; "
                             "set 'nodata' in the recipe")
        nodata = declared.pop() if declared else None
    if spec.get("zero_is_nodata") is not None:
        zero_is_nodata = bool(spec["zero_is_nodata"])
    else:
        zero_is_nodata = nodata is None and detect_zero_fill(bands[0].path)
    dtype = str(np.result_type(*[infos[b.path]["dtypes"][b.band_index - 1] for b in bands]))

    by_file: dict[str, list[BandSource]] = {}
    for b in bands:
        by_file.setdefault(b.path, []).append(b)
    for path, bs in ({} if spec.get("band_urls") else by_file).items():
        # refuse a scene whose band has no valid pixel (cheap, sampled read; not for an archive's
        # scene, whose item lists its assets: its candidate patches' windows are all that is read)
        with ropen(path) as ds:
            sample = _decimated_read(ds, [b.band_index for b in bs])
        for b, a in zip(bs, sample):
            if not _valid(a, nodata, zero_is_nodata).any():
                raise InputError(b.path, f"band {b.name} is entirely nodata ({nodata if nodata is not None else 0})")

    crs = pyproj.CRS.from_user_input(ref["crs"].to_wkt())
    bits = mask_rule(spec)[1]
    if not bits and cloud is not None and spec.get("cloud_mask") is None and cloud.name.replace("_", "") == "QAPIXEL":
        bits = DEFAULT_QA_BITS
    return Scene(name=str(spec.get("name") or root.stem), bands=tuple(bands), crs=crs, transform=transform,
                 width=int(width), height=int(height), res=res, dtype=dtype, nodata=nodata,
                 zero_is_nodata=zero_is_nodata, cloud_mask=cloud, cloud_classes=classes,
                 sensor=spec.get("sensor"), date=None if spec.get("date") is None else str(spec["date"]),
                 cloud_bits=bits if cloud is not None else (), block_px=int(ref.get("block") or 0))


def _valid(a: np.ndarray, nodata, zero_is_nodata: bool) -> np.ndarray:
    ok = np.ones(a.shape, dtype=bool)
    if nodata is not None:
        ok &= ~np.isnan(a) if math.isnan(nodata) else a != nodata
    if zero_is_nodata:
        ok &= a != 0
    if a.dtype.kind == "f":
        ok &= np.isfinite(a)
    return ok


def patch_grid(scene: Scene, patch_px: int = 96, stride_px: int | None = None) -> list[tuple[int, int]]:
    """``(col, row)`` cells of whole patches on the common grid, row-major; edge remainders dropped.

    Cell ``(c, r)`` covers grid pixels ``[c*stride, c*stride + patch_px)`` (columns), likewise rows.
    """
    stride = int(stride_px or patch_px)
    if patch_px < 1 or stride < 1:
        raise ValueError("patch_px and stride_px must be >= 1")
    nc = (scene.width - patch_px) // stride + 1 if scene.width >= patch_px else 0
    nr = (scene.height - patch_px) // stride + 1 if scene.height >= patch_px else 0
    return [(c, r) for r in range(nr) for c in range(nc)]


def _cell_bounds(scene: Scene, cell, patch_px: int, stride: int) -> tuple[float, float, float, float]:
    c0, r0 = cell[0] * stride, cell[1] * stride
    left, top = scene.transform * (c0, r0)
    right, bottom = scene.transform * (c0 + patch_px, r0 + patch_px)
    return (left, bottom, right, top)


def _snap(w: Window) -> Window:
    """Round float noise (1e-9 px) out of a window so aligned reads stay exact."""
    vals = [round(v) if abs(v - round(v)) < 1e-6 else v for v in (w.col_off, w.row_off, w.width, w.height)]
    return Window(*vals)


def _read_band_patch(ds, indexes: list[int], bounds, patch_px: int, target_res: float, fill) -> np.ndarray:
    """(len(indexes), P, P) of one file over ``bounds``; masked where the window leaves the file."""
    w = _snap(from_bounds(*bounds, transform=ds.transform))
    down = abs(ds.transform.a) < target_res * (1 - 1e-6)  # band finer than the grid: average
    resampling = Resampling.average if down else Resampling.nearest
    inside = (w.col_off >= -1e-6 and w.row_off >= -1e-6 and w.col_off + w.width <= ds.width + 1e-6
              and w.row_off + w.height <= ds.height + 1e-6)
    shape = (len(indexes), patch_px, patch_px)
    if inside:
        return np.ma.masked_array(ds.read(indexes, window=w, out_shape=shape, resampling=resampling))
    return ds.read(indexes, window=w, out_shape=shape, resampling=resampling, boundless=True,
                   masked=True, fill_value=fill)


def _held(path, handles: dict | None):
    """A dataset for ``path``: a fresh one to close, or one kept open in ``handles`` (remote band
    files are then opened once per task, not once per patch)."""
    import contextlib

    if handles is None:
        return ropen(path)
    if path not in handles:
        handles[path] = ropen(path)
    return contextlib.nullcontext(handles[path])


def read_patches(scene: Scene, cells: list[tuple[int, int]], patch_px: int = 96,
                 stride_px: int | None = None, handles: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, C, P, P)`` in ``scene.dtype`` and a valid mask ``(N, P, P)`` for ``cells``.

    Only the windows covering the patches are read, per file and at each band's native resolution
    (nearest when upsampling a coarser band, average when downsampling to a coarser declared
    grid). A pixel is invalid where any band equals ``scene.nodata``, is 0 with
    ``zero_is_nodata``, is not finite, or falls outside a band file.  ``handles``: a dict that keeps
    the files open between calls (the caller closes them).
    """
    stride = int(stride_px or patch_px)
    n, nb = len(cells), len(scene.bands)
    pixels = np.zeros((n, nb, patch_px, patch_px), dtype=scene.dtype)
    valid = np.ones((n, patch_px, patch_px), dtype=bool)
    by_file: dict[str, list[int]] = {}
    for j, b in enumerate(scene.bands):
        by_file.setdefault(b.path, []).append(j)
    fill = scene.nodata if scene.nodata is not None else 0
    for path, js in by_file.items():
        with _held(path, handles) as ds:
            idx = [scene.bands[j].band_index for j in js]
            for i, cell in enumerate(cells):
                a = _read_band_patch(ds, idx, _cell_bounds(scene, cell, patch_px, stride), patch_px,
                                     scene.res, fill)
                data = np.ma.getdata(a)
                pixels[i, js] = data.astype(scene.dtype, copy=False)
                valid[i] &= ~np.ma.getmaskarray(a).any(axis=0)
                valid[i] &= _valid(data, scene.nodata, scene.zero_is_nodata).all(axis=0)
    return pixels, valid


def read_cloud(scene: Scene, cells: list[tuple[int, int]], patch_px: int = 96,
               stride_px: int | None = None, handles: dict | None = None) -> np.ndarray | None:
    """Boolean cloud pixels ``(N, P, P)`` from the mask band (classes in ``scene.cloud_classes``)."""
    if scene.cloud_mask is None:
        return None
    stride = int(stride_px or patch_px)
    out = np.zeros((len(cells), patch_px, patch_px), dtype=bool)
    with _held(scene.cloud_mask.path, handles) as ds:
        for i, cell in enumerate(cells):
            bounds = _cell_bounds(scene, cell, patch_px, stride)
            w = _snap(from_bounds(*bounds, transform=ds.transform))
            a = ds.read(scene.cloud_mask.band_index, window=w, out_shape=(patch_px, patch_px),
                        resampling=Resampling.nearest, boundless=True, fill_value=0)  # categorical
            out[i] = cloud_pixels(a, scene)
    return out


def cloud_fraction(scene: Scene, cells: list[tuple[int, int]], patch_px: int = 96,
                   stride_px: int | None = None) -> np.ndarray | None:
    """Per-patch share of cloud pixels ``(N,)`` (over all patch pixels), or None without a mask."""
    cloud = read_cloud(scene, cells, patch_px, stride_px)
    return None if cloud is None else cloud.reshape(len(cells), -1).mean(axis=1)


def patch_quality(valid: np.ndarray, cloud: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``nodata_fraction`` and ``cloud_fraction`` per patch (``cloud``: (N, P, P) bools or (N,) shares)."""
    valid = np.asarray(valid, dtype=bool)
    n = valid.shape[0]
    out = {"nodata_fraction": 1.0 - valid.reshape(n, -1).mean(axis=1) if n else np.zeros(0)}
    if cloud is None:
        out["cloud_fraction"] = np.full(n, np.nan)
    else:
        cloud = np.asarray(cloud)
        out["cloud_fraction"] = (cloud.reshape(n, -1).mean(axis=1) if cloud.ndim > 1
                                 else cloud.astype(float))
    return out


def patch_bounds(scene: Scene, cells: list[tuple[int, int]], patch_px: int = 96,
                 stride_px: int | None = None) -> np.ndarray:
    """``(N, 4)`` patch bounds (minx, miny, maxx, maxy) in the scene's native CRS."""
    stride = int(stride_px or patch_px)
    return np.array([_cell_bounds(scene, c, patch_px, stride) for c in cells], dtype=float).reshape(-1, 4)


def patch_lonlat(scene: Scene, cells: list[tuple[int, int]], patch_px: int = 96,
                 stride_px: int | None = None) -> np.ndarray:
    """``(N, 2)`` patch centres as (lon, lat) in EPSG:4326."""
    b = patch_bounds(scene, cells, patch_px, stride_px)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    tr = pyproj.Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(cx, cy)
    return np.column_stack([np.asarray(lon, float), np.asarray(lat, float)]).reshape(-1, 2)
