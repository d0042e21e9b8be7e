"""Evaluation metrics as exact sums: updated per batch in Spark tasks, merged and finished on the driver.

A Spark task builds a `ClassificationSums` or `RegressionSums`, calls `update(labels, predictions)`
once per batch and returns `to_json()`; the driver rebuilds each with `from_json`, folds them with
`merge` and calls `compute()`. Nothing is sampled or binned away, and every sum is exact:

- counts are integers;
- float sums (losses, confidences, label moments) are integers in units of 2**-1127, so any float64
  is a whole number of units and adding them never rounds (squares are split into exact parts);
- ROC and PR curves keep one row per distinct positive-class score with its positive and negative
  counts (float32 model outputs repeat a lot, and it is never more rows than examples).

So a split merged from any partitioning, in any order, gives bit-identical results, and each figure
agrees with scikit-learn's on the same predictions (tests/unit/test_eval_metrics.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from dltool.errors import ConfigError, DltoolError

__all__ = [
    "ECE_BINS",
    "ClassificationSums",
    "RegressionSums",
    "best_checkpoint",
    "from_json",
    "headline",
    "higher_is_better",
]

ECE_BINS = 15
CLIP = 1e-7  # the training loss clips probabilities the same way (Keras), so eval and train losses agree
REGRESSION_LOSSES = ("mse", "mae", "huber")
_UNIT = 1127  # exact sums count units of 2**-1127: 53 bits below the smallest float64 step, so any float64 is whole
_GROUP = 4096  # more than the largest exponent offset (2098), so (group, exponent) packs into one key
_CHUNK = 1 << 25  # values per bincount pass: 2**25 parts below 2**27 sum exactly in float64
_EDGES = np.linspace(0.0, 1.0, ECE_BINS + 1)
_LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "ece")


def _exact_sums(values: np.ndarray, groups: np.ndarray, size: int) -> list[int]:
    """Σ values per group (0 <= group < size) as exact integers in units of 2**-1127, vectorised.

    A float64 is m * 2**e with 53-bit m; m splits into whole halves of 27 and 26 bits, which
    np.bincount adds per (group, e) without rounding; Python ints then shift and add those few sums.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise DltoolError("a metric sum overflowed: predictions or labels are too large to score")
    totals = [0] * size
    for start in range(0, values.size, _CHUNK):
        mantissa, exponent = np.frexp(values[start:start + _CHUNK])
        scaled = mantissa * 2.0**27
        high = np.floor(scaled)
        low = (scaled - high) * 2.0**26  # whole, in [0, 2**26); every step here is exact
        key = groups[start:start + _CHUNK] * _GROUP + (exponent + 1074)
        high = np.bincount(key, weights=high, minlength=size * _GROUP)
        low = np.bincount(key, weights=low, minlength=size * _GROUP)
        for k in np.flatnonzero((high != 0) | (low != 0)).tolist():
            group, shift = divmod(k, _GROUP)
            totals[group] += ((int(high[k]) << 26) + int(low[k])) << shift
    return totals


