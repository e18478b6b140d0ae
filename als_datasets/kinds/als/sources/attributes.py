"""Optional per-point attributes (recipe key ``point_attributes``): which LAS dimensions a sample
keeps besides xyz, intensity, return number, number of returns and classification (always kept).

A recipe lists names, or ``{name, dtype}`` mappings::

    point_attributes: [red, green, blue, nir, gps_time, {name: Amplitude, dtype: float32}]

Standard names (the LAS 1.4 point formats that carry them):

=====================  =======  ==========================================================
name                   dtype    from
=====================  =======  ==========================================================
``gps_time``           float64  PF 1, 3-10
``scan_angle``         float32  degrees: PF 6-10 ``scan_angle`` × 0.006, PF 0-5 ``scan_angle_rank``
``user_data``          uint8    every PF
``point_source_id``    uint16   every PF
``red``/``green``/``blue``  uint16  PF 2, 3, 5, 7, 8, 10
``nir``                uint16   PF 8, 10
``scan_direction_flag``, ``edge_of_flight_line``, ``synthetic``, ``key_point``, ``withheld``
                       uint8    every PF (0 / 1)
``overlap``, ``scanner_channel``  uint8  PF 6-10
=====================  =======  ==========================================================

Any other name is an *extra bytes* dimension (LAS extra-bytes VLR; in EPT, a schema dimension):
its values as laspy reads them (scaled when the VLR gives a scale) cast to ``dtype`` (default
float32).  An integer ``dtype`` refuses values it cannot hold.  The sample member is
``<name>.npy``, the name lowercased with every character outside ``[a-z0-9_]`` replaced by ``_``.

A file that lacks a requested attribute is refused with a one-line error naming the file and
the attribute (no fill value: a dataset never mixes measured and invented values).
"""

from __future__ import annotations

import re

import numpy as np

from als_datasets.errors import InputError

__all__ = ["BASE_ATTRIBUTES", "STANDARD", "parse_point_attributes", "member_name", "read_attributes", "attribute_bytes"]

#: what every sample keeps (the staged base fields besides x, y, z)
BASE_ATTRIBUTES = ("intensity", "return_number", "number_of_returns", "classification")

#: standard name -> (dtype, laspy dimension, point formats that carry it; None: every format)
STANDARD: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "gps_time": ("float64", "gps_time", (1, 3, 4, 5, 6, 7, 8, 9, 10)),
    "scan_angle": ("float32", "scan_angle", None),
    "user_data": ("uint8", "user_data", None),
    "point_source_id": ("uint16", "point_source_id", None),
    "red": ("uint16", "red", (2, 3, 5, 7, 8, 10)),
    "green": ("uint16", "green", (2, 3, 5, 7, 8, 10)),
    "blue": ("uint16", "blue", (2, 3, 5, 7, 8, 10)),
    "nir": ("uint16", "nir", (8, 10)),
    "scan_direction_flag": ("uint8", "scan_direction_flag", None),
    "edge_of_flight_line": ("uint8", "edge_of_flight_line", None),
    "synthetic": ("uint8", "synthetic", None),
    "key_point": ("uint8", "key_point", None),
    "withheld": ("uint8", "withheld", None),
    "overlap": ("uint8", "overlap", (6, 7, 8, 9, 10)),
    "scanner_channel": ("uint8", "scanner_channel", (6, 7, 8, 9, 10)),
}
DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
_RESERVED = {"x", "y", "z", "xyz", *BASE_ATTRIBUTES}


