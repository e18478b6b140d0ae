"""Build orchestration: plan → (the kind's staging) → shard tasks → finalise (DESIGN.md §4, §10).

Written once for every kind: the recipe's kind (:mod:`als_datasets.registry`) makes the plan,
the shard tasks and, where its tasks need it, a staging pass over the inputs (ALS: points routed
to tiles); this module runs them through the executor, resumes and finalises.

Re-running a build skips shards that are complete and verified (sha256 against the entry
recorded when they were written, and the same task fingerprint), removes leftovers of an
interrupted run, and ends with the same bytes as a clean build.  A build writes only into a
new or empty folder or its own earlier build of the same recipe; ``overwrite`` lets it replace
an earlier build of another recipe (:mod:`als_datasets.dataset.outdir`), never other files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from als_datasets import __version__
from als_datasets.dataset.outdir import WORK_DIR, check_out_dir, claim_out_dir, discard_out_dir
from als_datasets.errors import InputError
from als_datasets.executors import Executor
from als_datasets.plan import Plan, make_plan
from als_datasets.progress import Reporter
from als_datasets.registry import get_kind
from als_datasets.shards.tasks import run_shard_task
from als_datasets.shards.writer import atomic_write, is_leftover_tmp, sha256_file


@dataclass
class BuildResult:
    out_dir: Path
    samples: int
    shards_written: int
    shards_skipped: int
    files_read: int
    shortfall: tuple[str, ...] = ()  # the kind's lines on requests the draw could not meet


def _fingerprint(task) -> str:
    """What a shard's bytes depend on: the task's own account of its inputs (``fingerprint_data``:
    records, recipe values, input files with their stamps) or else its fields, and the tool version."""
    d = task.fingerprint_data() if hasattr(task, "fingerprint_data") else asdict(task)
    for k in ("out_dir", "staging", "threads"):  # where and how fast, not what
        d.pop(k, None)
    d = {"task": d, "tool_version": __version__}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _completed(out: Path, task, known: dict[str, dict]) -> list[dict] | None:
    """The task's entries if every file it writes is present and matches its recorded sha256."""
    fp = _fingerprint(task)
    entries = []
    for rel in task.paths().values():
        e = known.get(rel)
        p = out / rel
        if e is None or e.get("fingerprint") != fp or not p.is_file() or p.stat().st_size != e["bytes"]:
            return None
        if sha256_file(p) != e["sha256"]:
            return None
        entries.append(e)
    return entries


def _known_entries(out: Path, work: Path) -> dict[str, dict]:
    known = {}
    m = out / "manifest.json"
    if m.is_file():
        try:
            known.update({e["path"]: e for e in json.loads(m.read_text()).get("shards", [])})
        except (ValueError, KeyError, TypeError):
            pass
    for side in sorted((work / "shards").glob("*.json")) if (work / "shards").is_dir() else []:
        try:
            known.update({e["path"]: e for e in json.loads(side.read_text())})
        except (ValueError, KeyError, TypeError):
            side.unlink()
    return known


def remove_leftovers(out: Path) -> int:
    """Delete temp files of interrupted writes anywhere under ``out``."""
    n = 0
    for p in out.rglob(".*.tmp-*"):
        if p.is_file() and is_leftover_tmp(p):
            p.unlink()
            n += 1
    return n


def remove_stale_shards(out: Path, entries: list[dict]) -> int:
    """Delete shard files of an earlier, different build that this build does not write (a
    ``*.parquet`` glob would otherwise pick them up)."""
    keep = {e["path"] for e in entries}
    n = 0
    for fmt, pattern in (("webdataset", "*.tar"), ("parquet", "*.parquet")):
        root = out / fmt
        for p in sorted(root.glob(f"*/{pattern}")) if root.is_dir() else []:
            if p.relative_to(out).as_posix() not in keep:
                p.unlink()
                n += 1
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    return n


def _run_shard(task) -> list[dict]:
    fp = _fingerprint(task)  # before reading: an input changed meanwhile reruns the shard next time
    entries = run_shard_task(task)
    return [{**e, "fingerprint": fp} for e in entries]


def run_build(recipe, workers: int = 1, reporter: Reporter | None = None, plan: Plan | None = None,
              executor: Executor | None = None, overwrite: bool = False) -> BuildResult:
    """Build the dataset described by ``recipe`` into ``recipe.out_dir``.

    ``executor`` maps the route and shard tasks (default: a local pool of ``workers``);
    ``overwrite`` replaces an earlier build of another recipe in that folder (see
    :func:`als_datasets.dataset.outdir.check_out_dir`).  A fresh build that fails on bad input
    leaves no folder behind."""
    mode = check_out_dir(recipe, overwrite)
    created = claim_out_dir(recipe, mode)
    try:
        return _build(recipe, workers, reporter, plan, executor)
    except InputError:
        if mode == "fresh":
            discard_out_dir(recipe.out_dir, created)
        raise


def _build(recipe, workers: int, reporter: Reporter | None, plan: Plan | None, executor: Executor | None
           ) -> BuildResult:
    from als_datasets.dataset.layout import finalise

    rep = reporter or Reporter(enabled=False)
    out = Path(recipe.out_dir)
    work = out / WORK_DIR
    staging = work / "staging"
    remove_leftovers(out)

    ex = executor or Executor(workers)
    kind = get_kind(recipe.kind, recipe.path)
    if plan is None:
        with rep.step("sampling frame", kind.frame_units(recipe)) as adv:
            plan = make_plan(recipe, progress=lambda msg, i, n: adv(1) if i < n else None, executor=ex)
    tasks = kind.shard_tasks(plan, out, staging, ex.workers)
    known = _known_entries(out, work)
    done: dict[int, list[dict]] = {}
    for t in tasks:
        e = _completed(out, t, known)
        if e is not None:
            done[id(t)] = e
    todo = [t for t in tasks if id(t) not in done]

    files_read = kind.prepare(plan, todo, staging, ex, rep) if todo else 0
    if todo:
        (work / "shards").mkdir(parents=True, exist_ok=True)
        with rep.step("writing shards", len(todo)) as adv:
            for t, entries in ex.map(_run_shard, todo):
                side = work / "shards" / f"{t.split}-{t.index:06d}.json"
                atomic_write(side, lambda f, e=entries: f.write(json.dumps(e, sort_keys=True).encode()))
                done[id(t)] = entries
                adv(1)

    entries = [e for t in tasks for e in done[id(t)]]
    remove_stale_shards(out, entries)
    with rep.step("finalising", 1) as adv:
        n = finalise(plan, out, entries)
        adv(1)
    for rel in kind.plan_files:  # `plan`'s listings describe the plan, not the dataset
        (out / rel).unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, n, len(todo), len(tasks) - len(todo), files_read, tuple(kind.shortfall(plan)))

