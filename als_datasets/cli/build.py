"""``als-datasets build``: recipe (or the embedded demo) → sharded WebDataset + Parquet folder."""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import (
    DEBUG,
    EXECUTOR,
    OUT,
    OVERWRITE,
    QUIET,
    RECIPE,
    SAMPLES,
    SCHEDULER,
    SEED,
    STRATEGY,
    WORKERS,
    check_out_dir,
    resolve_recipe,
)
from als_datasets.cli.root import app


@app.command()
def build(
    recipe: Path = RECIPE,
    strategy: str = STRATEGY,
    out: Path = OUT,
    samples_per_project: int = SAMPLES,
    seed: int = SEED,
    workers: int = WORKERS,
    executor: str = EXECUTOR,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
    debug: bool = DEBUG,
    overwrite: bool = OVERWRITE,
) -> None:
    """Build a dataset: sampling frame → draw → streaming extraction → shards → card."""
    import time

    from als_datasets.build import run_build
    from als_datasets.executors import check_executor, make_executor
    from als_datasets.progress import Reporter

    check_executor(executor, scheduler)  # options first, before the demo or the recipe is read
    t0 = time.perf_counter()
    with Reporter(enabled=not quiet) as rep:
        r = resolve_recipe(recipe, strategy, out, samples_per_project, seed, progress=None if quiet else rep.log)
        check_out_dir(r, overwrite)
        with make_executor(executor, workers, scheduler) as ex:
            res = run_build(r, workers=workers, reporter=rep, executor=ex, overwrite=overwrite)
    what = "already complete, nothing rewritten" if res.shards_written == 0 and res.shards_skipped else \
        f"{res.shards_written} shard(s) written, {res.shards_skipped} reused"
    for line in res.shortfall:  # a draw that fell short says so, and why
        typer.echo(f"note: {line}", err=True)
    typer.echo(f"{res.out_dir}: {res.samples} samples ({r.strategy}, seed {r.seed}); {what}; "
               f"{time.perf_counter() - t0:.1f} s")
