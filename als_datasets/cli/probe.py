"""``als-datasets probe``: linear probe of a frozen encoder on a label of the sample metadata.

Compares a pretrained checkpoint with a random-init (scratch) encoder of the same model on the
same split; writes ``probe.json`` next to the checkpoint (or to ``--out``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import DEBUG, need_torch
from als_datasets.cli.root import app


@app.command()
def probe(
    data: Path = typer.Option(..., "--data", "-d", help="Build folder whose samples are encoded and labelled."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A last.pt / step-N.pt of als-datasets pretrain."),
    scratch: bool = typer.Option(False, "--scratch", help="Only a random-init encoder (no checkpoint)."),
    label: str = typer.Option("stratum", "--label", "-l",
                              help="Metadata field: landcover, slope_class, stratum (als); continent, biome "
                                   "(satellite)."),
    model: str = typer.Option(None, "--model", "-m", help="Model for --scratch (default: the dataset kind's)."),
    config: str = typer.Option(None, "--config", "-c", help="Config for --scratch (default tiny)."),
    out: Path = typer.Option(None, "--out", "-o", help="Result JSON (default: probe.json next to the checkpoint)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the scratch encoder and of a held-out split."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", min=1, help="Encoding batch size."),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the scratch encoder next to the checkpoint."),
    debug: bool = DEBUG,
) -> None:
    """Freeze an encoder, pool its features per sample, fit a linear classifier, score the held-out split."""
    need_torch("probe")
    from als_datasets.errors import InputError
    from als_datasets.train.probe import format_table
    from als_datasets.train.probe import probe as run_probe

    if checkpoint is None and not scratch:
        raise InputError(None, "give --checkpoint PATH or --scratch")
    r = run_probe(data, None if scratch else checkpoint, label, model=model, config=config, scratch=scratch,
                  baseline=not no_baseline, out=out, seed=seed, batch_size=batch_size, device=device)
    typer.echo(format_table(r))
    typer.echo(f"written: {r['out']}")
