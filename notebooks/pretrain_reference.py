"""Reference pre-training script: does geospatial sampling give a better ALS encoder than random?

Copy this file to start your own study. Each step is one library call:

1. build the same region twice, with ``--strategy geospatial`` and ``--strategy random``
   (the embedded demo by default, or your recipe: ``--recipe my-3dep.yaml``); 25 % of the tiles
   (a seeded hash of the tile id, identical in both builds) are held out as ``validation`` and
   never seen in pre-training;
2. pretrain BEV-MAE on each build's train split (same model, config, seed and step count);
3. freeze each encoder and fit a linear probe on a tile label (``stratum`` = land cover × slope)
   of the *geospatial* build's train split, scored on its validation split, next to a random-init
   (scratch) encoder and the majority-class rate;
4. print the comparison and write it to ``OUT/comparison.json``.

    python notebooks/pretrain_reference.py                      # tiny: minutes on a laptop CPU
    python notebooks/pretrain_reference.py --config base --steps 20000 --samples-per-project 40
    torchrun ... -m als_datasets.train ...                       # the pretraining step on many GPUs

Re-running resumes: finished shards are reused and ``train`` continues from ``last.pt``. With
the tiny config and a few dozen tiles the probe scores are noisy (a handful of validation
tiles): they show the workflow, not the papers' result. The ALS paper pretrained for 50 epochs
on 5-40 tiles per project of 3DEP; use ``--config base`` on a GPU and your own recipe for that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from als_datasets.build import run_build
from als_datasets.demo import ensure_demo
from als_datasets.recipe import load_recipe
from als_datasets.train.loop import train
from als_datasets.train.probe import probe


def build(strategy: str, out: Path, recipe: str | None, samples: int | None, holdout: float) -> Path:
    """One build of the recipe (or the embedded demo) with a sampling strategy; reused if complete,
    replaced if this script built it with other options (it is the script's own work folder)."""
    r = load_recipe(recipe or ensure_demo(), out_dir=out / f"data-{strategy}",
                    overrides={"strategy": strategy, "samples_per_project": samples, "holdout_fraction": holdout})
    return Path(run_build(r, overwrite=True).out_dir)


def compare(out: Path, *, recipe=None, samples=10, model="bev-mae", config="tiny", steps=100, label="stratum",
            strategies=("geospatial", "random"), seed=0, batch_size=None, num_workers=0, progress=True) -> dict:
    """Build, pretrain and probe for each strategy, plus a scratch encoder; returns the table."""
    out = Path(out)
    data = {s: build(s, out, recipe, samples, 0.25) for s in strategies}
    evaluation = data[strategies[0]]  # every encoder is probed on the same labelled tiles
    rows = {}
    for s, folder in data.items():
        run = train(folder, model, config, out=out / f"run-{s}", max_steps=steps, seed=seed, batch_size=batch_size,
                    num_workers=num_workers, progress=progress)
        res = probe(evaluation, run["checkpoint"], label, baseline=False, seed=seed, out=out / f"probe-{s}.json")
        tiles = json.loads((folder / "_info.json").read_text())["splits"]["train"]["num_samples"]
        rows[s] = {**res["encoders"]["pretrained"], "final_loss": run["final_loss"], "pretrain_tiles": tiles}
    res = probe(evaluation, None, label, model=model, config=config, scratch=True, seed=seed,
                out=out / "probe-scratch.json")
    rows["scratch"] = res["encoders"]["scratch"]
    table = {"label": label, "evaluated_on": str(evaluation), "heldout": res["heldout"], "n_train": res["n_train"],
             "n_heldout": res["n_heldout"], "classes": res["classes"], "majority_accuracy":
             res["chance"]["majority_accuracy"], "model": model, "config": config, "steps": steps,
             "rows": {k: {m: v.get(m) for m in ("accuracy", "macro_f1", "miou", "final_loss", "pretrain_tiles")}
                      for k, v in rows.items()}}
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
    return table


def show(table: dict) -> str:
    lines = [f"linear probe of {table['label']!r}: {table['n_train']} train / {table['n_heldout']} held-out tiles "
             f"({len(table['classes'])} classes), {table['model']} {table['config']}, {table['steps']} steps",
             f"{'encoder':<12} {'tiles':>6} {'loss':>8} {'accuracy':>9} {'macro F1':>9} {'mIoU':>7}"]
    for name, r in table["rows"].items():
        tiles = "" if r["pretrain_tiles"] is None else r["pretrain_tiles"]
        loss = "" if r["final_loss"] is None else f"{r['final_loss']:.4f}"
        lines.append(f"{name:<12} {tiles:>6} {loss:>8} {r['accuracy']:>9.3f} {r['macro_f1']:>9.3f} {r['miou']:>7.3f}")
    if table["majority_accuracy"] is not None:
        lines.append(f"{'majority':<12} {'':>6} {'':>8} {table['majority_accuracy']:>9.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/pretrain-study", help="folder for the builds, runs and results")
    p.add_argument("--recipe", default=None, help="ALS recipe YAML (default: the embedded demo)")
    p.add_argument("--samples-per-project", type=int, default=10, help="tiles per project in each build")
    p.add_argument("--config", default="tiny", help="tiny (CPU) | base (the ALS paper's BEV-MAE, GPU)")
    p.add_argument("--steps", type=int, default=100, help="pretraining steps per strategy")
    p.add_argument("--label", default="stratum", help="stratum | landcover | slope_class")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    table = compare(Path(a.out), recipe=a.recipe, samples=a.samples_per_project, config=a.config, steps=a.steps,
                    label=a.label, seed=a.seed, batch_size=a.batch_size, num_workers=a.num_workers)
    print(show(table))


if __name__ == "__main__":
    main()
