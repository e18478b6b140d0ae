"""Shard tasks: pure functions that write one shard (in every output format) and return its
manifest entries.  An executor only maps them (``--workers K``: a process pool).

A task gets everything it needs in its spec (tile records, staging folder, filter settings,
features), reads the tiles' staged points, cleans them, and writes the WebDataset tar and the
Parquet part from the *same* samples in one pass: the samples are produced once and fed to
both writers in lockstep, so memory holds about one tile whatever the shard size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..extract.route import load_tile_points
from ..extract.tile import clean_points, sample_arrays
from ..stats import height_entropy, satmae_entropy
from .writer import write_parquet_shard, write_tar_shard

ALS_ARRAYS = ("xyz.npy", "intensity.npy", "return_number.npy", "number_of_returns.npy", "classification.npy")


def als_json_schema(landcover_names: list[str]) -> dict:
    """The ``json`` member's fixed schema (every sample carries every field)."""
    return {
        "project": str, "tile_id": str, "crs": str, "split": str,
        "origin": [float], "bounds_utm": [float], "tile_size_m": float,
        "lon": float, "lat": float,
        "landcover": str, "landcover_fractions": {n: float for n in landcover_names},
        "slope_class": str, "slope_mean_deg": float, "stratum": str,
        "point_count": int, "density": float,
        "height_range_m": float, "height_entropy": float, "intensity_entropy": float,
        "strategy": str, "draw_rank": int, "weight": float, "seed": int,
        "source_files": [str], "points_dropped_noise": int, "points_dropped_outliers": int,
    }


def als_features(landcover_names: list[str]):
    from ..dataset.features import features_for_samples

    example = {"__key__": "x", "json": None}
    example.update({
        "xyz.npy": np.zeros((0, 3), np.float32), "intensity.npy": np.zeros(0, np.uint16),
        "return_number.npy": np.zeros(0, np.uint8), "number_of_returns.npy": np.zeros(0, np.uint8),
        "classification.npy": np.zeros(0, np.uint8),
    })
    return features_for_samples(example, json_schema=als_json_schema(landcover_names))


class ShardOutputs:
    """What every shard task shares: where its files go.  A task type adds ``features()`` and
    ``iter_samples()``; :func:`run_shard_task` does the rest (one copy of the writing machinery
    for ALS tiles and raster patches)."""

    def paths(self) -> dict[str, str]:
        """Relative output path per format."""
        p = {}
        if "webdataset" in self.formats:
            p["webdataset"] = f"webdataset/{self.split}/shard-{self.index:06d}.tar"
        if "parquet" in self.formats:
            p["parquet"] = f"parquet/{self.split}/part-{self.index:06d}.parquet"
        return p


@dataclass(frozen=True)
class ShardTask(ShardOutputs):
    index: int
    split: str
    records: tuple[dict, ...]  # one per sample: the tile's metadata from the plan
    staging: str
    out_dir: str
    formats: tuple[str, ...]
    drop_classes: tuple[int, ...]
    outlier_k: int
    outlier_multiplier: float
    landcover_names: tuple[str, ...]
    source_names: tuple[str, ...]  # file index → file name
    threads: int = 1  # threads for the outlier filter's neighbour queries (does not change the output)

    def features(self):
        return als_features(list(self.landcover_names))

    def iter_samples(self) -> Iterator[dict]:
        # a selected tile with no point left (no input file covers it) is not written; finalise
        # lists it in the manifest's skipped_tiles
        return (s for s in (make_sample(self, rec) for rec in self.records) if s["json"]["point_count"] > 0)


def make_sample(task: ShardTask, rec: dict) -> dict:
    """One tile's sample: staged points → drop noise classes → outlier filter → arrays + json."""
    raw, files = load_tile_points(task.staging, rec["tile_id"])
    pts, n_class, n_out = clean_points(raw, task.drop_classes, task.outlier_k, task.outlier_multiplier, task.threads)
    size = rec["tile_size_m"]
    meta = dict(rec)
    meta.update({
        "point_count": int(len(pts)),
        "density": float(len(pts) / (size * size)),
        "height_range_m": float(np.ptp(pts["z"])) if len(pts) else 0.0,
        "height_entropy": height_entropy(pts["z"]),
        "intensity_entropy": satmae_entropy(pts["intensity"]),
        "source_files": [task.source_names[i] for i in files],
        "points_dropped_noise": n_class,
        "points_dropped_outliers": n_out,
    })
    return {"__key__": rec["tile_id"], **sample_arrays(pts), "json": meta}


class _Aborted(Exception):
    pass


def _lockstep(samples: Iterable[dict], sinks: list[Callable[[Iterable[dict]], dict]]) -> list[dict]:
    """Feed one stream of samples to several writers at once (each in its own thread except the
    first), each holding at most a couple of samples: the samples are computed only once.

    If producing the samples or any writer fails, every writer is aborted (their atomic writes
    leave nothing behind) and the first error is raised.
    """
    if len(sinks) == 1:
        return [sinks[0](samples)]
    end, abort = object(), object()
    queues = [queue.Queue(maxsize=2) for _ in sinks[1:]]
    results: list = [None] * len(sinks)
    errors: list[BaseException] = []

    def drain(q: queue.Queue) -> Iterator[dict]:
        while (item := q.get()) is not end:
            if item is abort:
                raise _Aborted
            yield item

    def run(i: int, q: queue.Queue) -> None:
        try:
            results[i] = sinks[i](drain(q))
        except _Aborted:
            pass
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)
            while (item := q.get()) is not end and item is not abort:  # keep the producer unblocked
                pass

    threads = [threading.Thread(target=run, args=(i + 1, q), daemon=True) for i, q in enumerate(queues)]
    for t in threads:
        t.start()

    finished = []

    def tee() -> Iterator[dict]:
        ok = False
        finished.append(True)
        try:
            for s in samples:
                if errors:
                    raise errors[0]
                for q in queues:
                    q.put(s)
                yield s
            ok = True
        finally:
            for q in queues:
                q.put(end if ok else abort)

    gen = tee()
    try:
        results[0] = sinks[0](gen)
    finally:
        gen.close()  # a writer that failed mid-stream leaves the generator suspended: finish it (abort)
        if not finished:  # the first writer failed before it read a sample: abort the others
            for q in queues:
                q.put(abort)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def run_shard_task(task: ShardOutputs, features=None) -> list[dict]:
    """Write the shard in every format; return one manifest entry per file written."""
    out = Path(task.out_dir)
    features = features or task.features()
    paths = task.paths()
    for rel in paths.values():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sinks, kinds = [], []
    if "webdataset" in paths:
        sinks.append(lambda s, p=out / paths["webdataset"]: write_tar_shard(p, s, features))
        kinds.append("webdataset")
    if "parquet" in paths:
        # one row group per sample: an ALS tile can hold millions of points, so memory stays at one sample
        rg = getattr(task, "row_group_size", 1)
        sinks.append(lambda s, p=out / paths["parquet"]: write_parquet_shard(p, s, features, row_group_size=rg))
        kinds.append("parquet")
    entries = _lockstep(task.iter_samples(), sinks)
    return [{**e, "path": paths[k], "format": k, "split": task.split, "shard": task.index}
            for k, e in zip(kinds, entries)]
