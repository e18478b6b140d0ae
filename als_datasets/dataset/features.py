"""Explicit ``datasets.Features`` for the shard samples, and the sample -> Arrow conversion.

A *sample* is ``{"__key__": str, "<name>.npy": np.ndarray, ..., "json": dict}`` (DESIGN.md §5).
The features are always declared explicitly (never inferred from a handful of samples) and the
same object drives the Parquet schema, the card's ``dataset_info`` and the webdataset config.

Feature types chosen
--------------------
* ``__key__`` -> ``Value("string")``.
* ``<name>.npy`` arrays of rank 2..5 -> ``Array2D`` .. ``Array5D`` with a variable first axis
  and the other axes fixed to the example's shape, e.g. ``xyz.npy`` float32 (N, 3) ->
  ``Array2D(shape=(None, 3), dtype="float32")``; rank 1 -> ``List(Value(dtype))``
  (``intensity.npy`` uint16 (N,) -> ``List(Value("uint16"))``); rank 0 -> ``Value``.
  Why ArrayXD rather than ``List(List(Value("float32"), length=3))``: both round-trip through
  ``load_dataset`` for the Parquet and the webdataset config (identical python lists), but
  ``with_format("numpy")`` turns a 1 M-point ``list<fixed_size_list>`` row into an array in
  ~4.6 s (python-object path) against ~3 ms for ``Array2D`` (zero-copy path), and for N = 0
  ``Array2D`` gives a (0, 3) float32 array where the list type gives an object array of
  shape (0,).  The Parquet column is an Arrow extension type whose storage is plain
  ``list<list<float>>``, so pyarrow / DuckDB / polars still read it without ``datasets``.
* ``json`` -> a struct (plain dict of features, keys sorted) mirroring the dict:
  bool -> ``bool``, int -> ``int64``, float -> ``float64``, str -> ``string``, list ->
  ``List(...)``, nested dict -> nested struct.  ``None`` values (and empty lists) carry no type:
  give them in ``json_schema``.
"""

from __future__ import annotations

import math
import numbers
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Array2D, Array3D, Array4D, Array5D, Features, List, Value
from datasets.features.features import _ArrayXD

__all__ = [
    "KEY_RE",
    "features_for_samples",
    "normalize_json",
    "to_arrow_table",
    "validate_sample",
    "conform_sample",
    "to_arrow_row",
    "array_spec",
]

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

_PY_TYPES: dict[Any, str] = {bool: "bool", int: "int64", float: "float64", str: "string", bytes: "binary"}


