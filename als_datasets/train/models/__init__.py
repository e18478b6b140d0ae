"""Model registry of the pre-training harness.

Each model module provides:

* ``KIND`` — the dataset kind it trains on (``als``, ``satellite`` or ``dem``);
* ``CONFIGS`` — ``{"tiny": {...}, "base": {...}}``: model and optimisation hyper-parameters
  (``batch_size``, ``lr`` or ``blr``, ``weight_decay``, ``betas``, ``warmup_steps`` or
  ``warmup_epochs``, ``schedule``, ``clip_grad``...);
* ``build_model(config: dict, info: DatasetInfo) -> torch.nn.Module`` whose
  ``forward(batch) -> dict`` returns ``"loss"`` (scalar tensor) and other scalar metrics, and
  ``encode(batch) -> Tensor (B, D)``: pooled features of the unmasked input (for the probe);
* optionally ``dataset_statistics(info, config) -> dict``: config values measured on the
  dataset once before training or probing (:func:`with_dataset_statistics`);
* ``collate(samples, rng, config, info, train=True) -> dict[str, Tensor]`` — runs in the loader
  worker on decoded samples (``{"__key__", "json": dict, "<name>.npy": ndarray}``); ALL
  randomness (crops, masks) comes from ``rng`` (a ``numpy.random.Generator`` the loader seeds from
  seed, epoch, rank, worker and batch number), so a forward pass is a deterministic function of
  the batch and resumed runs see the same batches. ``train=False``: deterministic view, no mask.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODELS = {
    "bev-mae": "als_datasets.train.models.bev_mae",
    "satmae": "als_datasets.train.models.satmae",
    "dem-mae": "als_datasets.train.models.dem_mae",
}


def get_model_module(name: str) -> ModuleType:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    return importlib.import_module(MODELS[name])


def get_config(name: str, config: str | dict = "tiny", **overrides) -> dict:
    """The named config of model ``name`` (or a dict), with ``overrides`` applied."""
    mod = get_model_module(name)
    if isinstance(config, str):
        if config not in mod.CONFIGS:
            raise ValueError(f"model {name!r} has no config {config!r} (choose from {', '.join(mod.CONFIGS)})")
        config = mod.CONFIGS[config]
    return {**config, **{k: v for k, v in overrides.items() if v is not None}}


def with_dataset_statistics(module: ModuleType, config: dict, info) -> dict:
    """``config`` plus what the model measures on the dataset before training (its optional
    ``dataset_statistics(info, config) -> dict``, e.g. DEM MAE's relief scale), so that collate
    in every worker, the checkpoint and ``config.json`` see the same values."""
    fn = getattr(module, "dataset_statistics", None)
    return {**config, **fn(info, config)} if fn is not None else config
