"""Pre-training harness (DESIGN.md §9): MAE encoders trained on a build's WebDataset shards.

* :mod:`.info` — what a model needs to know about a dataset folder (:class:`DatasetInfo`).
* :mod:`.loader` — deterministic, DDP-safe WebDataset loader (safe decoders only).
* :mod:`.decode` — reading and safe decoding of one shard's members (used by :mod:`.loader`).
* :mod:`.models` — BEV-MAE (point clouds), SatMAE (multispectral), DEM MAE (elevation).
* :mod:`.loop` — the training loop (AdamW + schedule, bf16 autocast on GPU, checkpoints,
  exact resume, JSON-lines metrics, ``torchrun`` DDP); ``python -m als_datasets.train``.
* :mod:`.probe` — frozen-encoder linear probe on a metadata label.

torch is imported only here, never by the dataset builder.
"""
