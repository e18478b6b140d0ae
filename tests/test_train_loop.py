"""The training loop (DESIGN.md §9): schedule, loss goes down, exact resume, refusals, the
``pretrain`` command; on the synthetic build folders of ``train_data`` (CPU, seconds)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from train_data import write_dataset  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from als_datasets.cli import app, main  # noqa: E402
from als_datasets.errors import InputError  # noqa: E402
from als_datasets.train.loop import (  # noqa: E402
    CHECKPOINT_FORMAT,
    load_checkpoint,
    lr_factor,
    onecycle_beta1,
    param_groups,
    peak_flops,
    resolve_lr,
    train,
)
from als_datasets.train.models import get_config  # noqa: E402

runner = CliRunner()
FAST = {"num_workers": 0, "progress": False, "log_every": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine torch's OpenMP spin-waits make 2 threads
    up to 10× slower on these tiny models; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dem(tmp_path_factory):
    """32 train / 8 validation DEM patches of 32 px in 4 shards: 4 batches of 8 per epoch."""
    return write_dataset(tmp_path_factory.mktemp("dem") / "dem", "dem", n_train=32, n_val=8, shard_size=8, seed=1)


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------
def test_lr_schedules():
    f = [lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup to the peak
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # then monotone down...
    assert f[-1] == pytest.approx(0.1, abs=1e-3)  # ...to min_lr / lr
    assert lr_factor(50, 100, 10, "constant") == 1.0
    oc = [lr_factor(s, 100, 0, "onecycle") for s in range(100)]
    assert oc[0] == pytest.approx(0.1) and max(oc) == pytest.approx(1.0) and oc.index(max(oc)) == 40
    assert oc[-1] < 1e-3
    bev = [lr_factor(s, 100, 0, "onecycle", pct_start=0.1, div_factor=10, final_div_factor=1e4) for s in range(101)]
    assert bev.index(max(bev)) == 10 and bev[100] == pytest.approx(1e-5)  # ALS paper: lr / 10 / 1e4 at the end
    b1 = [onecycle_beta1(s, 100, (0.95, 0.85), 0.1) for s in range(101)]
    assert b1[0] == pytest.approx(0.95) and b1[10] == pytest.approx(0.85) and b1[100] == pytest.approx(0.95)
    with pytest.raises(ValueError):
        lr_factor(0, 10, 0, "linear-ish")


def test_lr_from_blr_and_peak_flops():
    assert resolve_lr({"blr": 1.5e-4}, 4096) == pytest.approx(2.4e-3)  # MAE: blr × batch / 256
    assert resolve_lr({"blr": 1.5e-4, "lr": 1e-3}, 4096) == 1e-3
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some CPU") is None


def test_param_groups_exclude_norms_biases_tokens(dem):
    from als_datasets.train.info import DatasetInfo
    from als_datasets.train.models import get_config, get_model_module

    info = DatasetInfo.from_folder(dem)
    net = get_model_module("dem-mae").build_model(get_config("dem-mae", "tiny"), info)
    decay, no_decay = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    for name, p in net.named_parameters():
        if p.requires_grad and (p.ndim <= 1 or "token" in name):
            assert id(p) in ids, name
    assert all(p.ndim >= 2 for p in decay["params"])
    n_train = sum(1 for p in net.parameters() if p.requires_grad)
    assert len(decay["params"]) + len(no_decay["params"]) == n_train


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def test_loop_lowers_the_loss_and_logs(dem, tmp_path):
    s = train(dem, "dem-mae", "tiny", out=tmp_path / "run", max_steps=20, lr=3e-3, **FAST)
    assert s["step"] == 20 and s["steps_run"] == 20 and s["complete"] and s["steps_per_rank"] == [20]
    assert s["epoch"] == 5 and s["steps_per_epoch"] == 4  # 32 samples / 8 per batch, across epochs
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    for r in rows:
        for key in ("epoch", "loss", "lr", "samples_per_s", "step_time_s", "data_wait_s", "data_wait_share"):
            assert key in r and math.isfinite(r[key]), key
        assert "mfu" not in r  # CPU: no MFU
    loss = [r["loss"] for r in rows]
    assert sum(loss[-5:]) / 5 < 0.8 * sum(loss[:5]) / 5, loss
    assert rows[0]["lr"] < rows[1]["lr"]  # warmup
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 20


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_exact(dem, tmp_path, accum):
    """6 steps straight vs 3 steps + resume (crossing an epoch end): same losses 4-6, same weights;
    also with gradient accumulation (2 micro-batches of 4 per step: 4 steps per epoch as well)."""
    cfg = {**get_config("dem-mae", "tiny"), "accum_steps": accum, "batch_size": 8 // accum}
    full = tmp_path / "full"
    s0 = train(dem, "dem-mae", cfg, out=full, max_steps=6, **FAST)
    assert s0["global_batch"] == 8 and s0["steps_per_epoch"] == 4
    part = tmp_path / "part"
    s1 = train(dem, "dem-mae", cfg, out=part, max_steps=6, stop_after=3, **FAST)
    assert s1["step"] == 3 and not s1["complete"]
    ck = load_checkpoint(part / "last.pt")
    assert (ck["step"], ck["epoch"], ck["batch_in_epoch"]) == (3, 0, 3 * accum)
    s2 = train(dem, "dem-mae", cfg, out=part, max_steps=6, **FAST)
    assert s2["resumed_from"] == 3 and s2["steps_run"] == 3 and s2["step"] == 6
    assert losses(part) == losses(full)  # exact equality, steps 1-3 and 4-6
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    s3 = train(dem, "dem-mae", cfg, out=part, max_steps=6, **FAST)  # already complete: nothing to do
    assert s3["steps_run"] == 0 and s3["step"] == 6


def test_interrupt_and_crash_then_resume(dem, tmp_path, monkeypatch):
    """Ctrl-C checkpoints the last finished step; rows logged after the last checkpoint (a crash)
    are dropped on resume: the log ends up equal to the uninterrupted run's."""
    import als_datasets.train.loop as loop

    full = tmp_path / "full"
    train(dem, "dem-mae", "tiny", out=full, max_steps=6, **FAST)
    run = tmp_path / "run"
    calls = {"n": 0}
    real = loop._to_device

    def interrupting(batch, dev):
        calls["n"] += isinstance(batch, dict)  # the batch itself, not its (recursively moved) tensors
        if calls["n"] == 4:  # while moving the 4th batch
            raise KeyboardInterrupt
        return real(batch, dev)

    monkeypatch.setattr(loop, "_to_device", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(dem, "dem-mae", "tiny", out=run, max_steps=6, ckpt_every=100, **FAST)
    monkeypatch.setattr(loop, "_to_device", real)
    assert load_checkpoint(run / "last.pt")["step"] == 3
    with (run / "metrics.jsonl").open("a") as f:  # a crash after logging steps 4-5, never checkpointed
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n" + json.dumps({"step": 5, "loss": -1.0}) + "\n")
    s = train(dem, "dem-mae", "tiny", out=run, max_steps=6, **FAST)
    assert s["resumed_from"] == 3 and losses(run) == losses(full)


def test_checkpoint_is_plain_and_weights_only(dem, tmp_path):
    train(dem, "dem-mae", "tiny", out=tmp_path / "r", max_steps=2, keep_every=1, **FAST)
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ck["format"] == CHECKPOINT_FORMAT and ck["model_name"] == "dem-mae" and ck["config_name"] == "tiny"
    assert ck["step"] == 2 and len(ck["fingerprint"]) == 64 and ck["config"]["batch_size"] == 8
    assert isinstance(ck["rng"]["torch"], torch.Tensor)
    assert (tmp_path / "r" / "step-1.pt").is_file() and not list((tmp_path / "r").glob(".*tmp*"))


def test_resume_refuses_another_run(dem, tmp_path):
    out = tmp_path / "r"
    train(dem, "dem-mae", "tiny", out=out, max_steps=2, **FAST)
    with pytest.raises(InputError, match="config differs.*lr"):
        train(dem, "dem-mae", "tiny", out=out, max_steps=2, lr=5e-4, **FAST)
    with pytest.raises(InputError, match="schedule length"):
        train(dem, "dem-mae", "tiny", out=out, max_steps=3, **FAST)
    with pytest.raises(InputError, match="seed"):
        train(dem, "dem-mae", "tiny", out=out, max_steps=2, seed=1, **FAST)
    other = write_dataset(tmp_path / "other", "dem", n_train=32, n_val=8, shard_size=8, seed=2)
    with pytest.raises(InputError, match="dataset"):
        train(other, "dem-mae", "tiny", out=out, max_steps=2, **FAST)
    s = train(dem, "dem-mae", "tiny", out=out, max_steps=2, lr=5e-4, resume=False, **FAST)  # --no-resume
    assert s["resumed_from"] is None and len(losses(out)) == 2  # a fresh log, not appended to the old one
    (out / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="last.pt: not a readable checkpoint"):
        train(dem, "dem-mae", "tiny", out=out, max_steps=2, **FAST)


def test_model_must_match_the_dataset_kind(dem, tmp_path):
    with pytest.raises(InputError, match="manifest.json: model bev-mae trains on als data but this dataset is dem"):
        train(dem, "bev-mae", "tiny", out=tmp_path / "r", max_steps=1, **FAST)
    with pytest.raises(InputError, match="unknown model"):
        train(dem, "vit-huge", "tiny", out=tmp_path / "r", max_steps=1, **FAST)
    no_train = write_dataset(tmp_path / "t", "dem", n_train=0, n_val=4, shard_size=4)
    with pytest.raises(InputError, match="no split 'train'"):
        train(no_train, "dem-mae", "tiny", out=tmp_path / "r2", max_steps=1, **FAST)


@pytest.mark.parametrize("model,kind", [("satmae", "satellite"), ("bev-mae", "als")])
def test_other_models_train_through_the_loop(tmp_path, model, kind):
    data = write_dataset(tmp_path / kind, kind, n_train=8, n_val=0, shard_size=4, n_points=1500)
    s = train(data, model, "tiny", out=tmp_path / "r", max_steps=2, batch_size=4, **FAST)
    assert s["step"] == 2 and all(math.isfinite(x) for x in losses(tmp_path / "r"))


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def test_cli_pretrain(dem, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["pretrain", "--data", str(dem), "--model", "dem-mae", "--max-steps", "3", "--out", str(out),
            "--num-workers", "1", "-q"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "step 3/3" in r.output and "complete" in r.output and (out / "last.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # log every 10 steps + the last
    r = runner.invoke(app, args)  # the same command again: resumes, nothing left to do
    assert r.exit_code == 0 and "resumed at step 3" in r.output
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--data", str(dem), "--model", "satmae", "--out", str(tmp_path / "x"), "-q"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "manifest.json" in err and "satellite" in err and "\n" not in err


def test_effective_batch_sets_accumulation_and_lr(dem, tmp_path):
    """A config's effective batch is reached by accumulation; lr = blr × effective / 256; config.json says so."""
    cfg = {**get_config("dem-mae", "tiny"), "lr": None, "blr": 1e-3, "batch_size": 4, "effective_batch": 16}
    s = train(dem, "dem-mae", cfg, out=tmp_path / "eff", max_steps=1, **FAST)
    assert (s["accum_steps"], s["global_batch"], s["steps_per_epoch"]) == (4, 16, 2)
    assert s["peak_lr"] == pytest.approx(1e-3 * 16 / 256)
    card = json.loads((tmp_path / "eff" / "config.json").read_text())
    assert card["accum_steps"] == 4 and card["global_batch"] == 16 and card["config"]["effective_batch"] == 16
    # an explicit --accum-steps wins over the config's effective batch
    s = train(dem, "dem-mae", cfg, out=tmp_path / "acc", max_steps=1, accum_steps=2, **FAST)
    assert (s["accum_steps"], s["global_batch"]) == (2, 8) and s["peak_lr"] == pytest.approx(1e-3 * 8 / 256)
    with pytest.raises(InputError, match="effective batch 10 is not a multiple"):
        train(dem, "dem-mae", cfg, out=tmp_path / "bad", max_steps=1, effective_batch=10, **FAST)


def test_cli_accepts_accumulation_flags():
    from als_datasets.train.__main__ import parse_args

    a = parse_args(["--data", "d", "--model", "satmae", "--accum-steps", "16", "--effective-batch", "4096"])
    assert (a.accum_steps, a.effective_batch) == (16, 4096)
