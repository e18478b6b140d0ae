"""``python -m als_datasets.train`` — the training loop from the shell, and under ``torchrun``::

    python -m als_datasets.train --data out/demo-geospatial --model bev-mae --config tiny --max-steps 50
    torchrun --nproc-per-node 8 -m als_datasets.train --data DIR --model satmae --config base

Every process runs this; :func:`als_datasets.train.loop.train` reads ``RANK``/``WORLD_SIZE``
from the environment ``torchrun`` sets. Rank 0 prints the summary as JSON; bad input ends with
one line ``error: <file>: <reason>`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .autobatch import parse_batch_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m als_datasets.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="build folder (als-datasets build --out)")
    p.add_argument("--model", required=True, help="bev-mae | satmae | dem-mae")
    p.add_argument("--config", default="tiny", help="tiny | base (default tiny)")
    p.add_argument("--max-steps", type=int, default=None, help="length of the run and its schedule, in steps")
    p.add_argument("--epochs", type=int, default=None, help="length in epochs (default: the config's)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop at this step without changing the schedule (resume later with the same command)")
    p.add_argument("--out", default=None, help="run folder (default runs/<data folder name>-<model>-<config>, under the current directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=parse_batch_size, default=None,
                   help="per process (default: the config's), or auto: the largest power of two that fits the "
                        "GPU, probed (the config's on a CPU); recorded in OUT/config.json")
    p.add_argument("--accum-steps", type=int, default=None,
                   help="micro-batches per optimiser step (global batch = batch × accum × processes)")
    p.add_argument("--effective-batch", type=int, default=None,
                   help="global batch per optimiser step; sets --accum-steps (default: the config's, e.g. "
                        "SatMAE/MAE 4096)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the config's lr or blr)")
    p.add_argument("--num-workers", type=int, default=None, help="loader worker processes per process")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--keep-every", type=int, default=None, help="also keep step-N.pt every N steps")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/last.pt exists")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ..errors import InputError
    from .loop import dist_env, train

    a = parse_args(argv)
    try:
        summary = train(a.data, a.model, a.config, out=a.out, max_steps=a.max_steps, epochs=a.epochs,
                        stop_after=a.stop_after, seed=a.seed, batch_size=a.batch_size, lr=a.lr,
                        num_workers=a.num_workers, resume=not a.no_resume, device=a.device, log_every=a.log_every,
                        ckpt_every=a.ckpt_every, keep_every=a.keep_every, progress=not a.no_progress,
                        accum_steps=a.accum_steps, effective_batch=a.effective_batch)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if dist_env()[0] == 0:
        print(json.dumps(summary))
    return 0


def _exit(code: int) -> None:
    """End the process with ``code``.  A rank of a distributed run (``WORLD_SIZE`` > 1) ends
    without the interpreter's finalisation: torch keeps a gloo process group that DDP's reducer
    holds alive until then, and its threads may still be releasing the run's last collectives
    (whose tensors hold Python objects) while Python finalises; taking the GIL then aborts the
    rank ("terminate called without an active exception", SIGABRT), a failed run for torchrun.
    Every output is written and closed by the time :func:`main` returns."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
