"""Eval metric sums: every figure against scikit-learn, and bit-identical results however batches are merged."""

from __future__ import annotations

import itertools
import json
import warnings
from fractions import Fraction

import numpy as np
import pytest
from sklearn import metrics as sk

from dltool.errors import ConfigError, DltoolError
from dltool.evaluate.metrics import (
    ClassificationSums,
    RegressionSums,
    best_checkpoint,
    from_json,
    headline,
)

CLIP = 1e-7


def softmax(rng, n: int, classes: int, dtype=np.float32, sharpness: float = 2.0) -> np.ndarray:
    logits = rng.normal(size=(n, classes)) * sharpness
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def names(classes: int) -> list[str]:
    return [f"c{i}" for i in range(classes)]


def sklearn_classification(y, probs, top_k=()) -> dict:
    """The figures as scikit-learn computes them from the same (float64) predictions."""
    p = np.asarray(probs, np.float64)
    labels = list(range(p.shape[1]))
    predicted = p.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # float32 softmax rows sum to 1 only within ~1e-7
        loss = sk.log_loss(y, y_proba=np.clip(p, CLIP, 1 - CLIP), labels=labels)
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    # macro: over the classes held or predicted (scikit-learn's default labels)
    averages = {
        average: dict(zip(("precision", "recall", "f1"), sk.precision_recall_fscore_support(
            y, predicted, labels=labels if average == "weighted" else None, average=average, zero_division=0)[:3]))
        for average in ("macro", "weighted")
    }
    expected = {
        "examples": len(y),
        "loss": loss,
        "accuracy": sk.accuracy_score(y, predicted),
        "top_k": {str(k): sk.top_k_accuracy_score(y, p[:, 1] if len(labels) == 2 else p, k=k, labels=labels)
                  for k in top_k},
        "per_class": {name: {"precision": pr, "recall": rc, "f1": f, "support": int(s)}
                      for name, pr, rc, f, s in zip(names(len(labels)), precision, recall, f1, support)},
        **averages,
        "confusion_matrix": sk.confusion_matrix(y, predicted, labels=labels).tolist(),
        "ece": reference_ece(y, p)[0],
        "calibration": {"count": reference_ece(y, p)[1]},
    }
    if len(labels) == 2 and 0 < np.sum(y == 1) < len(y):
        expected["roc_auc"] = sk.roc_auc_score(y, p[:, 1])
        expected["pr_auc"] = sk.average_precision_score(y, p[:, 1])
    return expected


def reference_ece(y, p, bins: int = 15) -> tuple[float, list[int]]:
    """Expected calibration error the textbook way, bins (lo, hi] over the top probability; and bin sizes."""
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece, counts = 0.0, []
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        counts.append(int(inside.sum()))
        if inside.any():
            ece += inside.mean() * abs((predicted[inside] == y[inside]).mean() - confidence[inside].mean())
    return ece, counts


