"""Hub dataset card (README.md YAML front matter): ONE declared config per dataset.

Every config the card declares must load with a plain ``load_dataset(repo, config)``, map-style
and streaming (DESIGN.md §4).  ``datasets`` (<= 5.2, huggingface/datasets#6447/#7101) infers ONE
builder module per folder / Hub repo, from the data files of the *first* config in the YAML, and
runs it for every config: a second config over files of another type (tars next to Parquet)
would be read with the wrong builder and fail.  So the card declares one config (``default``)
over the first format the build wrote (Parquet when it wrote Parquet, else the WebDataset tars),
with its explicit features (``dataset_info``, serialised by ``datasets`` itself,
``DatasetInfosDict.to_dataset_card_data``); the other format's files hold the same samples and
are described in the card's text, with the plain calls that read them
(``load_dataset("webdataset", data_files=...)``, ``webdataset.WebDataset``).
:func:`load_config` loads either format with the declared features.

``num_bytes`` is the size of the Arrow data ``datasets`` generates: for the Parquet shards the
writer records it (the files' Arrow ``nbytes``, ``arrow_bytes`` in manifest.json) and the card
states it with ``dataset_size``; where it is not known (tar-only builds, builds from before) the
card leaves both out rather than write 0 (``datasets`` then ignores the split sizes, with a
warning).  ``download_size`` is the real bytes of the declared config's files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import DatasetInfo, Features, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

__all__ = [
    "PARQUET_CONFIG",
    "WEBDATASET_CONFIG",
    "card_yaml",
    "declared_configs",
    "load_config",
    "read_card_yaml",
    "size_category",
    "write_readme",
]

PARQUET_CONFIG = "default"
WEBDATASET_CONFIG = "webdataset"
_FORMAT_DIRS = {PARQUET_CONFIG: ("parquet", "*.parquet"), WEBDATASET_CONFIG: ("webdataset", "*.tar")}
_MODULE_FOR_EXT = {".parquet": "parquet", ".tar": "webdataset"}


def size_category(n: int) -> str:
    """Hub ``size_categories`` label for ``n`` examples."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
        (10_000_000_000, "1B<n<10B"),
        (100_000_000_000, "10B<n<100B"),
        (1_000_000_000_000, "100B<n<1T"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1T"


def _as_list(v: str | Sequence[str]) -> list[str]:
    return [v] if isinstance(v, str) else [str(x) for x in v]


def card_yaml(
    features: Features,
    splits: Mapping[str, int | Mapping[str, Any]],
    pretty_name: str,
    license: str,
    tags: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    formats: Sequence[str] = (PARQUET_CONFIG, WEBDATASET_CONFIG),
) -> dict[str, Any]:
    """The card's YAML metadata as a plain dict.

    ``splits`` maps a split name to its number of examples, or to a dict with
    ``num_examples`` (required), and optionally ``num_bytes`` (the Arrow size of the split's
    Parquet data), ``parquet`` / ``webdataset`` (a glob or list of
    paths relative to the dataset root; default ``parquet/<split>/*.parquet`` /
    ``webdataset/<split>/*.tar``) and ``parquet_bytes`` / ``webdataset_bytes`` (size of that
    format's files, for ``download_size``).
    ``formats``: the formats the build wrote, ``"default"`` (Parquet) and/or ``"webdataset"``;
    only the first is declared as a config (named ``default``; see the module docstring), so
    Parquet comes first.
    ``extra``: more top-level keys (``task_categories``, ``language``, ...); they may not
    override ``configs`` / ``dataset_info``.
    """
    formats = list(formats)
    if not formats or any(f not in _FORMAT_DIRS for f in formats):
        raise ValueError(f"formats must be a non-empty subset of {list(_FORMAT_DIRS)}, got {formats}")
    if not splits:
        raise ValueError("at least one split is needed")
    norm: dict[str, dict[str, Any]] = {}
    for name, spec in splits.items():
        spec = {"num_examples": spec} if isinstance(spec, int) else dict(spec)
        if "num_examples" not in spec:
            raise ValueError(f"split {name!r}: num_examples missing")
        norm[name] = spec

    folder, pattern = _FORMAT_DIRS[formats[0]]
    data_files = [
        {"split": name, "path": _as_list(spec.get(folder, f"{folder}/{name}/{pattern}"))}
        for name, spec in norm.items()
    ]
    for df in data_files:
        if len(df["path"]) == 1:
            df["path"] = df["path"][0]
    configs = [{"config_name": PARQUET_CONFIG, "data_files": data_files, "default": True}]
    split_dict = SplitDict()
    for name, spec in norm.items():
        split_dict.add(SplitInfo(name=name, num_bytes=int(spec.get("num_bytes") or 0),
                                 num_examples=int(spec["num_examples"])))
    # the Arrow size only when known for every split, and only for a Parquet config (what datasets
    # generates from the tars is not measured): datasets reads `splits` only when each has num_bytes
    known = folder == "parquet" and all(spec.get("num_bytes") for spec in norm.values())
    download = [spec.get(f"{folder}_bytes") for spec in norm.values()]
    infos = DatasetInfosDict()
    infos[PARQUET_CONFIG] = DatasetInfo(
        features=Features(features),
        splits=split_dict,
        download_size=sum(download) if all(d is not None for d in download) else None,
        dataset_size=sum(int(spec["num_bytes"]) for spec in norm.values()) if known else None,
    )

    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        tags=sorted(set(tags)) or None,
        size_categories=[size_category(sum(int(s["num_examples"]) for s in norm.values()))],
    )
    card_data["configs"] = configs
    infos.to_dataset_card_data(card_data)
    out = card_data.to_dict()
    if not known:
        for info in _as_info_list(out.get("dataset_info")):
            info.pop("dataset_size", None)  # the generated Arrow size is not known: no made-up figure
            for split in info.get("splits") or []:
                split.pop("num_bytes", None)
    for k, v in (extra or {}).items():
        if k in ("configs", "dataset_info"):
            raise ValueError(f"extra may not override {k!r}")
        out[k] = v
    # keep dataset_info and configs in the order written above, the rest sorted
    return {
        k: out[k]
        for k in sorted(out, key=lambda k: (k in ("configs", "dataset_info"), k))
        if out[k] is not None
    }


