"""Typed experiment configuration loaded from YAML."""

from dltool.config.loader import config_hash, load_config, parse_config
from dltool.config.models import (
    AudioReaderConfig,
    CsvReaderConfig,
    DatasetSettings,
    ExperimentConfig,
    ImageReaderConfig,
    SparkSettings,
)

__all__ = [
    "AudioReaderConfig",
    "CsvReaderConfig",
    "DatasetSettings",
    "ExperimentConfig",
    "ImageReaderConfig",
    "SparkSettings",
    "config_hash",
    "load_config",
    "parse_config",
]
