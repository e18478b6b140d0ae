"""Issue 3 × issue 6: the raster builder's shards train SatMAE and the DEM MAE as they come out of
``als-datasets build`` (band order by common name, dataset band statistics, DEM NaN nodata)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from als_datasets.cli import main
from als_datasets.train.info import DatasetInfo

BUILDERS = Path(__file__).resolve().parents[1] / "builders"


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_satellite_build_pretrains_satmae_and_probes_continent(tmp_path):
    out = tmp_path / "sat"
    main(["build", str(BUILDERS / "satellite-global.yaml"), "-n", "36", "--out", str(out), "-q"])
    info = DatasetInfo.from_folder(out)
    assert info.kind == "satellite" and info.patch_size_px == 96 and "nir08" in info.bands
    # per-sensor dataset statistics for SatMAE's normalisation
    stats = json.loads((out / "_info.json").read_text())["band_stats"]
    assert stats and all(v["std"] > 0 and v["samples"] > 0 for table in stats.values() for v in table.values())

    from als_datasets.train.loader import iter_samples
    from als_datasets.train.models import get_config, get_model_module

    sat = get_model_module("satmae")
    cfg = get_config("satmae", "tiny")
    batch = sat.collate(list(iter_samples(info, "train"))[:4], np.random.default_rng(0), cfg, info)
    x, v = batch["pixels"].numpy(), batch["valid"].numpy()
    assert x.shape[1] == len(info.bands) and (x[v] >= 0).all() and (x[v] <= 1).all() and v.any()

    run = tmp_path / "run"
    main(["pretrain", "--data", str(out), "--model", "satmae", "--config", "tiny", "--max-steps", "3",
          "--out", str(run), "-q", "--num-workers", "0"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and np.isfinite(rows[-1]["loss"])
    main(["probe", "--data", str(out), "--checkpoint", str(run / "last.pt"), "--label", "continent",
          "--out", str(tmp_path / "probe.json"), "--no-baseline"])
    res = json.loads((tmp_path / "probe.json").read_text())
    assert res["label"] == "continent"


def test_dem_build_pretrains_dem_mae(tmp_path):
    out = tmp_path / "dem"
    main(["build", str(BUILDERS / "dem-demo.yaml"), "-n", "24", "--out", str(out), "-q"])
    run = tmp_path / "run"
    main(["pretrain", "--data", str(out), "--model", "dem-mae", "--config", "tiny", "--max-steps", "3",
          "--out", str(run), "-q", "--num-workers", "0"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and np.isfinite(rows[-1]["loss"])


def test_raster_build_pushes_and_loads_from_the_hub(monkeypatch, tmp_path):
    """A satellite build publishes like an ALS one: load_dataset("org/name") and streaming work."""
    import huggingface_hub.utils._http as hf_http
    from datasets import load_dataset
    from hub_server import HubServer, hub_env

    from als_datasets.publish.push import push

    out = tmp_path / "dem"
    main(["build", str(BUILDERS / "dem-demo.yaml"), "-n", "12", "--out", str(out), "-q"])
    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    with HubServer() as server:
        hub_env(monkeypatch, server, tmp_path / "hf")
        push(out, "org/dem-demo")
        remote = load_dataset("org/dem-demo", split="train")
        local = {r["__key__"]: r for r in load_dataset(str(out), split="train")}
        assert sorted(r["__key__"] for r in remote) == sorted(local) and len(local) == 12
        r = remote[0]
        assert np.asarray(r["pixels.npy"], dtype=np.float32).shape == (1, 64, 64)
        assert len(list(load_dataset("org/dem-demo", split="train", streaming=True))) == 12
