"""Options shared by several commands, and recipe resolution (a recipe path or the demo)."""

from __future__ import annotations

from pathlib import Path

import typer

RECIPE = typer.Argument(None, help="Recipe YAML (default: the embedded demo, generated on first use).", show_default=False)
STRATEGY = typer.Option(None, "--strategy", "-s", help="Sampling strategy: ALS geospatial | random; satellite/DEM "
                                                         "global | continent:<name> | spectral | random.")
OUT = typer.Option(None, "--out", "-o", help="Output folder (default: the recipe's output.dir or out/<name>-<strategy>).")
SAMPLES = typer.Option(None, "--samples-per-project", "--samples", "-n",
                       help="ALS: tiles per project; satellite/DEM: samples in all (first N of the ordered draw).")
SEED = typer.Option(None, "--seed", min=0, max=2**32 - 1, help="Seed of the draw (the paper: 41).")
WORKERS = typer.Option(1, "--workers", "-w", min=1, help="Worker processes.")
EXECUTOR = typer.Option("local", "--executor", help="local (process pool) or dask.")
SCHEDULER = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a local Dask cluster).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier build of another recipe (strategy, seed, "
                                                   "size...) in the output folder; never a folder that is not a build.")


#: what ``build`` with no recipe builds (the same as builders/demo.yaml)
DEMO_RECIPE = {
    "demo": {"seed": 0},
    "license": "cc0-1.0",
    "sources": [{"name": "als-datasets embedded demo: synthetic terrain, land cover and LiDAR points generated "
                         "from a seed (no real data)", "license": "CC0-1.0"}],
}


def resolve_recipe(recipe: Path | None, strategy, out, samples, seed, progress=None):
    """Load the recipe (or the demo's) with the command-line overrides applied."""
    from als_datasets.recipe import load_recipe

    if recipe is None:
        from als_datasets.demo import ensure_demo

        ensure_demo(progress=progress)
        st = strategy or "geospatial"
        out = out or Path("out") / f"demo-{st}"
        return load_recipe(data=dict(DEMO_RECIPE), out_dir=out,
                           overrides={"strategy": st, "samples_per_project": samples, "seed": seed})
    return load_recipe(recipe, overrides={"strategy": strategy, "samples_per_project": samples, "seed": seed},
                       out_dir=out)


def check_strategy(recipe) -> None:
    """The recipe's kind refuses an unknown strategy before any work."""
    from als_datasets.registry import get_kind

    get_kind(recipe.kind, recipe.path).check_strategy(recipe)


def check_out_dir(recipe, overwrite: bool) -> str:
    """Refuse an output folder that is in the way before any work (see :mod:`als_datasets.dataset.outdir`)."""
    from als_datasets.dataset.outdir import check_out_dir as check

    return check(recipe, overwrite)
