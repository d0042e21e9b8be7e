"""The tune: section without Spark: distributions, the space checked against train settings with YAML lines,
dotted settings applied (list indices too), Optuna distributions and the best config written back."""

from __future__ import annotations

import pytest
import yaml

from dltool.config.loader import apply_settings, parse_config
from dltool.errors import ConfigError

BASE = {
    "name": "t",
    "dataset": {"path": "/tmp/d"},
    "train": {"run_dir": "/tmp/r", "model": {"layers": [{"Dense": {"units": 32}}, {"Dropout": {"rate": 0.1}}]}},
}


def parse(tune: dict):
    return parse_config(yaml.safe_dump({**BASE, "tune": tune}, sort_keys=False), source="c.yaml", check_tune=True)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"uniform": [0.5, 0.1]}, "uniform needs low < high"),
        ({"loguniform": [0.0, 0.1]}, "loguniform needs low < high and low > 0"),
        ({"int": [1.5, 4]}, "int needs [low, high] (integers)"),
        ({"choice": []}, "choice needs a non-empty list"),
        ({"uniform": [0, 1], "choice": [1]}, "give exactly one of uniform, loguniform, int, choice"),
        ({"normal": [0, 1]}, "give exactly one of"),
    ],
)
def test_a_bad_distribution_names_its_key(spec, message):
    with pytest.raises(ConfigError) as error:
        parse({"space": {"train.optimizer.learning_rate": spec}})
    assert "tune" in str(error.value) and message in str(error.value)
    assert "train.optimizer.learning_rate" in str(error.value)


def test_only_train_settings_and_grid_needs_choices_and_enqueue_keys_are_in_the_space():
    with pytest.raises(ConfigError, match="only train.\\* settings can be searched"):
        parse({"space": {"dataset.path": {"choice": ["/a", "/b"]}}})
    with pytest.raises(ConfigError, match="sampler grid: every space entry must be a choice list"):
        parse({"sampler": "grid", "space": {"train.epochs": {"int": [1, 3]}}})
    with pytest.raises(ConfigError, match=r"enqueue\[0\]: \['train.epochs'\] not in the space"):
        parse({"space": {"train.optimizer.learning_rate": {"uniform": [0.1, 0.2]}}, "enqueue": [{"train.epochs": 3}]})


def test_every_drawable_value_must_fit_its_setting_with_the_yaml_line():
    text = yaml.safe_dump({**BASE, "tune": {"space": {"train.epochs": {"choice": [5, 0]}}}}, sort_keys=False)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "train.epochs" in row)
    assert parse_config(text, source="c.yaml").tune.space  # train and the other verbs do not check the space
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="c.yaml", check_tune=True)
    assert str(error.value) == (
        f"c.yaml:{line}: tune.space.train.epochs: 0 does not fit train.epochs: Input should be greater than or equal to 1"
    )
    with pytest.raises(ConfigError, match="'7' is not an index of a list of 2"):
        parse({"space": {"train.model.layers.7.Dense.units": {"choice": [8]}}})
    # a free-form map (a factory's or optimizer's args) takes any key
    config = parse({"space": {"train.optimizer.args.momentum": {"uniform": [0.0, 0.9]}}, "pruner": "none"})
    assert config.tune.pruner.type == "none" and config.tune.sampler == "tpe"


def test_settings_apply_through_maps_and_list_indices_without_touching_the_original():
    train = {"epochs": 3, "model": {"layers": [{"Dense": {"units": 32}}, {"Dropout": {"rate": 0.1}}]}}
    changed = apply_settings(train, {"train.model.layers.1.Dropout.rate": 0.4, "train.optimizer.learning_rate": 0.01,
                                     "train.epochs": 9})  # fmt: skip
    assert changed["model"]["layers"][1] == {"Dropout": {"rate": 0.4}} and changed["optimizer"] == {"learning_rate": 0.01}
    assert changed["epochs"] == 9 and train["epochs"] == 3 and train["model"]["layers"][1]["Dropout"]["rate"] == 0.1


def test_optuna_distributions_and_the_best_config():
    optuna = pytest.importorskip("optuna")
    from dltool.tune import _best_config, _decoded, _distributions

    config = parse({"space": {
        "train.optimizer.learning_rate": {"loguniform": [1e-4, 1e-2]},
        "train.epochs": {"int": [10, 40], "step": 10},
        "train.label_smoothing": {"uniform": [0.0, 0.2]},
        "train.metrics": {"choice": [["accuracy"], ["accuracy", "top_3_accuracy"]]},
    }})  # fmt: skip
    made = _distributions(optuna, config.tune.space)
    assert made["train.optimizer.learning_rate"].log and made["train.epochs"].step == 10
    assert made["train.metrics"].choices == ('["accuracy"]', '["accuracy", "top_3_accuracy"]')  # lists stored as JSON
    assert _decoded("[32, 64]") == [32, 64] and _decoded("adam") == "adam"
    best = _best_config(config, {"train.optimizer.learning_rate": 0.002, "train.model.layers.0.Dense.units": 64})
    assert best["train"]["optimizer"] == {"learning_rate": 0.002}
    assert best["train"]["model"]["layers"][0] == {"Dense": {"units": 64}} and best["train"]["run_dir"] == "/tmp/r"
    assert "epochs" not in best["train"]  # what the user did not set stays unset
    reparsed = parse_config(yaml.safe_dump(best), source="best.yaml")
    assert reparsed.train.optimizer.learning_rate == 0.002
