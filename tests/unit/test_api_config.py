"""The Python API's configs: a path, a dict or an object, with `__` overrides; validated like the file."""

from __future__ import annotations

import os

import pytest

from dltool.api import _config
from dltool.config.loader import load_config
from dltool.errors import ConfigError, InputNotFoundError
from tests.conftest import ROOT

CSV = ROOT / "configs" / "csv.yaml"


def test_a_path_a_dict_and_an_object_give_the_same_config():
    from_file = _config(CSV, {})
    assert from_file.dataset.path == str((ROOT / "out/datasets/churn").resolve())
    data = {"name": "churn", "dataset": {"path": "/data/churn"}, "train": {"run_dir": "runs/churn", "epochs": 3}}
    from_dict = _config(data, {})
    assert from_dict.train.run_dir == os.path.abspath("runs/churn")  # a dict's relative paths: the working directory
    assert data["train"]["run_dir"] == "runs/churn"  # the caller's dict is left as it was
    assert _config(from_file, {}) is from_file


def test_overrides_name_fields_with_double_underscores_and_are_validated():
    config = _config(CSV, {"train__epochs": 3, "dataset__path": "rel/churn", "spark__master": "local[1]"})
    assert config.train.epochs == 3 and config.spark.master == "local[1]"
    assert config.dataset.path == os.path.abspath("rel/churn")  # a local path override is made absolute
    again = _config(config, {"train__epochs": 4})
    assert again.train.epochs == 4 and again.train.model == config.train.model and again.source_dir == config.source_dir
    with pytest.raises(ConfigError, match="train.epochs"):
        _config(load_config(CSV), {"train__epochs": 0})
    with pytest.raises(ConfigError, match="train.epoch: unknown field"):
        _config({"name": "x", "dataset": {"path": "/d"}, "train": {"run_dir": "/r", "epoch": 3}}, {})


def test_a_missing_file_or_a_wrong_kind_of_config_is_one_clear_error():
    with pytest.raises(InputNotFoundError, match="config file not found"):
        _config(ROOT / "configs" / "nope.yaml", {})
    with pytest.raises(ConfigError, match="expected a YAML path, a dict or an ExperimentConfig, got int"):
        _config(42, {})


def test_the_verbs_are_functions_though_their_subpackages_are_imported():
    import dltool
    import dltool.evaluate.score  # noqa: F401
    import dltool.train.run  # noqa: F401
    from dltool import api

    assert dltool.train is api.train and dltool.evaluate is api.evaluate and dltool.load_dataset is api.load_dataset
    with pytest.raises(AttributeError):
        dltool.nothing_here  # noqa: B018


def test_load_dataset_takes_a_path_object_and_names_a_missing_dataset(tmp_path):
    import dltool

    with pytest.raises(InputNotFoundError, match="dataset not found"):
        dltool.load_dataset(tmp_path / "nothing")  # checked before any Spark is started