# --------------------------------------------------------------------------------------------
# JSON metadata
# --------------------------------------------------------------------------------------------
def normalize_json(obj: Any, _path: str = "json") -> Any:
    """Plain-python, JSON-safe copy of ``obj``: numpy scalars/arrays -> python, tuples -> lists,
    NaN -> None.  ±inf raises ``ValueError`` (``json.dumps(allow_nan=False)`` would too)."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, np.generic):
        obj = obj.item()
        if obj is None or isinstance(obj, (str, bool)):
            return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            raise ValueError(f"{_path}: infinite value {f!r} cannot be stored (JSON has no inf)")
        return f
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{_path}: dict keys must be str, got {k!r}")
            out[k] = normalize_json(v, f"{_path}.{k}")
        return out
    if isinstance(obj, np.ndarray):
        return [normalize_json(v, f"{_path}[]") for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [normalize_json(v, f"{_path}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{_path}: value of type {type(obj).__name__} is not JSON-serialisable")


def _feature_from_spec(spec: Any, path: str) -> Any:
    """json_schema entry -> feature: python type, dtype string, [type], list[type], dict, or a feature."""
    if isinstance(spec, (Value, List)) or hasattr(spec, "pa_type") or hasattr(spec, "_type"):
        return spec
    if isinstance(spec, Mapping):
        return {k: _feature_from_spec(spec[k], f"{path}.{k}") for k in sorted(spec)}
    if isinstance(spec, list):
        if len(spec) != 1:
            raise ValueError(
                f"{path}: a list type in json_schema must have exactly one element, got {spec!r}"
            )
        return List(_feature_from_spec(spec[0], f"{path}[]"))
    if typing.get_origin(spec) in (list, tuple):  # list[float]
        (arg,) = typing.get_args(spec)[:1]
        return List(_feature_from_spec(arg, f"{path}[]"))
    if spec in _PY_TYPES:
        return Value(_PY_TYPES[spec])
    if isinstance(spec, str):
        return Value(spec)
    if isinstance(spec, type) and issubclass(spec, np.generic):
        return Value(str(np.dtype(spec)))
    raise TypeError(f"{path}: cannot turn json_schema entry {spec!r} into a feature")


def _feature_from_value(value: Any, path: str) -> Any:
    if value is None:
        raise ValueError(f"{path} is None in the example: declare its type in json_schema")
    if isinstance(value, (bool, np.bool_)):
        return Value("bool")
    if isinstance(value, (numbers.Integral, np.integer)):
        return Value("int64")
    if isinstance(value, (numbers.Real, np.floating)):
        return Value("float64")
    if isinstance(value, str):
        return Value("string")
    if isinstance(value, bytes):
        return Value("binary")
    if isinstance(value, Mapping):
        return {k: _feature_from_value(value[k], f"{path}.{k}") for k in sorted(value)}
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [v for v in value if v is not None]
        if not items:
            raise ValueError(
                f"{path} is an empty list (or only None) in the example: declare its type in json_schema"
            )
        feats = [_feature_from_value(v, f"{path}[]") for v in items]
        kinds = {repr(f) for f in feats}
        if kinds == {repr(Value("int64")), repr(Value("float64"))}:
            return List(Value("float64"))
        if len(kinds) != 1:
            raise ValueError(f"{path}: list mixes types {sorted(kinds)}; declare it in json_schema")
        return List(feats[0])
    raise TypeError(f"{path}: value of type {type(value).__name__} has no feature type")


def _json_feature(example: Mapping[str, Any] | None, schema: Mapping[str, Any] | None, path: str) -> dict:
    example = example or {}
    schema = schema or {}
    out: dict[str, Any] = {}
    for k in sorted(set(example) | set(schema)):
        sub_path = f"{path}.{k}"
        if k in schema:
            spec = schema[k]
            if isinstance(spec, Mapping) and not hasattr(spec, "_type"):
                sub_example = example.get(k)
                if sub_example is not None and not isinstance(sub_example, Mapping):
                    raise TypeError(
                        f"{sub_path}: json_schema declares a dict but the example has {sub_example!r}"
                    )
                out[k] = _json_feature(sub_example, spec, sub_path)
            else:
                out[k] = _feature_from_spec(spec, sub_path)
        else:
            out[k] = _feature_from_value(example[k], sub_path)
    return out


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------
def array_spec(feature: Any) -> tuple[np.dtype, tuple[int | None, ...]] | None:
    """(dtype, shape with None for variable axes) of an array feature (ArrayXD or nested
    ``List`` of ``Value``), else None."""
    if isinstance(feature, _ArrayXD):
        return np.dtype(feature.dtype), tuple(feature.shape)
    shape: list[int | None] = []
    f = feature
    while isinstance(f, List):
        shape.append(None if f.length == -1 else int(f.length))
        f = f.feature
    if not isinstance(f, Value) or not shape:
        return None
    try:
        dtype = np.dtype(f.dtype)
    except TypeError:
        return None
    return dtype, tuple(shape)


_ARRAY_XD = {2: Array2D, 3: Array3D, 4: Array4D, 5: Array5D}


def _array_feature(arr: np.ndarray, fixed_shape: Sequence[int | None] | None = None) -> Any:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"unsupported array dtype {arr.dtype} (only bool, integer and float arrays)")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if fixed_shape is None:
        fixed_shape = (None,) + tuple(arr.shape[1:])
    if len(fixed_shape) != arr.ndim:
        raise ValueError(f"shape spec {tuple(fixed_shape)} does not match array rank {arr.ndim}")
    fixed_shape = tuple(None if n is None else int(n) for n in fixed_shape)
    if arr.ndim == 0:
        return Value(str(arr.dtype))
    if arr.ndim in _ARRAY_XD and all(n is not None for n in fixed_shape[1:]):
        return _ARRAY_XD[arr.ndim](shape=fixed_shape, dtype=str(arr.dtype))
    feature: Any = Value(str(arr.dtype))
    for n in reversed(fixed_shape):
        feature = List(feature) if n is None else List(feature, length=n)
    return feature


def features_for_samples(
    example: Mapping[str, Any],
    json_schema: Mapping[str, Any] | None = None,
    array_shapes: Mapping[str, Sequence[int | None]] | None = None,
) -> Features:
    """Explicit features for samples shaped like ``example``.

    * ``json_schema``: ``{field: type}`` for the ``json`` dict, overriding / completing the
      example (needed where the example holds None or an empty list).  A type is a python type
      (``int``, ``float``, ``str``, ``bool``), a dtype name (``"float32"``), ``[float]`` or
      ``list[float]``, a nested dict, or a ``datasets`` feature.
    * ``array_shapes``: ``{"pixels.npy": (4, 96, 96)}`` to fix/free axes (None = variable);
      default: first axis variable, the others fixed to the example's shape.

    Column order: ``__key__``, then the other fields sorted by name (= tar member order).
    """
    if "__key__" not in example:
        raise ValueError("example has no '__key__'")
    feats: dict[str, Any] = {"__key__": Value("string")}
    names = sorted(k for k in example if not k.startswith("__"))
    if json_schema is not None and "json" not in names:
        names = sorted([*names, "json"])
    for name in names:
        if not FIELD_RE.match(name):
            raise ValueError(
                f"field name {name!r} is not allowed (only [A-Za-z0-9_.-], not starting with a dot)"
            )
        value = example.get(name)
        if name.endswith(".npy"):
            shape = (array_shapes or {}).get(name)
            feats[name] = _array_feature(np.asarray(value), shape)
        elif name == "json" or name.endswith(".json"):
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"{name!r} must be a dict, got {type(value).__name__}")
            feats[name] = _json_feature(value, json_schema if name == "json" else None, name)
        elif isinstance(value, str):
            feats[name] = Value("string")
        elif isinstance(value, bytes):
            feats[name] = Value("binary")
        else:
            raise TypeError(f"field {name!r}: unsupported value of type {type(value).__name__}")
    return Features(feats)


# --------------------------------------------------------------------------------------------
# Validation and conversion
# --------------------------------------------------------------------------------------------
def _check_json(value: Any, feature: Any, path: str) -> None:
    if value is None:
        return
    if isinstance(feature, dict):
        if not isinstance(value, Mapping):
            raise TypeError(f"{path}: expected a dict, got {type(value).__name__}")
        extra = set(value) - set(feature)
        missing = set(feature) - set(value)
        if extra or missing:
            raise ValueError(
                f"{path}: fields differ from the declared features"
                + (f"; undeclared: {sorted(extra)}" if extra else "")
                + (f"; missing: {sorted(missing)}" if missing else "")
            )
        for k, f in feature.items():
            _check_json(value[k], f, f"{path}.{k}")
    elif isinstance(feature, List):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {type(value).__name__}")
        if feature.length != -1 and len(value) != feature.length:
            raise ValueError(f"{path}: expected {feature.length} items, got {len(value)}")
        for i, v in enumerate(value):
            _check_json(v, feature.feature, f"{path}[{i}]")
    elif isinstance(feature, Value):
        t = feature.pa_type
        ok = (
            (pa.types.is_boolean(t) and isinstance(value, bool))
            or (pa.types.is_integer(t) and isinstance(value, int) and not isinstance(value, bool))
            or (pa.types.is_floating(t) and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (pa.types.is_string(t) or pa.types.is_large_string(t))
            and isinstance(value, str)
            or (pa.types.is_binary(t) and isinstance(value, bytes))
        )
        if not ok:
            raise TypeError(f"{path}: value {value!r} does not match declared {feature!r}")


def validate_sample(sample: Mapping[str, Any], features: Features) -> None:
    """Raise if ``sample`` does not carry exactly the declared fields with compatible values."""
    key = sample.get("__key__")
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValueError(f"bad sample key {key!r}: only [A-Za-z0-9_-] allowed (no dots)")
    names = set(sample) - {"__key__", "__url__", "__local_path__"}
    declared = set(features) - {"__key__"}
    if names != declared:
        raise ValueError(
            f"sample {key!r}: fields {sorted(names)} differ from the declared features {sorted(declared)}"
        )
    for name in sorted(declared):
        feat = features[name]
        value = sample[name]
        spec = array_spec(feat) if name.endswith(".npy") else None
        if spec is not None:
            dtype, shape = spec
            arr = np.asarray(value)
            if arr.ndim != len(shape) or any(
                n is not None and n != s for n, s in zip(shape, arr.shape, strict=True)
            ):
                raise ValueError(f"sample {key!r}: {name} has shape {arr.shape}, declared {shape}")
            if arr.dtype != dtype and not np.can_cast(arr.dtype, dtype, "safe"):
                raise TypeError(f"sample {key!r}: {name} has dtype {arr.dtype}, declared {dtype}")
        elif isinstance(feat, dict):
            _check_json(normalize_json(value, f"{key}.{name}"), feat, f"{key}.{name}")


def conform_sample(sample: Mapping[str, Any], features: Features) -> dict[str, Any]:
    """Validate ``sample`` and return a copy whose arrays have the declared dtypes (a safe cast,
    e.g. uint8 -> uint16; no copy when already right) and whose json is normalised, so that the
    tar members hold exactly what the Parquet rows hold."""
    validate_sample(sample, features)
    out = dict(sample)
    for name, feat in features.items():
        if name.endswith(".npy"):
            spec = array_spec(feat)
            if spec is not None:
                out[name] = np.asarray(sample[name], dtype=spec[0])
        elif isinstance(feat, dict):
            out[name] = normalize_json(sample[name], name)
    return out


def _array_column(arrays: list[np.ndarray], dtype: np.dtype, shape: tuple, pa_type: pa.DataType) -> pa.Array:
    """Arrow array (nested list / ArrayXD extension) from numpy arrays, without python objects."""
    if not all(n is not None for n in shape[1:]):  # variable inner axes: slow generic path
        return pa.array([np.asarray(a, dtype=dtype).tolist() for a in arrays], type=pa_type)
    ext_type = pa_type if isinstance(pa_type, pa.ExtensionType) else None
    storage_type = ext_type.storage_type if ext_type is not None else pa_type
    levels = []
    t = storage_type
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        levels.append(t)
        t = t.value_type
    if len(levels) != len(shape):
        raise ValueError(f"arrow type {pa_type} does not match array rank {len(shape)}")
    flat = (
        np.concatenate([np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrays])
        if arrays
        else np.zeros(0, dtype=dtype)
    )
    values: pa.Array = pa.array(flat, type=t)
    first_lengths = np.fromiter(
        (a.shape[0] if a.ndim else 0 for a in arrays), dtype=np.int64, count=len(arrays)
    )
    for depth in range(len(levels) - 1, -1, -1):
        lt = levels[depth]
        if pa.types.is_fixed_size_list(lt):
            values = pa.FixedSizeListArray.from_arrays(values, type=lt)
            continue
        if depth == 0:
            lengths = first_lengths
        else:
            lengths = np.full(len(values) // shape[depth], shape[depth], dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if pa.types.is_list(lt):
            if offsets[-1] > np.iinfo(np.int32).max:
                raise ValueError(
                    "array column too large for one row group (> 2**31 values); lower row_group_size"
                )
            values = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, type=lt)
        else:
            values = pa.LargeListArray.from_arrays(pa.array(offsets), values, type=lt)
    if ext_type is not None:
        values = pa.ExtensionArray.from_storage(ext_type, values)
    return values


def to_arrow_table(
    samples: Iterable[Mapping[str, Any]], features: Features, validate: bool = True
) -> pa.Table:
    """Convert samples (a row group's worth) to a table with schema ``features.arrow_schema``."""
    samples = list(samples)
    if validate:
        for s in samples:
            validate_sample(s, features)
    schema = features.arrow_schema
    columns = []
    for field in schema:
        name = field.name
        feat = features[name]
        values = [s[name] for s in samples]
        spec = array_spec(feat) if name.endswith(".npy") else None
        if spec is not None:
            dtype, shape = spec
            columns.append(_array_column([np.asarray(v) for v in values], dtype, shape, field.type))
        elif isinstance(feat, dict):
            columns.append(pa.array([normalize_json(v) for v in values], type=field.type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def to_arrow_row(sample: Mapping[str, Any], features: Features) -> dict[str, Any]:
    """One sample as python values matching ``features`` (what ``load_dataset`` returns)."""
    return to_arrow_table([sample], features).to_pylist()[0]
