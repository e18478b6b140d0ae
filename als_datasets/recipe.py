"""Recipe loading: YAML → a validated, resolved recipe of the recipe's kind (DESIGN.md §3).

The common part lives here: reading the file, ``demo:`` (the kind's embedded demo under this
file's keys), paths relative to the recipe file, command-line overrides, the output folder and
the helpers every kind's recipe section uses.  The kind's own keys are checked by the kind
(:meth:`als_datasets.registry.Kind.load_recipe`).  The resolved recipe (absolute paths, every
default filled in) is written next to the outputs so that a build can be repeated exactly.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from als_datasets.errors import InputError
from als_datasets.registry import DEFAULT_KIND, get_kind

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: keys every kind accepts besides its own
COMMON_KEYS = {"kind", "name", "strategy", "seed", "holdout_fraction", "output", "description", "license", "sources",
               "demo"}
#: ``output.shard_max_bytes`` when the recipe sets none: 1 GB of estimated WebDataset tar per shard
#: (webdataset readers and the Hub work best with shards of about 0.5-2 GB)
DEFAULT_SHARD_MAX_BYTES = 1_000_000_000
OUTPUT_DEFAULTS = {"dir": None, "formats": ["webdataset", "parquet"], "shard_max_samples": 64,
                   "shard_max_bytes": DEFAULT_SHARD_MAX_BYTES}
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_BYTES_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def merge_recipe(where, data: dict, defaults: dict, known: set[str], overrides: dict | None = None,
                 aliases: dict[str, str] | None = None) -> dict:
    """The kind's ``defaults`` with the recipe ``data`` on top and the command-line ``overrides``
    (those not None; ``aliases`` renames a flag to the kind's key) on top of that; a key the
    kind does not know is refused."""
    unknown = set(data) - known
    if unknown:
        raise InputError(where, f"unknown recipe key(s): {', '.join(sorted(unknown))}")
    merged = deep_merge(defaults, data)
    for k, v in (overrides or {}).items():
        if v is not None:
            merged[(aliases or {}).get(k, k)] = v
    return merged


def number(where, d: dict, key: str, kind=float, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False):
    """``d[key]`` as ``kind`` (``int``: a whole number) within the range [lo, hi] (``lo_open`` /
    ``hi_open``: the bound itself excluded); a one-line error naming the recipe and the key
    otherwise.  Booleans, NaN and infinities are refused."""
    import math

    v = d.get(key)
    what = "an integer" if kind is int else "a number"
    try:
        if isinstance(v, bool) or v is None:
            raise TypeError
        x = v if kind is int and isinstance(v, int) else float(v) if kind is int else kind(v)
        if kind is int and not isinstance(x, int):
            if not math.isfinite(x) or x != int(x):
                raise ValueError
            x = int(x)
        elif isinstance(x, float) and not math.isfinite(x):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(where, f"{key} must be {what}, got {v!r}") from None
    if ((lo is not None and (x <= lo if lo_open else x < lo))
            or (hi is not None and (x >= hi if hi_open else x > hi))):
        rng = (f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
               f"{hi if hi is not None else 'inf'}{')' if hi_open else ']'}")
        raise InputError(where, f"{key} must be in {rng}, got {v!r}")
    return x


#: the seeds a recipe accepts (numpy's and the splits' seeded draws)
SEED_MAX = 2**32 - 1


def seed(where, merged: dict) -> int:
    return number(where, merged, "seed", int, 0, SEED_MAX)


def shard_max_samples(where, output: dict) -> int:
    return number(where, {"output.shard_max_samples": output.get("shard_max_samples", 64)},
                  "output.shard_max_samples", int, lo=1)


def output_section(where, merged: dict) -> dict:
    output = merged.get("output")
    output = {} if output is None else output
    if not isinstance(output, dict):
        raise InputError(where, f"output must be a mapping (dir, formats, shard_max_samples), got {output!r}")
    formats = output.get("formats")
    if formats is not None and (not isinstance(formats, list) or not all(isinstance(f, str) for f in formats)):
        raise InputError(where, f"output.formats must be a list of format names, got {formats!r}")
    return output


def byte_size(where, value, key: str) -> int:
    """``value`` as a whole number of bytes ≥ 1: an integer, or a number with a unit
    (``512MB``, ``1.5 GB``, ``2GiB``; kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = _BYTES_RE.match(str(value)) if isinstance(value, str) else None
        unit = _BYTE_UNITS.get(m.group(2).lower()) if m else None
        if unit is None:
            raise InputError(where, f"{key} must be a number of bytes (e.g. 1000000000 or '1GB'), got {value!r}")
        n = float(m.group(1)) * unit
    if not (n >= 1 and n < 2**63):
        raise InputError(where, f"{key} must be at least 1 byte, got {value!r}")
    return int(n)


def shard_bounds(where, output: dict) -> tuple[int, int]:
    """(``output.shard_max_samples``, ``output.shard_max_bytes``) of a recipe's ``output`` section:
    a shard holds at most that many samples and, by the plan's per-sample estimate, at most that many
    bytes of WebDataset tar (a single sample larger than the bound still makes a shard of its own)."""
    n = shard_max_samples(where, output)
    b = output.get("shard_max_bytes")
    return n, byte_size(where, DEFAULT_SHARD_MAX_BYTES if b is None else b, "output.shard_max_bytes")


def read_recipe_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "recipe file not found")
    raw = path.read_bytes()
    if raw[:4] == b"LASF":
        raise InputError(path, "this is a LAS/LAZ point cloud, not a recipe: write a recipe YAML that lists it under "
                               "projects: [{name: ..., pointclouds: [...]}] (see builders/3dep-template.yaml)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not a recipe: a binary file, where a YAML text file is expected") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(path, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise InputError(path, "a recipe must be a YAML mapping")
    return data


def resolve_path(base: Path, value: str | None) -> Path | None:
    """``value`` relative to ``base`` (the recipe's folder) unless absolute; ``~`` expanded."""
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p)


def recipe_base(src: Path | None) -> Path:
    """The folder a recipe's relative paths start from."""
    return src.parent.resolve() if src is not None else Path.cwd()


def check_name(where, name) -> str:
    if not KEY_RE.match(str(name)):
        raise InputError(where, f"name {name!r} may only contain letters, digits, '_' and '-'")
    return str(name)


def resolve_output(where, base: Path, output: dict, out_dir, default_name: str) -> tuple[tuple[str, ...], Path]:
    """(formats, output folder): ``--out`` (relative to the current directory), else the recipe's
    ``output.dir`` (relative to the recipe), else ``out/<default_name>``."""
    formats = tuple(output.get("formats") or ("webdataset", "parquet"))
    bad = set(formats) - {"webdataset", "parquet"}
    if bad:
        raise InputError(where, f"unknown output format(s): {', '.join(sorted(bad))}")
    if out_dir is not None:
        return formats, Path(out_dir)
    if output.get("dir"):
        return formats, resolve_path(base, output["dir"])
    return formats, Path("out") / default_name


def holdout_fraction(where, merged: dict) -> float:
    return number(where, {"holdout_fraction": merged.get("holdout_fraction") or 0.0}, "holdout_fraction", float,
                  0, 1, hi_open=True)


def load_recipe(
    path: str | Path | None = None,
    data: dict | None = None,
    overrides: dict | None = None,
    out_dir: str | Path | None = None,
):
    """Load and validate a recipe from ``path`` (or an in-memory ``data`` dict).

    ``overrides`` are CLI flags (``strategy``, ``seed``, ``samples_per_project``...);
    ``out_dir`` (the ``--out`` flag) is relative to the current directory.  The recipe's
    ``kind:`` (default ``als``) picks the registered kind that validates the rest.
    """
    src = Path(path) if path is not None else None
    if data is None:
        if src is None:
            raise ValueError("load_recipe needs a path or a data dict")
        data = read_recipe_file(src)
    where = src if src is not None else "<recipe>"
    if data.get("demo"):
        # ``demo: true`` (or ``demo: {kind: K, seed: S}``): the kind's embedded demo files, this file's keys on top
        opts = data["demo"] if isinstance(data["demo"], dict) else {}
        demo_kind = get_kind(opts.get("kind", data.get("kind", DEFAULT_KIND)), where, key="demo.kind")
        src = demo_kind.demo_recipe(seed=int(opts.get("seed", 0)))
        data = deep_merge(read_recipe_file(src), {k: v for k, v in data.items() if k != "demo"})
    return get_kind(data.get("kind", DEFAULT_KIND), where).load_recipe(data, src, overrides, out_dir)


def dump_recipe(recipe) -> str:
    """``recipe.yaml``: the resolved recipe as it is published, with no path of this machine in it:
    local paths relative to the recipe's folder (a file outside that folder by its name only: a
    ``../../home/<user>/…`` path would publish this machine's layout), no output folder (``--out`` chooses it), URLs as given (their tokens already removed)."""
    return yaml.safe_dump(portable_recipe(recipe.raw, recipe_base(getattr(recipe, "path", None))), sort_keys=False)


def portable_recipe(raw: dict, base: Path) -> dict:
    """``raw`` with absolute local paths made relative to ``base`` (outside it: the file name only)
    and ``output.dir`` left out."""
    import os

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str) and "://" not in v and os.path.isabs(v):
            rel = Path(os.path.relpath(v, base))
            return Path(v).name if rel.parts[:1] == ("..",) else rel.as_posix()
        return v

    out = walk(raw)
    if isinstance(out.get("output"), dict):
        out["output"] = {k: v for k, v in out["output"].items() if k != "dir"}
    return out
