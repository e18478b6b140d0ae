"""Dataset-card templates (the top-level ``cards/`` folder, shipped as ``als_datasets.cards``)."""