def assert_figures(result, expected, where: str = "") -> None:
    """Equal keys, equal ints, floats within 1e-12 relative, through nested dicts and lists."""
    if isinstance(expected, dict):
        assert set(expected) <= set(result), where
        for key, want in expected.items():
            assert_figures(result[key], want, f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(result) == len(expected), where
        for i, (got, want) in enumerate(zip(result, expected)):
            assert_figures(got, want, f"{where}[{i}]")
    else:
        assert result == pytest.approx(float(expected), rel=1e-12, abs=1e-15), where


def score(y, probs, classes, top_k=()):
    return ClassificationSums(names(classes), top_k).update(y, probs).compute()


@pytest.mark.parametrize(("classes", "seed"), [(3, 0), (10, 1), (10, 2), (2, 3)])
def test_classification_matches_sklearn(classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, 3000)
    probs = softmax(rng, 3000, classes)
    top_k = [k for k in (1, 2, 5) if k < classes]
    result = score(y, probs, classes, top_k)
    assert_figures(result, sklearn_classification(y, probs, top_k))
    assert result["task"] == "classification"
    assert ("roc_auc" in result) == (classes == 2)


def test_binary_with_many_tied_scores_matches_sklearn():
    rng = np.random.default_rng(4)
    positive = np.round(rng.random(5000), 1)  # 11 distinct scores: every threshold is a tie
    y = (rng.random(5000) < positive * 0.8 + 0.1).astype(np.int64)
    probs = np.stack([1 - positive, positive], axis=1)
    result = score(y, probs, 2, [1])
    assert_figures(result, sklearn_classification(y, probs, [1]))  # 0.5 itself is a tie at sklearn's threshold
    assert result["roc_auc"] == pytest.approx(sk.roc_auc_score(y, positive), rel=1e-12)
    assert result["pr_auc"] == pytest.approx(sk.average_precision_score(y, positive), rel=1e-12)


def test_binary_without_one_class_has_no_auc():
    probs = np.array([[0.3, 0.7], [0.6, 0.4]])
    result = score(np.array([1, 1]), probs, 2)
    assert result["roc_auc"] is None and result["pr_auc"] is None
    assert headline(result).keys().isdisjoint({"roc_auc", "pr_auc"})


def test_class_never_predicted_and_class_absent_from_labels():
    rng = np.random.default_rng(5)
    probs = softmax(rng, 800, 5)
    probs[:, 2] = 0.0  # class 2 is never predicted
    probs /= probs.sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, 800)  # class 4 never occurs
    result = score(y, probs, 5, [2, 3])
    assert_figures(result, sklearn_classification(y, probs, [2, 3]))
    assert result["per_class"]["c2"]["precision"] == 0.0
    assert result["per_class"]["c4"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.isfinite(result["loss"])  # p = 0 on the true class is clipped, not infinite
    # a class neither held nor predicted is left out of the macro average, not averaged in as 0
    probs[:, 4] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    result = score(y, probs, 5)
    assert_figures(result, sklearn_classification(y, probs))
    per_class = [result["per_class"][f"c{i}"]["f1"] for i in range(4)]
    assert result["macro"]["f1"] == pytest.approx(np.mean(per_class)) and result["per_class"]["c4"]["support"] == 0


def test_perfect_predictions():
    y = np.array([0, 1, 1, 0, 1])
    probs = np.eye(2)[y]
    result = score(y, probs, 2, [1])
    assert result["accuracy"] == result["top_k"]["1"] == result["macro"]["f1"] == 1.0
    assert result["roc_auc"] == result["pr_auc"] == 1.0
    assert result["ece"] == 0.0
    assert result["loss"] == pytest.approx(-np.log(1 - CLIP), rel=1e-12)  # clipped like the training loss
    assert result["confusion_matrix"] == [[2, 0], [0, 3]]


def test_loss_clips_probabilities_like_training():
    result = score(np.array([0, 1]), np.array([[0.0, 1.0], [0.5, 0.5]]), 2)
    assert result["loss"] == pytest.approx((-np.log(CLIP) - np.log(0.5)) / 2, rel=1e-12)


def test_top_k_ties_rank_like_sklearn():
    probs = np.full((6, 4), 0.25)  # every class ties: scikit-learn ranks higher indices first
    y = np.array([0, 1, 2, 3, 3, 2])
    result = score(y, probs, 4, [1, 2, 3])
    for k in (1, 2, 3):
        assert result["top_k"][str(k)] == sk.top_k_accuracy_score(y, probs, k=k, labels=range(4))


def test_ece_matches_reference_on_bin_edges():
    rng = np.random.default_rng(6)
    top = np.concatenate([np.linspace(0, 1, 16)[1:], rng.random(985) * 0.5 + 0.5])  # confidences on every edge
    probs = np.stack([top, 1 - top], axis=1)
    y = rng.integers(0, 2, top.size)
    result = score(y, probs, 2)
    ece, counts = reference_ece(y, probs)
    assert result["ece"] == pytest.approx(ece, rel=1e-12)
    assert result["calibration"]["count"] == counts  # an example on an edge belongs to the bin below it
    assert len(result["calibration"]["edges"]) == 16


def batches(rng, n: int, parts: int = 7) -> list[slice]:
    """Uneven slices of range(n), one of them empty."""
    cuts = np.sort(rng.choice(np.arange(1, n), parts - 2, replace=False))
    bounds = [0, *cuts.tolist(), cuts[-1], n]  # the repeated cut makes an empty batch
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def merged_ways(make, y, predictions, rng):
    """The same split scored whole, and in 7 batches merged forwards, backwards, as a tree and through JSON."""
    parts = [make().update(y[s], predictions[s]) for s in batches(rng, len(y))]
    whole = make().update(y, predictions)
    forwards = make()
    for part in parts:
        forwards.merge(from_json(part.to_json()))
    backwards = make()
    for part in reversed(parts):
        backwards.merge(from_json(json.loads(json.dumps(part.to_json()))))
    level = [from_json(part.to_json()) for part in parts]
    while len(level) > 1:
        level = [level[i].merge(level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return [whole, forwards, backwards, level[0]]


@pytest.mark.parametrize("classes", [2, 6])
def test_classification_batches_merge_to_identical_results(classes):
    rng = np.random.default_rng(7)
    y = rng.integers(0, classes, 2001)
    probs = softmax(rng, 2001, classes)
    top_k = [1, 2] if classes > 2 else [1]
    ways = merged_ways(lambda: ClassificationSums(names(classes), top_k), y, probs, rng)
    results = [way.compute() for way in ways]
    assert all(result == results[0] for result in results)
    assert all(way.to_json() == ways[0].to_json() for way in ways)
    assert_figures(results[0], sklearn_classification(y, probs, top_k))


def test_regression_batches_merge_to_identical_results():
    rng = np.random.default_rng(8)
    y = rng.normal(size=1999) * 50 + 1e3
    pred = y + rng.normal(size=1999)
    ways = merged_ways(lambda: RegressionSums("huber"), y, pred[:, None], rng)
    results = [way.compute() for way in ways]
    assert all(result == results[0] for result in results)


@pytest.mark.parametrize(("dtype", "offset"), [(np.float64, 0.0), (np.float32, 0.0), (np.float64, 1e6)])
def test_regression_matches_sklearn(dtype, offset):
    rng = np.random.default_rng(9)
    y = (rng.normal(size=4000) * 3 + offset).astype(dtype)
    pred = (y + rng.normal(size=4000)).astype(dtype)
    result = RegressionSums().update(y, pred[:, None]).compute()
    y64, pred64 = y.astype(np.float64), pred.astype(np.float64)
    assert result["examples"] == 4000
    assert result["loss"] == result["mse"]
    assert result["mse"] == pytest.approx(sk.mean_squared_error(y64, pred64), rel=1e-12)
    assert result["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y64, pred64)), rel=1e-12)
    assert result["mae"] == pytest.approx(sk.mean_absolute_error(y64, pred64), rel=1e-12)
    assert result["r2"] == pytest.approx(sk.r2_score(y64, pred64), rel=1e-9)


def test_regression_losses_follow_the_training_loss():
    y, pred = np.array([0.0, 1.0, 5.0]), np.array([0.5, 1.0, 2.0])
    assert RegressionSums("mae").update(y, pred).compute()["loss"] == pytest.approx(3.5 / 3)
    assert RegressionSums("huber").update(y, pred).compute()["loss"] == pytest.approx((0.125 + 0 + 2.5) / 3)


def test_r2_edge_cases_follow_sklearn():
    constant = np.full(4, 2.5)
    assert RegressionSums().update(constant, constant).compute()["r2"] == sk.r2_score(constant, constant) == 1.0
    assert RegressionSums().update(constant, constant + 1).compute()["r2"] == sk.r2_score(constant, constant + 1) == 0.0
    assert RegressionSums().update([1.0], [2.0]).compute()["r2"] is None  # undefined for one example


def test_float_sums_are_exact():
    """Sums of values from 1e-320 to 1e300 equal the exact rational sum, whatever the magnitudes."""
    from dltool.evaluate.metrics import _exact_sums, _square_terms

    rng = np.random.default_rng(10)
    values = rng.normal(size=3000) * 10.0 ** rng.integers(-320, 300, 3000)
    values = np.concatenate([values, [5e-324, -5e-324, 0.0, -0.0, 1.7e308, -1.7e308]])
    groups = rng.integers(0, 3, values.size)
    unit = Fraction(1, 2**1127)
    assert [t * unit for t in _exact_sums(values, groups, 3)] == [
        sum(map(Fraction, values[groups == g].tolist())) for g in range(3)
    ]
    small = values[(np.abs(values) < 1e100) & (np.abs(values) > 1e-100)]  # squares neither overflow nor underflow
    terms, term_groups = _square_terms(small, np.zeros(small.size, np.int64))
    assert _exact_sums(terms, term_groups, 1)[0] * unit == sum(Fraction(v) ** 2 for v in small.tolist())


def test_empty_split_is_a_clear_error():
    sums = ClassificationSums(names(3)).update(np.zeros(0, np.int64), np.zeros((0, 3)))  # an empty partition is fine
    with pytest.raises(ConfigError, match="no examples to score"):
        sums.compute()
    with pytest.raises(ConfigError, match="no examples to score"):
        RegressionSums().compute()


@pytest.mark.parametrize(
    ("labels", "probs", "error", "message"),
    [
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ConfigError, r"shape \[2, 2\], expected \[rows, 3\]"),
        ([0, 3], [[0.2, 0.3, 0.5]] * 2, ConfigError, "label 3 is outside the 3 classes"),
        ([0.0, 1.0], [[0.2, 0.3, 0.5]] * 2, ConfigError, "not class indices"),
        ([0, 1], [[0.2, np.nan, 0.5]] * 2, DltoolError, "2 non-finite"),
        ([0, 1], [[-1.5, 3.0, 0.5]] * 2, ConfigError, "from -1.5 to 3, not probabilities"),
        ([0], [[0.2, 0.3, 0.5]] * 2, DltoolError, "1 labels for 2 predictions"),
    ],
)
def test_bad_classification_input_is_named(labels, probs, error, message):
    with pytest.raises(error, match=message):
        ClassificationSums(names(3)).update(np.asarray(labels), np.asarray(probs))


def test_bad_setup_and_mismatched_merges():
    with pytest.raises(ConfigError, match="k must be between 1 and the 3 classes"):
        ClassificationSums(names(3), [4])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ClassificationSums(["only"])
    with pytest.raises(ConfigError, match="regression loss 'hinge'"):
        RegressionSums("hinge")
    with pytest.raises(ConfigError, match=r"expected \[rows\] or \[rows, 1\]"):
        RegressionSums().update([1.0, 2.0], [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(DltoolError, match="different class names"):
        ClassificationSums(names(3)).merge(ClassificationSums(["a", "b", "c"]))
    with pytest.raises(DltoolError, match="different tasks"):
        ClassificationSums(names(3)).merge(RegressionSums())
    with pytest.raises(DltoolError, match="not metric sums"):
        from_json({"task": "ranking"})


def test_headline_names_and_best_checkpoint():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 500)
    good = score(y, np.eye(2)[y] * 0.8 + 0.1, 2, [1])
    bad = score(y, softmax(rng, 500, 2), 2, [1])
    assert set(headline(good)) == {
        "loss", "accuracy", "top_1_accuracy", "macro_precision", "macro_recall", "macro_f1",
        "weighted_precision", "weighted_recall", "weighted_f1", "ece", "roc_auc", "pr_auc",
    }
    assert best_checkpoint([bad, good, good], "accuracy") == 1  # ties go to the earliest
    assert best_checkpoint([bad, good], "loss") == 1
    assert best_checkpoint([good, bad], "ece") == 0
    regression = RegressionSums().update([1.0, 2.0, 3.0], [1.0, 2.5, 3.0]).compute()
    assert set(headline(regression)) == {"loss", "mae", "mse", "rmse", "r2"}
    with pytest.raises(ConfigError, match="no result has it; use one of accuracy"):
        best_checkpoint([good], "mape")