def member_name(name: str) -> str:
    """The attribute's staged field and sample member stem: ``Pulse width`` -> ``pulse_width``."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def parse_point_attributes(where, value) -> tuple[tuple[str, str], ...]:
    """The recipe's ``point_attributes`` as ``((name, dtype), ...)`` in the recipe's order
    (``None`` / ``[]``: none); a one-line :class:`InputError` naming the recipe otherwise."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise InputError(where, f"point_attributes must be a list of names or {{name, dtype}}, got {value!r}")
    out: list[tuple[str, str]] = []
    members: dict[str, str] = {}
    for i, item in enumerate(value):
        if isinstance(item, dict):
            extra = set(item) - {"name", "dtype"}
            if extra or not item.get("name"):
                raise InputError(where, f"point_attributes[{i}] must be a name or {{name, dtype}}, got {item!r}")
            name, dtype = str(item["name"]), item.get("dtype")
        elif isinstance(item, str) and item:
            name, dtype = item, None
        else:
            raise InputError(where, f"point_attributes[{i}] must be a name or {{name, dtype}}, got {item!r}")
        std = STANDARD.get(name.lower())
        if std is not None:
            name = name.lower()
        if dtype is None:
            dtype = std[0] if std else "float32"
        dtype = str(dtype)
        if dtype not in DTYPES:
            raise InputError(where, f"point_attributes {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if std is not None and dtype != std[0]:
            raise InputError(where, f"point_attributes {name!r} is stored as {std[0]} (got dtype {dtype!r})")
        m = member_name(name)
        if m in _RESERVED or not m.strip("_"):
            raise InputError(where, f"point_attributes {name!r}: every sample already has {m!r} (or the name is "
                                    "empty); list only attributes beyond xyz, intensity, returns and classification")
        if m in members:
            raise InputError(where, f"point_attributes {name!r} and {members[m]!r} would both be stored as {m}.npy")
        members[m] = name
        out.append((name, dtype))
    return tuple(out)


def _extra_names(point_format) -> dict[str, str]:
    return {n.lower(): n for n in point_format.extra_dimension_names}


def _cast(values, dtype: str, where: str, name: str) -> np.ndarray:
    a = np.asarray(values)
    out = a.astype(dtype)
    if np.dtype(dtype).kind in "iu" and len(a):
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise InputError(where, f"point attribute {name!r} holds non-finite values; declare a float dtype")
        if not np.array_equal(out, a):
            raise InputError(where, f"point attribute {name!r} holds values a {dtype} cannot store "
                                    f"({a.min()}..{a.max()}); declare a wider dtype in point_attributes")
    return out


def read_attributes(points, attributes, where: str, keep=None) -> dict[str, np.ndarray]:
    """The requested attributes of laspy ``points`` (a LasData / ScaleAwarePointRecord), keyed by
    :func:`member_name`, cast to their dtypes (``keep``: a mask or index applied first).

    Raises a one-line :class:`InputError` naming ``where`` and the attribute when the file's point
    format does not carry it."""
    if not attributes:
        return {}
    pf = points.point_format
    dims = set(pf.dimension_names)
    extra = _extra_names(pf)
    out: dict[str, np.ndarray] = {}
    for name, dtype in attributes:
        std = STANDARD.get(name)
        if std is not None:
            dim = std[1]
            if name == "scan_angle":
                if "scan_angle" in dims:
                    vals = np.asarray(points["scan_angle"], dtype=np.float32) * np.float32(0.006)
                else:
                    vals = np.asarray(points["scan_angle_rank"], dtype=np.float32)
            elif dim in dims:
                vals = np.asarray(points[dim])
            else:
                raise InputError(where, f"has no point attribute {name!r} (LAS point format {pf.id}; it is in point "
                                        f"formats {', '.join(map(str, std[2] or ()))})")
        else:
            dim = name if name in dims else extra.get(name.lower())
            if dim is None:
                have = ", ".join(pf.extra_dimension_names) or "none"
                raise InputError(where, f"has no point attribute {name!r} (not a standard name, not among its "
                                        f"extra-bytes dimensions: {have})")
            vals = np.asarray(points[dim])
        if vals.ndim != 1:
            raise InputError(where, f"point attribute {name!r} has {vals.shape[1:]} values per point; only "
                                    "scalar attributes are supported")
        if keep is not None:
            vals = vals[keep]
        out[member_name(name)] = _cast(vals, dtype, where, name)
    return out


def attribute_bytes(attributes) -> int:
    """Bytes per point the attributes add to a sample."""
    return sum(np.dtype(d).itemsize for _, d in attributes)
