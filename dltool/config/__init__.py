"""Typed experiment configuration loaded from YAML."""

import dltool.readers  # noqa: F401  (registers the built-in readers: their sections complete ExperimentConfig)
from dltool.config.loader import config_hash, load_config, parse_config
from dltool.config.models import DatasetSettings, ExperimentConfig, SparkSettings

__all__ = [
    "DatasetSettings",
    "ExperimentConfig",
    "SparkSettings",
    "config_hash",
    "load_config",
    "parse_config",
]
