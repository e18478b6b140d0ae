"""``torchrun --nproc-per-node 2 -m als_datasets.train`` on CPU (gloo): DDP without unused-parameter
hacks finishes with the same step count on every rank, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from train_data import write_dataset  # noqa: E402


def test_torchrun_two_processes_gloo(tmp_path):
    # 40 samples, batch 8 × 2 ranks → 2 batches per rank per epoch; 5 steps cross two epoch ends
    data = write_dataset(tmp_path / "dem", "dem", n_train=40, n_val=8, shard_size=[12, 12, 9, 7], seed=3)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "als_datasets.train", "--data", str(data), "--model", "dem-mae", "--config", "tiny",
           "--max-steps", "5", "--out", str(out), "--num-workers", "0", "--log-every", "2", "--device", "cpu",
           "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 16 and summary["steps_per_epoch"] == 2
    assert summary["steps_per_rank"] == [5, 5] and summary["step"] == 5 and summary["complete"]
    printed = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["steps_per_rank"] == [5, 5]  # rank 0 alone prints
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 5]  # one writer: no duplicated rows
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 5 and ck["world_size"] == 2 and ck["epoch"] == 2 and ck["batch_in_epoch"] == 1
    assert sorted(q.name for q in out.iterdir()) == ["config.json", "last.pt", "metrics.jsonl", "summary.json"]
