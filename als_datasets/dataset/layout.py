"""Finalise a build's folder (DESIGN.md §4): manifest, _info, index, frame, recipe, card.

Everything written here is derived from the plan and from the shards themselves (the index
reads the samples' ``json`` back from the written files), and contains no timestamps, so a
resumed build ends with the same bytes as a clean one.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pandas as pd

from als_datasets import SCHEMA_VERSION, __version__
from als_datasets.errors import InputError
from als_datasets.shards.writer import atomic_write, sha256_file


def _dump_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_sample_meta(out: Path, entry: dict) -> list[dict]:
    """The ``json`` member of every sample in one shard, in shard order."""
    p = Path(out) / entry["path"]
    if entry["format"] == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p, columns=["json"]).column("json").to_pylist()
    metas = []
    with tarfile.open(p) as tar:
        for m in tar:
            if m.name.endswith(".json"):
                metas.append(json.loads(tar.extractfile(m).read()))
    return metas


def build_index(out: Path, entries: list[dict], frame, columns: list[str]) -> tuple[object, list[str]]:
    """``index.parquet`` rows (one per written sample; ``columns`` from each sample's json, plus
    ``key`` and ``shard``) and the selected samples that were skipped."""
    import geopandas as gpd

    INDEX = columns

    fmt = "parquet" if any(e["format"] == "parquet" for e in entries) else "webdataset"
    rows = []
    for e in entries:
        if e["format"] != fmt:
            continue
        wds = e["path"] if fmt == "webdataset" else f"webdataset/{e['split']}/shard-{e['shard']:06d}.tar"
        for m in read_sample_meta(out, e):
            rows.append({**{k: m.get(k) for k in INDEX if k in m}, "key": m["tile_id"], "shard": wds})
    df = pd.DataFrame(rows, columns=INDEX)
    geom = frame.set_index("tile_id").geometry
    written = set(df["key"])
    skipped = sorted(set(frame.loc[frame["selected"], "tile_id"]) - written)
    gdf = gpd.GeoDataFrame(df, geometry=list(geom.loc[df["key"]].values) if len(df) else [], crs=4326)
    gdf["draw_rank"] = gdf["draw_rank"].astype("int64")
    return gdf, skipped


def finalise(plan, out: Path, entries: list[dict]) -> int:
    """Write the folder's metadata files; returns the number of samples."""
    from als_datasets.plan import write_frame
    from als_datasets.recipe import dump_recipe
    from als_datasets.registry import get_kind

    r = plan.recipe
    kind = get_kind(r.kind, r.path)
    out = Path(out)
    index, skipped = build_index(out, entries, plan.frame, kind.index_columns(r))
    atomic_write(out / "index.parquet", lambda f: index.to_parquet(f, index=False, compression="zstd"))
    write_frame(plan, out / "frame.parquet")
    text = dump_recipe(r)
    atomic_write(out / "recipe.yaml", lambda f: f.write(text.encode()))

    splits: dict[str, dict] = {}
    for e in entries:
        s = splits.setdefault(e["split"], {"webdataset": [], "parquet": []})
        s[e["format"]].append(e)
    info = {"name": r.name, "version": __version__, "splits": {}}
    info.update(kind.info_fields(plan, out, entries))
    for split, by_fmt in splits.items():
        main = by_fmt["webdataset"] or by_fmt["parquet"]
        n = sum(e["samples"] for e in main)
        info["splits"][split] = {
            "name": split, "num_samples": n,
            "filenames": [e["path"] for e in main], "shard_lengths": [e["samples"] for e in main],
        }
    manifest = {
        "tool": "als-datasets", "tool_version": __version__, "schema_version": SCHEMA_VERSION,
        "kind": r.kind, "name": r.name, "strategy": r.strategy, "seed": r.seed,
        **kind.manifest_fields(plan),
        "splits": {k: v["num_samples"] for k, v in info["splits"].items()},
        "shards": [{k: e[k] for k in ("path", "format", "split", "shard", "samples", "bytes", "sha256", "fingerprint")
                    if k in e} for e in entries],
        "skipped_tiles": [{"tile_id": k, "reason": kind.skipped_reason} for k in skipped],
    }
    _dump_json(out / "_info.json", info)
    _dump_json(out / "manifest.json", manifest)

    from als_datasets.report.folder import write_report

    write_report(out)
    return int(len(index))


def validate(out: str | Path) -> list[str]:
    """Check every shard against ``manifest.json``; returns a list of problems (empty = valid)."""
    out = Path(out)
    m = out / "manifest.json"
    if not m.is_file():
        raise InputError(m, "no manifest.json: not a finished build")
    try:
        manifest = json.loads(m.read_text())
    except ValueError as exc:
        raise InputError(m, f"not valid JSON: {exc}") from None
    problems = []
    if (out / ".build").exists():
        problems.append(".build: the build did not finish (re-run the same build command to complete it)")
    for e in manifest.get("shards", []):
        p = out / e["path"]
        if not p.is_file():
            problems.append(f"{e['path']}: missing")
        elif p.stat().st_size != e["bytes"]:
            problems.append(f"{e['path']}: {p.stat().st_size} bytes, manifest says {e['bytes']}")
        elif sha256_file(p) != e["sha256"]:
            problems.append(f"{e['path']}: sha256 does not match the manifest")
    return problems

