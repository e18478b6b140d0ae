"""``--batch-size auto`` (issue 16): the probe's choice under a fake memory budget, the two entry
points accepting ``auto``, the CPU fallback, and a resumed auto run keeping its batch (CPU only:
the CUDA step itself is exercised on a GPU by hand, not here)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from train_data import write_dataset  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from als_datasets.cli import app  # noqa: E402
from als_datasets.errors import InputError  # noqa: E402
from als_datasets.train import autobatch, loop  # noqa: E402
from als_datasets.train.autobatch import candidates, parse_batch_size, probe_batch_size  # noqa: E402
from als_datasets.train.models import get_config  # noqa: E402

FAST = {"num_workers": 0, "progress": False, "log_every": 1}


class FakeOOM(RuntimeError):
    pass


def fake_device(oom_above: int | None = None, bytes_per_sample: int = 10, fixed: int = 100):
    """A step whose peak is ``fixed + b × bytes_per_sample`` and that runs out of memory above ``oom_above``."""
    calls = []

    def step(b):
        calls.append(b)
        if oom_above is not None and b > oom_above:
            raise FakeOOM(f"CUDA out of memory at {b}")
        return fixed + b * bytes_per_sample

    return step, calls


def test_probe_takes_the_largest_power_of_two_before_oom():
    step, calls = fake_device(oom_above=40)
    freed = []
    r = probe_batch_size(step, 4, total_bytes=10**9, oom=(FakeOOM,), after_oom=lambda: freed.append(1))
    assert r["batch_size"] == 32 and calls == [4, 8, 16, 32, 64] and freed == [1]
    assert [t["fits"] for t in r["tried"]] == [True, True, True, True, False] and r["tried"][-1]["peak_bytes"] is None


def test_probe_keeps_a_safety_margin_on_the_peak():
    # 85 % of 1000 bytes = 850: 100 + 10 b fits up to b = 75 -> 64; 128 is measured (no OOM) and refused
    step, calls = fake_device(bytes_per_sample=10, fixed=100)
    r = probe_batch_size(step, 2, total_bytes=1000, oom=(FakeOOM,))
    assert r["batch_size"] == 64 and calls[-1] == 128 and r["budget_bytes"] == 850
    assert probe_batch_size(fake_device()[0], 2, total_bytes=1000, budget=0.5, oom=(FakeOOM,))["batch_size"] == 32


def test_probe_halves_when_the_config_batch_does_not_fit():
    step, calls = fake_device(oom_above=10)
    r = probe_batch_size(step, 64, total_bytes=10**9, oom=(FakeOOM,))
    assert r["batch_size"] == 8 and calls == [64, 32, 16, 8]
    with pytest.raises(RuntimeError, match="not even a batch of 1"):
        probe_batch_size(fake_device(oom_above=0)[0], 4, total_bytes=10**9, oom=(FakeOOM,))


def test_probe_respects_the_split_and_the_effective_batch():
    assert candidates(256) [:4] == [256, 512, 1024, 2048]
    assert candidates(6, cap=40) == [6, 8, 16, 32]  # the config's batch, then powers of two
    assert candidates(4, cap=100, divides=48) == [4, 8, 16]  # 48 / 32 is not whole
    r = probe_batch_size(fake_device()[0], 4, total_bytes=10**9, cap=20, oom=(FakeOOM,))
    assert r["batch_size"] == 16  # a batch per process must exist in the train split
    r = probe_batch_size(fake_device()[0], 4, total_bytes=10**9, divides=4096, oom=(FakeOOM,))
    assert r["batch_size"] == 4096  # effective batch 4096 on one process: accum 1 at most
    r = probe_batch_size(fake_device(oom_above=100)[0], 512, total_bytes=10**9, cap=300, oom=(FakeOOM,))
    assert r["batch_size"] == 64  # 512 exceeds the split: halves, within it


def test_parse_batch_size_and_the_entry_points_accept_auto():
    from als_datasets.train.__main__ import parse_args

    assert parse_batch_size("auto") == parse_batch_size("AUTO") == "auto"
    assert parse_batch_size("16") == parse_batch_size(16) == 16 and parse_batch_size(None) is None
    for bad in ("0", "-2", "x", 0, 2.5):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            parse_batch_size(bad)
    assert parse_args(["--data", "d", "--model", "dem-mae", "--batch-size", "auto"]).batch_size == "auto"
    assert parse_args(["--data", "d", "--model", "dem-mae", "--batch-size", "8"]).batch_size == 8
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--model", "dem-mae", "--batch-size", "lots"])


@pytest.fixture(scope="module")
def dem(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("dem") / "dem", "dem", n_train=32, n_val=0, shard_size=8, seed=1)


def test_auto_on_the_cpu_is_the_config_batch_and_is_recorded(dem, tmp_path, capsys):
    torch.set_num_threads(1)
    s = loop.train(dem, "dem-mae", "tiny", out=tmp_path / "a", max_steps=1, batch_size="auto", **FAST)
    card = json.loads((tmp_path / "a" / "config.json").read_text())
    bs = get_config("dem-mae", "tiny")["batch_size"]
    assert card["batch_size"] == card["config"]["batch_size"] == bs and card["batch_size_auto"] is True
    assert card["batch_size_probe"]["device"] == "cpu" and s["global_batch"] == bs
    assert "no CUDA device, using the config's batch" in capsys.readouterr().err
    card = json.loads((tmp_path / "a" / "config.json").read_text())
    s = loop.train(dem, "dem-mae", "tiny", out=tmp_path / "b", max_steps=1, batch_size=4, **FAST)
    card = json.loads((tmp_path / "b" / "config.json").read_text())
    assert card["batch_size"] == 4 and card["batch_size_auto"] is False
    with pytest.raises(InputError, match="positive integer or 'auto'"):
        loop.train(dem, "dem-mae", "tiny", out=tmp_path / "c", max_steps=1, batch_size="big", **FAST)


def test_cli_pretrain_batch_size_auto(dem, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["pretrain", "--data", str(dem), "--model", "dem-mae", "--max-steps", "1", "--out",
                                 str(out), "--num-workers", "0", "-q", "--batch-size", "auto"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["batch_size_auto"] is True
    r = CliRunner().invoke(app, ["pretrain", "--data", str(dem), "--model", "dem-mae", "--max-steps", "1", "--out",
                                 str(tmp_path / "x"), "-q", "--batch-size", "huge"])
    assert r.exit_code != 0 and "auto" in r.output


def test_resumed_auto_run_keeps_its_batch_and_the_lr_follows_it(dem, tmp_path, monkeypatch):
    """A probe (faked: it picks 4 where the config says 8) fixes the batch; the resumed run takes it
    from the checkpoint without probing again, so its config matches and it continues; the
    accumulation and the lr follow the chosen batch as with an explicit --batch-size."""
    torch.set_num_threads(1)
    real, probes = autobatch.resolve_auto, []

    def fake(module, cfg, info, dev, *, world=1, recorded=None, note=None):
        if recorded is not None:
            return real(module, cfg, info, dev, world=world, recorded=recorded, note=note)
        probes.append(cfg["batch_size"])
        return {**cfg, "batch_size": 4}, {"batch_size_auto": True, "batch_size_probe": {"tried": [8, 4]}}

    monkeypatch.setattr(loop, "resolve_auto", fake)
    cfg = {**get_config("dem-mae", "tiny"), "lr": None, "blr": 1e-3, "batch_size": 8, "effective_batch": 16}
    out = tmp_path / "r"
    s1 = loop.train(dem, "dem-mae", cfg, out=out, max_steps=4, stop_after=2, batch_size="auto", **FAST)
    assert probes == [8] and (s1["accum_steps"], s1["global_batch"]) == (4, 16)
    assert s1["peak_lr"] == pytest.approx(1e-3 * 16 / 256)
    explicit = loop.train(dem, "dem-mae", cfg, out=tmp_path / "e", max_steps=4, stop_after=2, batch_size=4, **FAST)
    assert (explicit["accum_steps"], explicit["peak_lr"]) == (s1["accum_steps"], s1["peak_lr"])
    s2 = loop.train(dem, "dem-mae", cfg, out=out, max_steps=4, batch_size="auto", **FAST)
    assert probes == [8] and s2["resumed_from"] == 2 and s2["step"] == 4
    card = json.loads((out / "config.json").read_text())
    assert card["batch_size"] == 4 and card["batch_size_probe"]["resumed"] is True
    # without a checkpoint to resume, auto probes again
    loop.train(dem, "dem-mae", cfg, out=out, max_steps=1, batch_size="auto", resume=False, **FAST)
    assert probes == [8, 8]


@pytest.mark.parametrize("model,kind", [("dem-mae", "dem"), ("bev-mae", "als")])
def test_the_probe_step_trains_a_throwaway_model(tmp_path, monkeypatch, model, kind):
    """The step the CUDA probe runs (forward, backward, AdamW at lr 0), here on the CPU with the
    CUDA memory counters faked: it runs for each size, leaves the weights as they were, and the
    probe stops at the fake budget."""
    from als_datasets.train.info import DatasetInfo
    from als_datasets.train.models import get_model_module

    torch.set_num_threads(1)
    data = write_dataset(tmp_path / kind, kind, n_train=6, n_val=0, shard_size=3, n_points=1500)
    info, module = DatasetInfo.from_folder(data), get_model_module(model)
    cfg = get_config(model, "tiny")
    peaks = {}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev=None: peaks["next"])
    step, close = autobatch.cuda_step(module, cfg, info, torch.device("cpu"), n_samples=4)
    net = step.__closure__ and next(c.cell_contents for c in step.__closure__
                                    if isinstance(c.cell_contents, dict) and "net" in c.cell_contents)["net"]
    before = [p.detach().clone() for p in net.parameters()]

    def fake_step(b):
        peaks["next"] = 1000 * b
        return step(b)

    r = probe_batch_size(fake_step, 1, total_bytes=10_000, oom=(FakeOOM,))  # 85 % of 10 kB: 8 samples
    assert r["batch_size"] == 8 and [t["batch"] for t in r["tried"]] == [1, 2, 4, 8, 16]
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())

    def alloc_failed(dev=None):  # cuBLAS running out reports a plain RuntimeError: counted as OOM
        if peaks["next"] > 2000:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)")
        return peaks["next"]

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", alloc_failed)
    assert probe_batch_size(fake_step, 1, total_bytes=10**9)["batch_size"] == 2  # default: CUDA OOM errors
    close()