def _as_info_list(info: Any) -> list[dict]:
    if isinstance(info, dict):
        return [info]
    return [i for i in info or [] if isinstance(i, dict)]


def write_readme(out_dir: str | os.PathLike, yaml_dict: Mapping[str, Any], body_markdown: str) -> Path:
    """Write ``out_dir/README.md`` (YAML front matter + body) atomically; returns its path."""
    from als_datasets.shards.writer import atomic_write

    data = DatasetCardData(**dict(yaml_dict))
    body = body_markdown if body_markdown.endswith("\n") else body_markdown + "\n"
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}")
    path = Path(out_dir) / "README.md"
    text = str(card)
    if not text.endswith("\n"):
        text += "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def read_card_yaml(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The YAML metadata of ``out_dir/README.md``."""
    return DatasetCard.load(Path(out_dir) / "README.md").data.to_dict()


def declared_configs(card: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{config_name: {"data_files": {split: [paths]}, "features": Features | None,
    "splits": {split: num_examples}}}`` from card YAML metadata."""
    infos = DatasetInfosDict.from_dataset_card_data(DatasetCardData(**dict(card)))
    out: dict[str, dict[str, Any]] = {}
    for cfg in card.get("configs") or []:
        name = cfg["config_name"]
        data_files: dict[str, list[str]] = {}
        for df in cfg.get("data_files") or []:
            data_files.setdefault(df["split"], []).extend(_as_list(df["path"]))
        info = infos.get(name)
        out[name] = {
            "data_files": data_files,
            "features": info.features if info is not None else None,
            "splits": {k: v.num_examples for k, v in (info.splits or {}).items()} if info is not None else {},
        }
    return out


def load_config(out_dir: str | os.PathLike, name: str = PARQUET_CONFIG, **kwargs: Any):
    """Load one format of a build (a folder or a Hub dataset id ``ORG/NAME``) with the card's
    declared features.

    ``name``: a config the card declares (``default``: this is then just
    ``load_dataset(out_dir, name)``), or ``"webdataset"``: the tar shards
    (``webdataset/<split>/*.tar``), which the card describes but does not declare (see the module
    docstring), read with ``load_dataset("webdataset", data_files=...)`` and the declared features.
    Extra keyword arguments go to ``load_dataset`` (``split``, ``cache_dir``, ``streaming``,
    ``revision``, ...).  On the Hub the files are read through ``hf://`` (the token stays inside
    the HTTP client).
    """
    from datasets import load_dataset

    on_hub = not Path(out_dir).is_dir()
    revision = kwargs.pop("revision", None) if on_hub else None
    if on_hub:
        from huggingface_hub import hf_hub_download

        readme = hf_hub_download(str(out_dir), "README.md", repo_type="dataset", revision=revision)
        card = DatasetCard.load(readme).data.to_dict()
    else:
        card = read_card_yaml(out_dir)
    configs = declared_configs(card)
    if name in configs:
        return load_dataset(str(out_dir), name, revision=revision, **kwargs) if on_hub else \
            load_dataset(str(out_dir), name, **kwargs)
    if name not in _FORMAT_DIRS or not configs:
        raise ValueError(f"{out_dir}: no config {name!r} in README.md (declared: {sorted(configs)}; "
                         f"the other format: {WEBDATASET_CONFIG!r})")
    declared = next(iter(configs.values()))
    folder, pattern = _FORMAT_DIRS[name]
    root = f"hf://datasets/{out_dir}@{revision or 'main'}" if on_hub else Path(out_dir).resolve().as_posix()
    data_files = {split: f"{root}/{folder}/{split}/{pattern}" for split in declared["data_files"]}
    kwargs.setdefault("features", declared["features"])
    ds = load_dataset(_MODULE_FOR_EXT[pattern[1:]], data_files=data_files, **kwargs)
    if not kwargs.get("streaming") and hasattr(ds, "items"):  # check the declared split sizes
        for split, n in declared["splits"].items():
            if split in ds and n is not None and len(ds[split]) != n:
                raise ValueError(f"{out_dir}: {name!r} split {split!r} has {len(ds[split])} rows, card says {n}")
    return ds
