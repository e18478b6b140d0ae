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
    from als_datasets.plan import typed_empty_columns, write_frame
    from als_datasets.recipe import dump_recipe
    from als_datasets.registry import get_kind

    r = plan.recipe
    kind = get_kind(r.kind, r.path)
    out = Path(out)
    index, skipped = build_index(out, entries, plan.frame, kind.index_columns(r))
    typed_empty_columns(index)
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
        "shards": [{k: e[k] for k in ("path", "format", "split", "shard", "samples", "bytes", "arrow_bytes", "sha256",
                                      "fingerprint")
                    if k in e} for e in entries],
        "skipped_tiles": [{"tile_id": k, "reason": kind.skipped_reason} for k in skipped],
    }
    _dump_json(out / "_info.json", info)
    _dump_json(out / "manifest.json", manifest)

    from als_datasets.report.folder import write_report

    write_report(out)
    return int(len(index))


def validate(out: str | Path) -> list[str]:
    """Check a finished build folder; returns a list of problems (empty = valid), one line each,
    starting with the file concerned: every shard against ``manifest.json`` (present, size,
    sha256, the samples it holds), the manifest's split counts against its shards (per format) and
    against ``_info.json`` and ``index.parquet``, and no file the build did not write (a push
    would upload it)."""
    from als_datasets.dataset.outdir import WORK_DIR, foreign_files

    out = Path(out)
    manifest = _read_manifest(out / "manifest.json")
    problems = []
    if (out / WORK_DIR).exists():
        problems.append(f"{WORK_DIR}: the build did not finish (re-run the same build command to complete it)")
    shards = manifest["shards"]
    if not any(e["samples"] for e in shards):
        problems.append("manifest.json: no samples (the build wrote no shard that holds one)")
    for e in shards:
        p = out / e["path"]
        if not p.is_file():
            problems.append(f"{e['path']}: missing")
        elif p.stat().st_size != e["bytes"]:
            problems.append(f"{e['path']}: {p.stat().st_size} bytes, manifest says {e['bytes']}")
        elif sha256_file(p) != e["sha256"]:
            problems.append(f"{e['path']}: sha256 does not match the manifest")
        else:
            n = count_samples(p, e["format"])
            if n != e["samples"]:
                problems.append(f"{e['path']}: holds {n} samples, manifest says {e['samples']}")
    problems += _check_counts(out, manifest)
    problems += [f"{rel}: not written by the build (a push would upload it)"
                 for rel in foreign_files(out, [e["path"] for e in shards])]
    return problems


def _read_manifest(m: Path) -> dict:
    """``manifest.json`` with the fields validate relies on, or a one-line error."""
    if not m.is_file():
        raise InputError(m, "no manifest.json: not a finished build")
    try:
        manifest = json.loads(m.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(m, f"not valid JSON: {exc}") from None
    need = {"path": str, "format": str, "split": str, "samples": int, "bytes": int, "sha256": str}
    ok = (isinstance(manifest, dict) and isinstance(manifest.get("shards"), list)
          and isinstance(manifest.get("splits"), dict)
          and all(isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in need.items())
                  for e in manifest["shards"]))
    if not ok:
        raise InputError(m, "not a build manifest (needs 'splits' and 'shards' with path, format, split, samples, "
                            "bytes and sha256)")
    return manifest


def count_samples(path: Path, fmt: str) -> int:
    """The samples one shard holds: Parquet rows, or distinct keys of a tar's members."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with tarfile.open(path) as tar:
        return len({m.name.split(".", 1)[0] for m in tar if m.isfile()})


def _check_counts(out: Path, manifest: dict) -> list[str]:
    """Per split and format, the shards' samples add up to the manifest's ``splits``; ``_info.json``
    and ``index.parquet`` say the same."""
    problems = []
    splits = manifest["splits"]
    by = {}
    for e in manifest["shards"]:
        by.setdefault(e["format"], {}).setdefault(e["split"], []).append(e)
    for fmt, per_split in sorted(by.items()):
        for split in sorted(set(per_split) | set(splits)):
            n = sum(e["samples"] for e in per_split.get(split, []))
            if n != splits.get(split, 0):
                problems.append(f"manifest.json: {fmt} shards of split {split!r} hold {n} samples, "
                                f"splits says {splits.get(split, 0)}")
    main = by.get("webdataset") or by.get("parquet") or {}
    info_path = out / "_info.json"
    try:
        info = json.loads(info_path.read_text())
        info_splits = info["splits"]
        got = {k: (v["num_samples"], v["filenames"], v["shard_lengths"]) for k, v in info_splits.items()}
    except FileNotFoundError:
        problems.append("_info.json: missing")
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        problems.append("_info.json: not valid (needs splits → num_samples, filenames, shard_lengths)")
    else:
        want = {k: (splits[k], [e["path"] for e in main.get(k, [])], [e["samples"] for e in main.get(k, [])])
                for k in splits}
        if got != want:
            bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            problems.append(f"_info.json: split(s) {', '.join(map(repr, bad))} disagree with manifest.json")
    index = out / "index.parquet"
    if not index.is_file():
        problems.append("index.parquet: missing")
    else:
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(index).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one problem line
            problems.append(f"index.parquet: unreadable ({str(exc).splitlines()[0] if str(exc) else 'not a Parquet file'})")
        else:
            if rows != sum(splits.values()):
                problems.append(f"index.parquet: {rows} rows, manifest.json splits say {sum(splits.values())} samples")
    return problems