def _square_terms(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 terms (and their groups) that add up to each x² exactly, for _exact_sums.

    x = high + low with 26-bit halves (Veltkamp), so high², 2·high·low and low² are exact products;
    low is 0 for float32 data, which then costs one term per value. Exact unless a square underflows
    (|x| < 1e-146) or overflows.
    """
    scaled = x * 134217729.0  # 2**27 + 1
    high = scaled - (scaled - x)
    low = x - high
    split = low != 0
    terms = np.concatenate([high * high, 2.0 * high[split] * low[split], low[split] * low[split]])
    return terms, np.concatenate([groups, groups[split], groups[split]])


def _mean(units: int, count: int) -> float:
    """An exact sum divided by a count, rounded once."""
    return units / (count << _UNIT)


def _exact(units: int) -> Fraction:
    return Fraction(units, 1 << _UNIT)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator = numerator.astype(np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DltoolError(f"{name} hold {bad} non-finite value(s) (NaN or inf): the model diverged or is damaged")
    return values


def _same(kind: str, mine, theirs) -> None:
    if mine != theirs:
        raise DltoolError(f"cannot merge metric sums with different {kind}: {mine} vs {theirs}")


def _true_class_rank(y: np.ndarray, p: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """0 where the true class ranks first, and so on, with scikit-learn's top_k_accuracy_score rules."""
    if p.shape[1] == 2:  # its binary rule: class 1 when that score passes 0.5; top-2 always hits
        return ((p[:, 1] > 0.5) != (y == 1)).astype(np.int64)
    # Its multiclass tie rule: among equal scores the higher class index ranks first.
    above = p > p_true[:, None]
    tied_after = (p == p_true[:, None]) & (np.arange(p.shape[1]) > y[:, None])
    return above.sum(axis=1) + tied_after.sum(axis=1)


class ClassificationSums:
    """Exact sums for a classifier that outputs one probability per class."""

    task = "classification"

    def __init__(self, class_names: Sequence[str], top_k: Sequence[int] = ()):
        classes = len(class_names)
        if classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, the vocabulary has {list(class_names)}")
        for k in top_k:
            if not 1 <= k <= classes:
                raise ConfigError(f"top-{k} accuracy: k must be between 1 and the {classes} classes")
        self.class_names = [str(name) for name in class_names]
        self.top_k = sorted({int(k) for k in top_k})
        self.examples = 0
        self.loss = 0  # units of 2**-1127
        self.top_k_hits = [0] * len(self.top_k)
        self.confusion = np.zeros((classes, classes), np.int64)  # rows: true class, columns: predicted
        self.bin_count = np.zeros(ECE_BINS, np.int64)
        self.bin_correct = np.zeros(ECE_BINS, np.int64)
        self.bin_confidence = [0] * ECE_BINS  # units of 2**-1127
        # Binary tasks: the distinct positive-class scores, ascending, with the examples that scored them.
        self.scores = np.zeros(0, np.float64)
        self.positives = np.zeros(0, np.int64)
        self.negatives = np.zeros(0, np.int64)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def update(self, labels: np.ndarray, probs: np.ndarray) -> ClassificationSums:
        """Add a batch: labels int [n] (class indices), probs [n, classes]."""
        y, p = self._check(labels, probs)
        n, c = p.shape
        if not n:
            return self
        rows = np.arange(n)
        p_true = p[rows, y]
        predicted = p.argmax(axis=1)
        confidence = p[rows, predicted]
        correct = predicted == y
        self.examples += n
        self.confusion += np.bincount(y * c + predicted, minlength=c * c).reshape(c, c)
        if self.top_k:
            rank = _true_class_rank(y, p, p_true)
            self.top_k_hits = [h + int(np.count_nonzero(rank < k)) for h, k in zip(self.top_k_hits, self.top_k)]
        # Bin b holds confidences in (edges[b], edges[b + 1]], the usual ECE binning.
        bins = np.clip(np.searchsorted(_EDGES, confidence, side="left") - 1, 0, ECE_BINS - 1)
        self.bin_count += np.bincount(bins, minlength=ECE_BINS)
        self.bin_correct += np.bincount(bins[correct], minlength=ECE_BINS)
        loss = -np.log(np.clip(p_true, CLIP, 1.0 - CLIP))
        groups = np.concatenate([np.zeros(n, np.int64), 1 + bins])
        sums = _exact_sums(np.concatenate([loss, confidence]), groups, 1 + ECE_BINS)
        self.loss += sums[0]
        self.bin_confidence = [a + b for a, b in zip(self.bin_confidence, sums[1:])]
        if c == 2:
            scores, where = np.unique(p[:, 1], return_inverse=True)
            positives = np.bincount(where[y == 1], minlength=scores.size)
            self._add_scores(scores, positives, np.bincount(where, minlength=scores.size) - positives)
        return self

    def merge(self, other: ClassificationSums) -> ClassificationSums:
        """Add another partial result into this one (in place) and return this one."""
        _same("tasks", self.task, other.task)
        _same("class names", self.class_names, other.class_names)
        _same("top-k lists", self.top_k, other.top_k)
        self.examples += other.examples
        self.loss += other.loss
        self.top_k_hits = [a + b for a, b in zip(self.top_k_hits, other.top_k_hits)]
        self.confusion += other.confusion
        self.bin_count += other.bin_count
        self.bin_correct += other.bin_correct
        self.bin_confidence = [a + b for a, b in zip(self.bin_confidence, other.bin_confidence)]
        self._add_scores(other.scores, other.positives, other.negatives)
        return self

    def to_json(self) -> dict:
        """Plain lists and ints (some ints are big: exact sums), for pickling or JSON from a Spark task."""
        return {
            "task": self.task,
            "class_names": self.class_names,
            "top_k": self.top_k,
            "examples": self.examples,
            "loss": self.loss,
            "top_k_hits": self.top_k_hits,
            "confusion": self.confusion.tolist(),
            "bin_count": self.bin_count.tolist(),
            "bin_correct": self.bin_correct.tolist(),
            "bin_confidence": self.bin_confidence,
            "scores": self.scores.tolist(),
            "positives": self.positives.tolist(),
            "negatives": self.negatives.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict) -> ClassificationSums:
        sums = cls(data["class_names"], data["top_k"])
        sums.examples, sums.loss = data["examples"], data["loss"]
        sums.top_k_hits = list(data["top_k_hits"])
        sums.confusion = np.asarray(data["confusion"], np.int64).reshape(sums.classes, sums.classes)
        sums.bin_count = np.asarray(data["bin_count"], np.int64)
        sums.bin_correct = np.asarray(data["bin_correct"], np.int64)
        sums.bin_confidence = list(data["bin_confidence"])
        sums.scores = np.asarray(data["scores"], np.float64)
        sums.positives = np.asarray(data["positives"], np.int64)
        sums.negatives = np.asarray(data["negatives"], np.int64)
        return sums

    def compute(self) -> dict:
        """The figures, under stable keys (None where a figure is undefined):

        task, examples, loss (mean cross-entropy), accuracy, top_k {"K": accuracy},
        per_class {name: {precision, recall, f1, support}}, macro and weighted {precision, recall, f1},
        confusion_matrix (rows: true class, columns: predicted), ece (15 equal-width confidence bins),
        calibration {edges, count, confidence, accuracy} per bin, and for two classes roc_auc and
        pr_auc (average precision) of class 1, None when the split has only one of the two classes.
        """
        n = self.examples
        if not n:
            raise ConfigError("no examples to score: the split is empty (choose another with --split)")
        cm = self.confusion
        hits = np.diag(cm)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        precision, recall = _ratio(hits, predicted), _ratio(hits, support)
        seen = (support + predicted) > 0  # never empty: the split has examples
        f1 = _ratio(2 * hits, support + predicted)  # 2tp / (2tp + fp + fn), as scikit-learn computes it
        result = {
            "task": self.task,
            "examples": n,
            "loss": _mean(self.loss, n),
            "accuracy": int(hits.sum()) / n,
            "top_k": {str(k): h / n for k, h in zip(self.top_k, self.top_k_hits)},
            "per_class": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(self.class_names, precision, recall, f1, support)
            },
            # over the classes the split holds or the model predicts, as scikit-learn's report (a class neither
            # held nor predicted has no precision or recall to average: counting it as 0 would halve a 2-class score)
            "macro": {key: float(np.average(values[seen])) for key, values in
                      (("precision", precision), ("recall", recall), ("f1", f1))},
            "weighted": {"precision": float(np.average(precision, weights=support)),
                         "recall": float(np.average(recall, weights=support)),
                         "f1": float(np.average(f1, weights=support))},
            "confusion_matrix": cm.tolist(),
            "ece": float(sum(abs(c - _exact(s)) for c, s in zip(self.bin_correct.tolist(), self.bin_confidence)) / n),
            "calibration": {
                "edges": _EDGES.tolist(),
                "count": self.bin_count.tolist(),
                "confidence": [_mean(s, c) if c else None for s, c in zip(self.bin_confidence, self.bin_count.tolist())],
                "accuracy": [h / c if c else None for h, c in zip(self.bin_correct.tolist(), self.bin_count.tolist())],
            },
        }
        if self.classes == 2:
            result["roc_auc"], result["pr_auc"] = self._curves()
        return result

    def _check(self, labels, probs) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(probs)
        c = self.classes
        if p.ndim != 2 or p.shape[1] != c:
            raise ConfigError(
                f"predictions have shape {list(p.shape)}, expected [rows, {c}] for the {c} classes of the dataset: "
                "the checkpoint was trained on another label vocabulary"
            )
        y = np.asarray(labels).reshape(-1)
        if y.size != p.shape[0]:
            raise DltoolError(f"{y.size} labels for {p.shape[0]} predictions")
        if y.size and y.dtype.kind not in "iu":
            raise ConfigError(f"labels are {y.dtype}, not class indices: is this a regression dataset?")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= c):
            bad = int(y.min() if y.min() < 0 else y.max())
            raise ConfigError(f"label {bad} is outside the {c} classes of the vocabulary: the dataset and model disagree")
        p = _finite("predictions", p)
        if p.size and (p.min() < 0.0 or p.max() > 1.0):
            raise ConfigError(
                f"predictions run from {p.min():g} to {p.max():g}, not probabilities: "
                "the checkpoint's output layer is not the softmax head dltool builds"
            )
        return y, p

    def _add_scores(self, scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> None:
        if not scores.size:
            return
        merged = np.union1d(self.scores, scores)
        mine, theirs = np.searchsorted(merged, self.scores), np.searchsorted(merged, scores)

        def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            total = np.zeros(merged.size, np.int64)
            total[mine] += a  # scores are distinct within each side, so no index repeats
            total[theirs] += b
            return total

        self.positives, self.negatives = combine(self.positives, positives), combine(self.negatives, negatives)
        self.scores = merged

    def _curves(self) -> tuple[float | None, float | None]:
        """ROC AUC and average precision of class 1; None when the split lacks positives or negatives."""
        tps = np.cumsum(self.positives[::-1])  # thresholds from the highest score down
        fps = np.cumsum(self.negatives[::-1])
        if not tps.size or not tps[-1] or not fps[-1]:
            return None, None
        tpr = np.r_[0, tps] / tps[-1]
        fpr = np.r_[0, fps] / fps[-1]
        roc_auc = float(np.trapezoid(tpr, fpr))  # ties make diagonal steps: half credit, as scikit-learn
        precision = tps / (tps + fps)
        average_precision = float(np.sum(np.diff(tpr) * precision))  # Σ (R_i - R_i-1) P_i, scikit-learn's step rule
        return roc_auc, average_precision


class RegressionSums:
    """Exact sums for a regressor with one output per example."""

    task = "regression"

    def __init__(self, loss: str = "mse"):
        if loss not in REGRESSION_LOSSES:
            raise ConfigError(f"regression loss {loss!r} is not one of {', '.join(REGRESSION_LOSSES)}")
        self.loss_name = loss
        self.examples = 0
        # Units of 2**-1127: Σy, Σy², Σ(y-p)², Σ|y-p|, Σ huber(y-p).
        self.sum_y = self.sum_y2 = self.squared_error = self.abs_error = self.huber = 0

    def update(self, labels: np.ndarray, predictions: np.ndarray) -> RegressionSums:
        """Add a batch: labels float [n], predictions [n] or [n, 1]."""
        p = np.asarray(predictions)
        if p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        if p.ndim != 1:
            raise ConfigError(f"predictions have shape {list(p.shape)}, expected [rows] or [rows, 1] for a regression")
        y = np.asarray(labels).reshape(-1)
        if y.size != p.size:
            raise DltoolError(f"{y.size} labels for {p.size} predictions")
        y, p = _finite("labels", y), _finite("predictions", p)
        if not y.size:
            return self
        n = y.size
        diff = y - p
        size = np.abs(diff)
        plain = [y, size]  # groups 0 Σy and 1 Σ|d|; 2 Σhuber (only for that loss); 3 Σy² and 4 Σd²
        if self.loss_name == "huber":
            plain.append(np.where(size <= 1.0, 0.5 * diff * diff, size - 0.5))  # delta 1, as the training loss
        self.examples += n
        squares, square_groups = _square_terms(np.concatenate([y, diff]), np.repeat(np.arange(3, 5), n))
        groups = np.concatenate([np.repeat(np.arange(len(plain)), n), square_groups])
        sums = _exact_sums(np.concatenate([*plain, squares]), groups, 5)
        self.sum_y += sums[0]
        self.abs_error += sums[1]
        self.huber += sums[2]
        self.sum_y2 += sums[3]
        self.squared_error += sums[4]
        return self

    def merge(self, other: RegressionSums) -> RegressionSums:
        """Add another partial result into this one (in place) and return this one."""
        _same("tasks", self.task, other.task)
        _same("losses", self.loss_name, other.loss_name)
        self.examples += other.examples
        self.sum_y += other.sum_y
        self.sum_y2 += other.sum_y2
        self.squared_error += other.squared_error
        self.abs_error += other.abs_error
        self.huber += other.huber
        return self

    def to_json(self) -> dict:
        """Plain ints (big ones: exact sums), for pickling or JSON from a Spark task."""
        keys = ("examples", "sum_y", "sum_y2", "squared_error", "abs_error", "huber")
        return {"task": self.task, "loss": self.loss_name, **{key: getattr(self, key) for key in keys}}

    @classmethod
    def from_json(cls, data: dict) -> RegressionSums:
        sums = cls(data["loss"])
        for key in ("examples", "sum_y", "sum_y2", "squared_error", "abs_error", "huber"):
            setattr(sums, key, data[key])
        return sums

    def compute(self) -> dict:
        """{task, examples, loss, mae, mse, rmse, r2}; r2 is None below 2 examples, as it is undefined."""
        n = self.examples
        if not n:
            raise ConfigError("no examples to score: the split is empty (choose another with --split)")
        mse = _mean(self.squared_error, n)
        loss = {"mse": mse, "mae": _mean(self.abs_error, n), "huber": _mean(self.huber, n)}[self.loss_name]
        # Exact rationals: Σy² - (Σy)²/n cancels badly in floats when the mean is large against the spread.
        total = _exact(self.sum_y2) - _exact(self.sum_y) ** 2 / n
        error = _exact(self.squared_error)
        if n < 2:
            r2 = None
        elif total == 0:
            r2 = 1.0 if error == 0 else 0.0  # scikit-learn's force_finite
        else:
            r2 = float(1 - error / total)
        return {"task": self.task, "examples": n, "loss": loss, "mae": _mean(self.abs_error, n), "mse": mse,
                "rmse": math.sqrt(mse), "r2": r2}


def from_json(data: dict) -> ClassificationSums | RegressionSums:
    """Rebuild the sums a Spark task returned with to_json()."""
    kinds = {"classification": ClassificationSums, "regression": RegressionSums}
    if data.get("task") not in kinds:
        raise DltoolError(f"not metric sums: task {data.get('task')!r}")
    return kinds[data["task"]].from_json(data)


def headline(result: dict) -> dict[str, float]:
    """The scalar figures of a computed result under flat names, for tables, --fail-under and picking the best.

    Classification: loss, accuracy, top_K_accuracy, macro_precision, macro_recall, macro_f1,
    weighted_precision, weighted_recall, weighted_f1, ece, and roc_auc, pr_auc when defined.
    Regression: loss, mae, mse, rmse, and r2 when defined.
    """
    if result["task"] == "regression":
        flat = {key: result[key] for key in ("loss", "mae", "mse", "rmse", "r2")}
    else:
        flat = {"loss": result["loss"], "accuracy": result["accuracy"]}
        flat.update({f"top_{k}_accuracy": value for k, value in result["top_k"].items()})
        for average in ("macro", "weighted"):
            flat.update({f"{average}_{key}": value for key, value in result[average].items()})
        flat["ece"] = result["ece"]
        flat.update({key: result[key] for key in ("roc_auc", "pr_auc") if key in result})
    return {key: value for key, value in flat.items() if value is not None}


def higher_is_better(metric: str) -> bool:
    return metric not in _LOWER_IS_BETTER


def best_checkpoint(results: Sequence[dict], metric: str) -> int:
    """The index of the best result by a headline metric (losses and errors down, the rest up)."""
    values = [headline(result).get(metric) for result in results]
    scored = [(value, i) for i, value in enumerate(values) if value is not None]
    if not scored:
        names = ", ".join(sorted(headline(results[0]))) if results else "none"
        raise ConfigError(f"cannot pick the best checkpoint by {metric!r}: no result has it; use one of {names}")
    if higher_is_better(metric):
        return max(scored, key=lambda pair: (pair[0], -pair[1]))[1]  # ties: the earliest checkpoint
    return min(scored)[1]
