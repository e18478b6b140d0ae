"""``als-datasets pretrain``: pretrain an MAE encoder on a build's WebDataset shards (DESIGN.md §9).

The same function as ``python -m als_datasets.train`` (use that one under ``torchrun``); a run
restarted with the same command resumes from ``OUT/last.pt`` at the exact loader position.
"""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import DEBUG, need_torch
from als_datasets.cli.root import app


@app.command()
def pretrain(
    data: Path = typer.Option(..., "--data", "-d", help="Build folder (als-datasets build --out)."),
    model: str = typer.Option(..., "--model", "-m", help="bev-mae (als) | satmae (satellite) | dem-mae (dem)."),
    config: str = typer.Option("tiny", "--config", "-c", help="tiny (seconds on a CPU) | base (the papers')."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Length of the run and its schedule, in steps."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Length in epochs (default: the config's)."),
    stop_after: int = typer.Option(None, "--stop-after", min=1,
                                   help="Stop at this step, schedule unchanged (re-run to continue)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default runs/<data folder name>-<model>-<config>, under the current directory)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights, shuffles, crops and masks."),
    batch_size: str = typer.Option(None, "--batch-size", "-b",
                                   help="Per process (default: the config's), or auto: the largest power of two "
                                        "that fits the GPU, probed (the config's on a CPU)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default: the config's lr or blr)."),
    accum_steps: int = typer.Option(None, "--accum-steps", min=1,
                                    help="Micro-batches per optimiser step (global batch = batch × accum × GPUs)."),
    effective_batch: int = typer.Option(None, "--effective-batch", min=1,
                                        help="Global batch per step; sets --accum-steps (default: the config's, "
                                             "e.g. 4096 for SatMAE/DEM MAE base)."),
    num_workers: int = typer.Option(None, "--num-workers", "-w", min=0, help="Loader worker processes."),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    log_every: int = typer.Option(10, "--log-every", min=1, help="Steps per metrics.jsonl row."),
    ckpt_every: int = typer.Option(500, "--ckpt-every", min=1, help="Steps between checkpoints (and at the end)."),
    keep_every: int = typer.Option(None, "--keep-every", min=1, help="Also keep step-N.pt every N steps."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start afresh even if OUT/last.pt exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    debug: bool = DEBUG,
) -> None:
    """Pretrain BEV-MAE, SatMAE or DEM MAE on a dataset folder; checkpoints and metrics go to --out."""
    need_torch("pretrain")
    from als_datasets.train.autobatch import parse_batch_size
    from als_datasets.train.loop import train

    try:
        batch_size = parse_batch_size(batch_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--batch-size") from None

    s = train(data, model, config, out=out, max_steps=max_steps, epochs=epochs, stop_after=stop_after, seed=seed,
              batch_size=batch_size, lr=lr, num_workers=num_workers, resume=not no_resume, device=device,
              log_every=log_every, ckpt_every=ckpt_every, keep_every=keep_every, progress=not quiet,
              accum_steps=accum_steps, effective_batch=effective_batch)
    loss = "n/a" if s["final_loss"] is None else f"{s['final_loss']:.4f}"
    speed = "" if s["samples_per_s"] is None else f", {s['samples_per_s']:.1f} samples/s"
    resumed = "" if s["resumed_from"] is None else f" (resumed at step {s['resumed_from']})"
    state = "complete" if s["complete"] else "stopped early: re-run to continue"
    typer.echo(f"{s['out']}: {s['model']} ({s['config']}) step {s['step']}/{s['total_steps']}{resumed}, "
               f"loss {loss}{speed} on {s['device']}; {state}; checkpoint {s['checkpoint']}")
