"""The linear probe: scores on hand-made labels, the held-out split, beating chance with a frozen
encoder on the synthetic sets, the JSON it writes, and the ``probe`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train_data import write_dataset  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from als_datasets.cli import app, main  # noqa: E402
from als_datasets.errors import InputError  # noqa: E402
from als_datasets.train.loop import train  # noqa: E402
from als_datasets.train.probe import (  # noqa: E402
    classification_scores,
    fit_linear,
    predict_linear,
    probe,
    probe_features,
    stratified_holdout,
)

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine torch's OpenMP spin-waits make 2 threads
    up to 10× slower on these tiny models; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------
def test_scores_by_hand():
    t = ["a", "a", "a", "b", "b", "c"]
    p = ["a", "a", "b", "b", "c", "c"]
    s = classification_scores(t, p)
    assert s["accuracy"] == pytest.approx(4 / 6)
    # a: tp 2 fp 0 fn 1 → IoU 2/3, F1 4/5; b: tp 1 fp 1 fn 1 → 1/3, 1/2; c: tp 1 fp 1 fn 0 → 1/2, 2/3
    assert s["per_class"]["a"]["iou"] == pytest.approx(2 / 3) and s["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert s["macro_f1"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert classification_scores(["a", "b"], ["a", "b"])["miou"] == 1.0


def test_stratified_holdout_is_seeded_and_stratified():
    labels = ["x"] * 20 + ["y"] * 8 + ["z"]
    m = stratified_holdout(labels, 0.25, seed=4)
    assert m.tolist() == stratified_holdout(labels, 0.25, seed=4).tolist()
    assert m.tolist() != stratified_holdout(labels, 0.25, seed=5).tolist()
    lab = np.array(labels)
    assert (m & (lab == "x")).sum() == 5 and (m & (lab == "y")).sum() == 2 and not m[lab == "z"].any()


def test_linear_fit_separates_and_reports_unseen_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    y = rng.integers(0, 3, 150)
    x = centres[y] + rng.normal(0, 0.5, (150, 3))
    lin = fit_linear(x[:100], y[:100], 3)
    assert np.mean(predict_linear(lin, x[100:]) == y[100:]) > 0.95
    names = np.array(["a", "b", "c"])
    held_y = names[y[100:]].tolist() + ["d", "d"]  # a class train never saw: counted wrong, no crash
    r = probe_features(x[:100], names[y[:100]].tolist(), np.vstack([x[100:], x[:2]]), held_y)
    assert r["per_class"]["d"]["support"] == 2 and r["per_class"]["d"]["tp"] == 0
    assert 0.9 < r["accuracy"] < 1.0 and r["feature_dim"] == 3


# --------------------------------------------------------------------------------------------
# on the synthetic sets
# --------------------------------------------------------------------------------------------
def test_probe_scratch_beats_chance_on_als(tmp_path):
    """A frozen random-init BEV-MAE already separates the synthetic land covers (roofs, crowns)."""
    data = write_dataset(tmp_path / "als", "als", n_train=30, n_val=15, shard_size=15, n_points=1500, seed=5)
    r = probe(data, None, "landcover", scratch=True, out=tmp_path / "p.json")
    assert set(r["encoders"]) == {"scratch"} and r["model"] == "bev-mae" and r["heldout"] == "validation"
    assert r["n_train"] == 30 and r["n_heldout"] == 15 and r["classes"] == ["developed", "forest", "other"]
    acc = r["encoders"]["scratch"]["accuracy"]
    assert acc > max(r["chance"]["majority_accuracy"], r["chance"]["uniform_accuracy"]) + 0.2, r
    on_disk = json.loads((tmp_path / "p.json").read_text())
    for key in ("label", "heldout", "classes", "unseen_classes", "chance", "encoders", "n_train", "unlabelled"):
        assert key in on_disk
    for key in ("accuracy", "macro_f1", "miou", "per_class", "train_accuracy", "feature_dim"):
        assert key in on_disk["encoders"]["scratch"]
    assert on_disk["encoders"]["scratch"]["miou"] <= on_disk["encoders"]["scratch"]["macro_f1"]


def test_probe_checkpoint_without_validation_split(tmp_path):
    """Checkpoint + scratch side by side; no validation split → a stratified part of train."""
    data = write_dataset(tmp_path / "sat", "satellite", n_train=24, n_val=0, shard_size=12, seed=5)
    train(data, "satmae", "tiny", out=tmp_path / "run", max_steps=2, num_workers=0, progress=False)
    r = probe(data, tmp_path / "run" / "last.pt", "biome")
    assert r["out"] == str(tmp_path / "run" / "probe.json") and r["checkpoint_step"] == 2
    assert set(r["encoders"]) == {"pretrained", "scratch"} and r["model"] == "satmae"
    assert r["heldout"].startswith("train (no validation split") and (r["n_train"], r["n_heldout"]) == (16, 8)
    assert r["encoders"]["pretrained"]["feature_dim"] == r["encoders"]["scratch"]["feature_dim"]
    assert probe(data, tmp_path / "run" / "last.pt", "biome", out=tmp_path / "again.json")["encoders"] == \
        r["encoders"]  # deterministic
    with pytest.raises(InputError, match="is a satmae checkpoint, not dem-mae"):
        probe(data, tmp_path / "run" / "last.pt", "biome", model="dem-mae")
    with pytest.raises(InputError, match="no 'stratum' label"):
        probe(data, tmp_path / "run" / "last.pt", "stratum")


def test_cli_probe(tmp_path, capsys):
    data = write_dataset(tmp_path / "dem", "dem", n_train=24, n_val=12, shard_size=12, seed=1)
    ck = tmp_path / "run" / "last.pt"
    train(data, "dem-mae", "tiny", out=tmp_path / "run", max_steps=1, num_workers=0, progress=False)
    r = runner.invoke(app, ["probe", "--data", str(data), "--checkpoint", str(ck), "--label", "slope_class"])
    assert r.exit_code == 0, r.output
    assert "pretrained" in r.output and "scratch" in r.output and "majority" in r.output
    res = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert res["label"] == "slope_class" and res["model"] == "dem-mae" and res["n_heldout"] == 12
    r = runner.invoke(app, ["probe", "--data", str(data), "--scratch", "--label", "continent",
                            "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert list(json.loads((tmp_path / "s.json").read_text())["encoders"]) == ["scratch"]
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--data", str(data), "--label", "stratum"])
    assert exc.value.code == 2 and "--checkpoint" in capsys.readouterr().err


def test_dem_probe_recovers_slope_with_dataset_wide_normalisation(tmp_path):
    """DEM inputs keep their relief (crop mean removed, one dataset-wide scale): a linear probe of
    slope class on the (briefly) pretrained encoder separates flat / sloped / steep; per-patch
    z-scores (``normalise: sample``, the previous behaviour) normalise the relief away."""
    from als_datasets.train.models import get_config

    data = write_dataset(tmp_path / "dem", "dem", n_train=48, n_val=24, shard_size=12, seed=2)
    acc = {}
    for mode in ("dataset", "sample"):
        cfg = {**get_config("dem-mae", "tiny"), "normalise": mode}
        train(data, "dem-mae", cfg, out=tmp_path / mode, max_steps=10, num_workers=0, progress=False)
        r = probe(data, tmp_path / mode / "last.pt", "slope_class")
        acc[mode] = r["encoders"]["pretrained"]["accuracy"]
        card = json.loads((tmp_path / mode / "config.json").read_text())["config"]
        assert card["normalise"] == mode
        assert (card["relief_scale_m"] is not None) == (mode == "dataset")  # measured on the train split
    assert acc["dataset"] >= 0.8 and acc["dataset"] > acc["sample"] + 0.2, acc
