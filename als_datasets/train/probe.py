"""Linear probe: how much of a metadata label a frozen encoder's features already separate.

The papers compare pre-training sets by what a frozen (or fine-tuned) encoder does downstream:
geospatial vs random sampling (ALS), global vs per-continent (SatMAE). This is the cheap,
reproducible version of that comparison a user can run on their own build:

1. freeze the encoder (a checkpoint of :func:`~als_datasets.train.loop.train`, and a
   random-init copy of the same model as the *scratch* baseline);
2. ``encode`` every sample of the train and held-out splits with the model's deterministic
   collate (``train=False``: no mask, fixed crop) → one pooled feature vector per sample;
3. fit a multinomial logistic regression (torch, float64, full-batch L-BFGS, L2, features
   standardised with the train statistics) on the train features and a label from the sample
   metadata (ALS: ``landcover``, ``slope_class``, ``stratum``; satellite: ``continent``,
   ``biome``; DEM: ``slope_class``, ``continent``...);
4. score the held-out split (``validation``; without one, a seeded stratified 25 % of train):
   accuracy, macro F1 and mean IoU (per class TP / (TP + FP + FN), macro mean: "mIoU-style"),
   alongside the majority-class and uniform chance levels.

Classes present in the held-out split but absent from train cannot be predicted: they are
reported (``unseen_classes``) and count as errors, nothing crashes. Samples whose label is null
are left out and counted (``unlabelled``). Everything is a function of the seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .info import DatasetInfo
from .models import get_config, get_model_module, with_dataset_statistics

#: the probe labels that make sense per dataset kind (any metadata field works)
LABELS = {"als": ("landcover", "slope_class", "stratum"), "satellite": ("continent", "biome", "landcover"),
          "dem": ("slope_class", "continent", "biome")}
#: the model used for a dataset kind when neither ``--model`` nor a checkpoint says
DEFAULT_MODEL = {"als": "bev-mae", "satellite": "satmae", "dem": "dem-mae"}


# --------------------------------------------------------------------------------------------
# pure parts: split, fit, score
# --------------------------------------------------------------------------------------------
def stratified_holdout(labels: list[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded stratified held-out part: ``round(fraction × n_c)`` of each class
    (at least one when the class has two or more samples, none when it has one)."""
    labels = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), bool)
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        k = 0 if len(idx) < 2 else min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        held[rng.permutation(idx)[:k]] = True
    return held


def fit_linear(x: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = 1e-3, max_iter: int = 500) -> dict:
    """Multinomial logistic regression on standardised features (float64, full-batch L-BFGS).

    Returns ``{"mean", "std", "weight", "bias"}`` (numpy). Zero init and a deterministic solver:
    the same data give the same weights.
    """
    xt = torch.as_tensor(np.asarray(x, np.float64))
    mean, std = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-6)
    xs = (xt - mean) / std
    yt = torch.as_tensor(np.asarray(y, np.int64))
    w = torch.zeros(xs.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    if n_classes > 1:
        opt.step(closure)
    return {"mean": mean.numpy(), "std": std.numpy(), "weight": w.detach().numpy(), "bias": b.detach().numpy()}


def predict_linear(model: dict, x: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, np.float64) - model["mean"]) / model["std"]
    return np.argmax(z @ model["weight"] + model["bias"], axis=1)


