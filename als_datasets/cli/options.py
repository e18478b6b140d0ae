"""Options shared by several commands, and recipe resolution (a recipe path or the demo)."""

from __future__ import annotations

from pathlib import Path

import typer

RECIPE = typer.Argument(None, help="Recipe YAML (default: the embedded demo, generated on first use).", show_default=False)
STRATEGY = typer.Option(None, "--strategy", "-s", help="Sampling strategy: ALS geospatial | random; satellite/DEM "
                                                         "global | continent:<name> | spectral | random.")
OUT = typer.Option(None, "--out", "-o", help="Output folder (default: the recipe's output.dir or out/<name>-<strategy>).")
SAMPLES = typer.Option(None, "--samples-per-project", "--samples", "-n", min=1,
                       help="ALS: tiles per project; satellite/DEM: samples in all (first N of the ordered draw).")
SEED = typer.Option(None, "--seed", min=0, max=2**32 - 1, help="Seed of the draw (the paper: 41).")
WORKERS = typer.Option(1, "--workers", "-w", min=1, help="Worker processes.")
EXECUTOR = typer.Option("local", "--executor", help="local (process pool) or dask.")
SCHEDULER = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a local Dask cluster).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
DEBUG = typer.Option(False, "--debug", help="On an error, show the full traceback instead of the one-line message.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier build of another recipe (strategy, seed, "
                                                   "size...) in the output folder; never a folder that is not a build.")


#: what ``build`` with no recipe builds (the same as builders/demo.yaml)
DEMO_RECIPE = {
    "demo": {"seed": 0},
    "license": "cc0-1.0",
    "sources": [{"name": "als-datasets embedded demo: synthetic terrain, land cover and LiDAR points generated "
                         "from a seed (no real data)", "license": "CC0-1.0"}],
}


#: (word in a recipe error, override key, option): errors about a value given as an option name the option
FLAGS = (("strategy", "strategy", "--strategy"), ("samples", "samples_per_project", "--samples-per-project"),
         ("seed", "seed", "--seed"))


def blame_option(exc, given: dict):
    """An :class:`InputError` about a value the user gave as an option names that option, not the
    recipe (least of all the demo's recipe in the cache, which the user never wrote)."""
    from als_datasets.errors import InputError

    for word, key, flag in FLAGS:
        if given.get(key) is not None and word in exc.reason:
            return InputError(flag, exc.reason)
    return exc


def resolve_recipe(recipe: Path | None, strategy, out, samples, seed, progress=None):
    """Load the recipe (or the demo's) with the command-line overrides applied, and check its
    strategy, before any work (the demo's strategy before the demo is generated)."""
    from types import SimpleNamespace

    from als_datasets.errors import InputError
    from als_datasets.recipe import load_recipe
    from als_datasets.registry import DEFAULT_KIND, get_kind

    given = {"strategy": strategy, "samples_per_project": samples, "seed": seed}
    overrides = dict(given)
    try:
        if recipe is None:
            from als_datasets.demo import ensure_demo

            st = strategy or "geospatial"
            # the kind's check reads only .strategy and .path: refuse a typo before generating the demo
            get_kind(DEFAULT_KIND).check_strategy(SimpleNamespace(strategy=st, path="--strategy", kind=DEFAULT_KIND))
            ensure_demo(progress=progress)
            out = out or Path("out") / f"demo-{st}"
            r = load_recipe(data=dict(DEMO_RECIPE), out_dir=out, overrides={**overrides, "strategy": st})
        else:
            r = load_recipe(recipe, overrides=overrides, out_dir=out)
        check_strategy(r)
    except InputError as exc:
        raise blame_option(exc, given) from None
    return r


def check_strategy(recipe) -> None:
    """The recipe's kind refuses an unknown strategy before any work."""
    from als_datasets.registry import get_kind

    get_kind(recipe.kind, recipe.path).check_strategy(recipe)


def check_out_dir(recipe, overwrite: bool) -> str:
    """Refuse an output folder that is in the way before any work (see :mod:`als_datasets.dataset.outdir`)."""
    from als_datasets.dataset.outdir import check_out_dir as check

    return check(recipe, overwrite)


def need_torch(command: str) -> None:
    """Pre-training needs torch, which the plain install leaves out (the ``train`` extra)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        from als_datasets.errors import InputError

        raise InputError(None, f"`als-datasets {command}` needs torch, which `pip install als-datasets` leaves out: "
                               "pip install 'als-datasets[train]' (the README's set-up shows how to get the CPU-only "
                               "wheel)") from None
