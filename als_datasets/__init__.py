"""als-datasets: pre-training datasets for geospatial foundation models."""

__version__ = "0.1.0"
SCHEMA_VERSION = "1.0"