def classification_scores(y_true: list[str], y_pred: list[str]) -> dict:
    """Accuracy, macro F1 and mIoU-style macro IoU over the classes in truth ∪ predictions."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    per = {}
    for c in sorted(set(t.tolist()) | set(p.tolist())):
        tp = int(np.sum((t == c) & (p == c)))
        fp = int(np.sum((t != c) & (p == c)))
        fn = int(np.sum((t == c) & (p != c)))
        per[c] = {"support": int(np.sum(t == c)), "tp": tp, "fp": fp, "fn": fn,
                  "iou": tp / (tp + fp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
    return {"accuracy": float(np.mean(t == p)) if len(t) else float("nan"),
            "macro_f1": float(np.mean([v["f1"] for v in per.values()])) if per else float("nan"),
            "miou": float(np.mean([v["iou"] for v in per.values()])) if per else float("nan"),
            "per_class": per}


def probe_features(train_x, train_y, held_x, held_y, *, l2: float = 1e-3) -> dict:
    """Fit on (train_x, train_y), score on (held_x, held_y); labels are strings."""
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    if not classes:
        raise ValueError("no labelled training samples")
    lin = fit_linear(train_x, [index[c] for c in train_y], len(classes), l2=l2)
    pred = [classes[i] for i in predict_linear(lin, held_x)] if len(held_y) else []
    train_acc = float(np.mean(np.asarray(classes, dtype=object)[predict_linear(lin, train_x)] ==
                              np.asarray(train_y, dtype=object)))
    return {**classification_scores(held_y, pred), "train_accuracy": train_acc,
            "feature_dim": int(np.asarray(train_x).shape[1])}


# --------------------------------------------------------------------------------------------
# encoders and features (I/O)
# --------------------------------------------------------------------------------------------
def _to(batch, dev):
    if isinstance(batch, torch.Tensor):
        return batch.to(dev)
    if isinstance(batch, dict):
        return {k: _to(v, dev) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, dev) for v in batch)
    return batch


@torch.no_grad()
def encode_split(encoders: dict, module, cfg: dict, info: DatasetInfo, split: str, label: str, *,
                 batch_size: int, device, seed: int = 0) -> tuple[dict, list, list]:
    """Features of every sample of ``split`` for each encoder: ``({name: (N, D)}, labels, keys)``.

    Samples are decoded and collated once (``train=False``) and fed to every encoder."""
    from .loader import iter_samples

    feats = {k: [] for k in encoders}
    labels, keys, chunk = [], [], []
    dev = torch.device(device)

    def flush():
        batch = _to(module.collate(chunk, np.random.default_rng([seed, len(keys)]), cfg, info, False), dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            for name, net in encoders.items():
                feats[name].append(net.encode(batch).float().cpu().numpy())
        for s in chunk:
            labels.append(s["json"].get(label))
            keys.append(s["__key__"])
        chunk.clear()

    for s in iter_samples(info, split):
        if not isinstance(s.get("json"), dict):
            raise InputError(info.root, f"sample {s['__key__']} of {split} has no json metadata")
        if not keys and not chunk and label not in s["json"]:
            avail = ", ".join(sorted(k for k, v in s["json"].items() if isinstance(v, str)))
            raise InputError(Path(info.root) / "_info.json",
                             f"samples have no {label!r} label (text fields: {avail})")
        chunk.append(s)
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in feats.items()}, labels, keys


def _build(module, cfg, info, state=None, seed=0, *, device, where=None):
    torch.manual_seed(seed)
    net = module.build_model(cfg, info)
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(where, f"weights do not fit this dataset's model: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval().requires_grad_(False)


def probe(data, checkpoint=None, label: str = "stratum", *, model: str | None = None, config: str | None = None,
          scratch: bool = False, baseline: bool = True, out=None, seed: int = 0, batch_size: int | None = None,
          device=None, l2: float = 1e-3, holdout_fraction: float = 0.25) -> dict:
    """Probe the encoder of ``checkpoint`` (and a random-init one, ``baseline``) on ``label`` of ``data``.

    ``scratch=True`` (or no checkpoint): only the random-init encoder of ``model``/``config``
    (defaults: the kind's model, ``tiny``). Writes the result as JSON to ``out`` (default:
    ``probe.json`` next to the checkpoint, or ``runs/<build folder>-scratch-<model>-<config>/probe.json``) and
    returns it.
    """
    from .loop import load_checkpoint, resolve_device

    info = DatasetInfo.from_folder(data)
    ckpt = None
    if checkpoint is not None and not scratch:
        ckpt = load_checkpoint(checkpoint)
        if model is not None and model != ckpt["model_name"]:
            raise InputError(checkpoint, f"is a {ckpt['model_name']} checkpoint, not {model}")
        if config is not None and config != ckpt.get("config_name"):
            raise InputError(checkpoint, f"was trained with config {ckpt.get('config_name')!r}, not {config!r}")
        model, cfg, config = ckpt["model_name"], ckpt["config"], ckpt.get("config_name", "custom")
    else:
        model = model or DEFAULT_MODEL.get(info.kind)
        config = config or "tiny"
        try:
            cfg = get_config(model, config)
        except ValueError as exc:
            raise InputError(None, str(exc)) from None
    module = get_model_module(model)
    if module.KIND != info.kind:
        raise InputError(Path(info.root) / "manifest.json",
                         f"model {model} encodes {module.KIND} data but this dataset is {info.kind}")
    cfg = with_dataset_statistics(module, cfg, info)
    dev = resolve_device(device)
    encoders = {}
    if ckpt is not None:
        encoders["pretrained"] = _build(module, cfg, info, ckpt["model"], seed, device=dev, where=checkpoint)
    if ckpt is None or baseline:
        encoders["scratch"] = _build(module, cfg, info, None, seed, device=dev)
    bs = int(batch_size or cfg.get("batch_size", 8))

    has_val = "validation" in info.splits and info.num_samples("validation") > 0
    kw = {"batch_size": bs, "device": dev, "seed": seed}
    tr_f, tr_y, _ = encode_split(encoders, module, cfg, info, "train", label, **kw)
    if has_val:
        he_f, he_y, _ = encode_split(encoders, module, cfg, info, "validation", label, **kw)
        heldout = "validation"
    else:
        lab = np.array([y is not None for y in tr_y])
        held = np.zeros(len(tr_y), bool)
        held[lab] = stratified_holdout([y for y in tr_y if y is not None], holdout_fraction, seed)
        he_f = {k: v[held] for k, v in tr_f.items()}
        tr_f = {k: v[~held] for k, v in tr_f.items()}
        he_y = [y for y, h in zip(tr_y, held) if h]
        tr_y = [y for y, h in zip(tr_y, held) if not h]
        heldout = f"train (no validation split: seeded stratified {holdout_fraction:.0%} of train, seed {seed})"

    def labelled(f, y):
        keep = np.array([v is not None for v in y], bool)
        return {k: v[keep] for k, v in f.items()}, [str(v) for v in y if v is not None]

    unlabelled = sum(v is None for v in tr_y) + sum(v is None for v in he_y)
    tr_f, tr_y = labelled(tr_f, tr_y)
    he_f, he_y = labelled(he_f, he_y)
    if not tr_y:
        raise InputError(Path(info.root) / "_info.json", f"no training sample has a {label!r} label")
    classes = sorted(set(tr_y))
    unseen = {c: he_y.count(c) for c in sorted(set(he_y) - set(classes))}
    counts = {c: tr_y.count(c) for c in classes}
    majority = max(classes, key=lambda c: (counts[c], c))
    result = {
        "data": str(info.root), "dataset": info.name, "kind": info.kind, "label": label, "model": model,
        "config": config, "checkpoint": None if ckpt is None else str(checkpoint),
        "checkpoint_step": None if ckpt is None else int(ckpt["step"]), "seed": seed, "heldout": heldout,
        "n_train": len(tr_y), "n_heldout": len(he_y), "unlabelled": int(unlabelled), "classes": classes,
        "train_counts": counts, "unseen_classes": unseen,
        "chance": {"majority_class": majority,
                   "majority_accuracy": float(np.mean(np.asarray(he_y, dtype=object) == majority)) if he_y else None,
                   "uniform_accuracy": 1.0 / len(classes)},
        "encoders": {name: probe_features(tr_f[name], tr_y, he_f[name], he_y, l2=l2) for name in encoders},
    }
    if out is None:
        out = Path(checkpoint).parent / "probe.json" if ckpt is not None else \
            info.run_dir(f"scratch-{model}-{config}") / "probe.json"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    result["out"] = str(out)
    return result


def format_table(result: dict) -> str:
    """A few lines for the terminal: one row per encoder, plus the chance levels."""
    rows = [f"probe {result['label']!r} on {result['dataset']} ({result['n_train']} train / {result['n_heldout']} "
            f"held out: {result['heldout'].split(' (')[0]}; {len(result['classes'])} classes)",
            f"{'encoder':<12} {'accuracy':>9} {'macro F1':>9} {'mIoU':>7}"]
    for name, r in result["encoders"].items():
        rows.append(f"{name:<12} {r['accuracy']:>9.3f} {r['macro_f1']:>9.3f} {r['miou']:>7.3f}")
    ch = result["chance"]
    if ch["majority_accuracy"] is not None:
        rows.append(f"{'majority':<12} {ch['majority_accuracy']:>9.3f}")
    if result["unseen_classes"]:
        rows.append(f"held-out classes absent from train (counted as errors): {result['unseen_classes']}")
    return "\n".join(rows)
