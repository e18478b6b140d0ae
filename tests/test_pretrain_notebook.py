"""The reference pre-training script and its notebook (build → pretrain → probe → compare).

The script's logic runs in the default suite on synthetic builds (seconds); the notebook itself
builds the embedded demo twice and is executed top to bottom in a slow test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from train_data import write_dataset  # noqa: E402

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def _script():
    spec = importlib.util.spec_from_file_location("pretrain_reference", NOTEBOOKS / "pretrain_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reference_script_compares_strategies(tmp_path, monkeypatch):
    ref = _script()
    seeds = {"geospatial": 5, "random": 6}

    def fake_build(strategy, out, recipe, samples, holdout):  # synthetic ALS builds instead of the demo
        return write_dataset(out / f"data-{strategy}", "als", n_train=12, n_val=6, shard_size=6, n_points=1200,
                             seed=seeds[strategy])

    monkeypatch.setattr(ref, "build", fake_build)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = ref.compare(tmp_path, steps=2, label="landcover", progress=False)
    finally:
        torch.set_num_threads(n)
    assert list(table["rows"]) == ["geospatial", "random", "scratch"]
    assert table["n_train"] == 12 and table["n_heldout"] == 6 and table["evaluated_on"].endswith("data-geospatial")
    for name, row in table["rows"].items():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["miou"] <= row["macro_f1"] <= 1.0
        assert (row["final_loss"] is None) == (name == "scratch")
    assert json.loads((tmp_path / "comparison.json").read_text()) == table
    for f in ("probe-geospatial.json", "probe-random.json", "probe-scratch.json", "run-random/last.pt"):
        assert (tmp_path / f).is_file(), f
    text = ref.show(table)
    assert "geospatial" in text and "scratch" in text and "majority" in text


@pytest.mark.slow
def test_pretrain_notebook_runs(tmp_path, demo_recipe, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("ALS_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models on a shared CPU: one thread is faster
    nb = nbformat.read(NOTEBOOKS / "pretrain.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    study = tmp_path / "out" / "pretrain-study"
    for s in ("geospatial", "random"):
        assert json.loads((study / f"run-{s}" / "summary.json").read_text())["complete"]
        assert (study / f"probe-{s}.json").is_file()
    assert (study / "probe-scratch.json").is_file()
