"""Training losses and metrics as exact sums, so workers can add them up with one all-reduce."""

from __future__ import annotations

import math
import re

from dltool.errors import ConfigError

CLASS_METRICS = ("accuracy", "top_k_accuracy")
REGRESSION_METRICS = ("mae", "mse", "rmse")
_TOP_K = re.compile(r"^top_(\d+)_accuracy$")


def resolve_metrics(names: list[str], label_kind: str, classes: int) -> list[str]:
    """The config's metric names checked against the task; `auto` is accuracy or mae."""
    resolved: list[str] = []
    for i, name in enumerate(names):
        if name == "auto":
            name = "accuracy" if label_kind == "class" else "mae"
        top_k = _TOP_K.match(name)
        if label_kind == "class" and (name == "accuracy" or top_k):
            if top_k and not 1 <= int(top_k.group(1)) <= classes:
                raise ConfigError(f"train.metrics[{i}]: {name}: k must be between 1 and the {classes} classes")
        elif label_kind == "regression" and name in REGRESSION_METRICS:
            pass
        else:
            allowed = "accuracy, top_K_accuracy" if label_kind == "class" else ", ".join(REGRESSION_METRICS)
            raise ConfigError(f"train.metrics[{i}]: unknown metric {name!r} for a {label_kind} label; use {allowed}")
        if name not in resolved:
            resolved.append(name)
    return resolved


def loss_name(loss: str, label_kind: str) -> str:
    if loss == "auto":
        return "sparse_categorical_crossentropy" if label_kind == "class" else "mse"
    if (loss == "sparse_categorical_crossentropy") != (label_kind == "class"):
        raise ConfigError(f"train.loss: {loss} does not fit a {label_kind} label")
    return loss


def sum_names(metrics: list[str]) -> list[str]:
    """The sums a step returns, in order: count and loss first."""
    names = ["count", "loss"]
    for metric in metrics:
        if metric == "accuracy":
            names.append("correct")
        elif _TOP_K.match(metric):
            names.append(metric)
        elif metric in ("mae",):
            names.append("abs_error")
        elif metric in ("mse", "rmse") and "sq_error" not in names:
            names.append("sq_error")
    return names


def per_example_loss_fn(loss: str, classes: int, label_smoothing: float):
    """A TF function (labels, outputs) -> per-example loss; classification outputs are probabilities."""
    import tensorflow as tf

    eps = 1e-7

    def crossentropy(y, p):
        p = tf.clip_by_value(p, eps, 1.0 - eps)
        target = tf.one_hot(tf.cast(y, tf.int32), classes)
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / classes
        return -tf.reduce_sum(target * tf.math.log(p), axis=-1)

    def regression(fn):
        return lambda y, p: fn(tf.cast(y, tf.float32) - tf.reshape(p, [-1]))

    table = {
        "sparse_categorical_crossentropy": crossentropy,
        "mse": regression(tf.square),
        "mae": regression(tf.abs),
        "huber": regression(lambda d: tf.where(tf.abs(d) <= 1.0, 0.5 * d * d, tf.abs(d) - 0.5)),
    }
    return table[loss]


def members_loss(loss_fn, labels, members):
    """The per-example loss of each ensemble member's own prediction (`members`: [batch, members, ...]) under
    `loss_fn` (labels, outputs), averaged over the members."""
    import tensorflow as tf

    count = members.shape[1]
    flat = tf.reshape(members, [-1, *members.shape[2:]])
    return tf.reduce_mean(tf.reshape(loss_fn(tf.repeat(labels, count), flat), [-1, count]), axis=1)


def metric_sums_fn(metrics: list[str]):
    """A TF function (labels, outputs, per-example loss) -> vector of sums named by sum_names()."""
    import tensorflow as tf

    names = sum_names(metrics)

    def sums(y, p, per_example):
        values = []
        for name in names:
            if name == "count":
                values.append(tf.cast(tf.shape(per_example)[0], tf.float32))
            elif name == "loss":
                values.append(tf.reduce_sum(per_example))
            elif name == "correct":
                hit = tf.equal(tf.argmax(p, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
                values.append(tf.reduce_sum(tf.cast(hit, tf.float32)))
            elif name.startswith("top_"):
                k = int(_TOP_K.match(name).group(1))
                hit = tf.math.in_top_k(tf.cast(y, tf.int32), p, k)
                values.append(tf.reduce_sum(tf.cast(hit, tf.float32)))
            else:
                diff = tf.cast(y, tf.float32) - tf.reshape(p, [-1])
                values.append(tf.reduce_sum(tf.abs(diff) if name == "abs_error" else tf.square(diff)))
        return tf.stack(values)

    return sums


def finish(metrics: list[str], sums, prefix: str = "") -> dict[str, float]:
    """Mean loss and metrics from summed values (a sequence in sum_names order)."""
    named = dict(zip(sum_names(metrics), (float(v) for v in sums)))
    count = named["count"]
    if count == 0:
        return {}
    logs = {f"{prefix}loss": named["loss"] / count}
    for metric in metrics:
        if metric == "accuracy":
            value = named["correct"] / count
        elif metric == "mae":
            value = named["abs_error"] / count
        elif metric == "mse":
            value = named["sq_error"] / count
        elif metric == "rmse":
            value = math.sqrt(named["sq_error"] / count)
        else:
            value = named[metric] / count
        logs[f"{prefix}{metric}"] = value
    return logs


def best_epoch_entry(monitor: str, logs: dict, best: dict | None) -> dict | None:
    """The new best-epoch record if this epoch's logs beat `best` (None when they do not).

    Beating means a better monitored value or, on an exact tie, a lower loss on the same
    split: a small validation split saturates accuracy (1.0 from some early epoch on), and
    the first epoch to reach it is rarely the best model.
    """
    value = logs.get(monitor)
    if value is None:
        return None
    tie = "val_loss" if monitor.startswith("val_") else "loss"
    entry = {"epoch": logs["epoch"], "monitor": monitor, "value": value, "tie_loss": logs.get(tie)}
    if best is None or improved(monitor, value, best["value"]):
        return entry
    ties = value == best["value"] and tie != monitor and None not in (entry["tie_loss"], best.get("tie_loss"))
    return entry if ties and entry["tie_loss"] < best["tie_loss"] else None


def improved(monitor: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Whether a monitored value beats the best so far (losses and errors go down, the rest up)."""
    if best is None:
        return True
    return value < best - min_delta if lower_is_better(monitor) else value > best + min_delta


def lower_is_better(metric: str) -> bool:
    """Losses and errors go down; accuracies go up."""
    return any(part in metric for part in ("loss", "mae", "mse", "rmse", "error"))
