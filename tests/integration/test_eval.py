"""dltool eval on a real local[2] Spark: a tiny churn model trained once, scored and checked against scikit-learn."""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile

import numpy as np
import pytest
import yaml

from dltool.shards.codec import TensorSpec, decode_tensors
from tests.conftest import ROOT, read_split

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVAL_KEYS = {"split", "dataset", "dataset_hash", "run_dir", "checkpoints", "best", "monitor", "fail_under", "passed"}


def cli(command: str, *args):
    """`dltool COMMAND ARGS --json` in-process: the CLI result and its parsed JSON summary."""
    from typer.testing import CliRunner

    from dltool.cli import app

    result = CliRunner().invoke(app, [command, *map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def rounded(value, places: int = 5):
    """Metrics with every float rounded: figures from two runtimes, equal to float32 rounding."""
    if isinstance(value, dict):
        return {k: rounded(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, places) for v in value]
    return round(value, places) if isinstance(value, float) else value


@pytest.fixture(scope="module")
def trained(spark, churn_dataset, tmp_path_factory):
    """A 2-epoch churn run (checkpoints epoch-001 and epoch-002, final model) and its config file."""
    root = tmp_path_factory.mktemp("eval")
    run = root / "run"
    settings = {"run_dir": str(run), "epochs": 2, "global_batch_size": 32, "seed": 7, "workers": 1,
                "monitor": "val_loss", "optimizer": {"name": "adam", "learning_rate": 0.003}}  # fmt: skip
    config = root / "experiment.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "spark": {"master": "local[2]"},
                                      "dataset": {"path": str(churn_dataset)}, "train": settings}))  # fmt: skip
    result, _ = cli("train", config)
    assert result.exit_code == 0, result.output
    return config, run


@pytest.fixture(scope="module")
def default_eval(trained):
    config, _ = trained
    result, summary = cli("eval", config)
    assert result.exit_code == 0, result.output
    return result, summary


def test_default_eval_scores_the_final_model_and_agrees_with_sklearn(trained, churn_dataset, default_eval):
    import keras
    from sklearn import metrics as sk

    _, run = trained
    result, summary = default_eval
    assert EVAL_KEYS <= set(summary) and summary["status"] == "ok" and summary["passed"] is True
    assert summary["split"] == "test" and summary["best"] is None and summary["monitor"] == "loss"
    assert json.loads((run / "eval" / "test" / "eval.json").read_text()) == {
        k: v for k, v in summary.items() if k not in ("status", "exit_code", "eval_dir", "seconds", "quarantined")
    }
    [entry] = summary["checkpoints"]
    assert entry["checkpoint"] == str(run / "model" / "model.keras") and entry["epoch"] == 2
    # Scored by the ONNX copy train wrote and checked beside the model, not by TensorFlow.
    copy = json.loads((run / "model" / "scoring.json").read_text())
    assert copy["runtime"] == "onnxruntime" and copy["rows_checked"] > 0 and copy["max_difference"] <= 1e-5
    assert (run / "model" / "model.onnx").stat().st_size > 0
    assert entry["runtime"] == "onnxruntime" and "model.onnx" in entry["runtime_note"]
    assert "of this process (a local master" in entry["runtime_note"]  # no Spark tasks: see the next test
    assert "scored with onnxruntime" in result.stderr
    got = entry["metrics"]
    assert "accuracy" in result.stderr and "per class" in result.stderr  # the table

    manifest = json.loads((churn_dataset / "_manifest.json").read_text())
    table = read_split(churn_dataset, "test")
    x = decode_tensors(table.column("features"), TensorSpec.from_json(manifest["features"]))
    y = table.column("label").to_numpy()
    probs = keras.models.load_model(run / "model" / "model.keras", compile=False).predict(x, verbose=0)
    probs = probs.astype(np.float64)
    predicted = probs.argmax(axis=1)
    labels = [0, 1]

    assert got["examples"] == len(y) == manifest["splits"]["test"]["rows"]
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, predicted), abs=1e-6)
    with warnings.catch_warnings():  # float32 softmax rows sum to 1 only within 1e-7, and it warns
        warnings.simplefilter("ignore", UserWarning)
        assert got["loss"] == pytest.approx(sk.log_loss(y, probs, labels=labels), abs=1e-6)
    assert got["confusion_matrix"] == sk.confusion_matrix(y, predicted, labels=labels).tolist()
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    for i, name in enumerate(manifest["label"]["vocabulary"]):
        scores = got["per_class"][name]
        assert scores["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert scores["recall"] == pytest.approx(recall[i], abs=1e-6)
        assert scores["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert scores["support"] == support[i]
    for average in ("macro", "weighted"):
        assert got[average]["f1"] == pytest.approx(sk.f1_score(y, predicted, average=average), abs=1e-6)
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(y, probs[:, 1]), abs=1e-6)
    assert got["pr_auc"] == pytest.approx(sk.average_precision_score(y, probs[:, 1]), abs=1e-6)

    png = run / "eval" / "test" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert not (run / "eval" / "test" / "metrics_over_epochs.png").exists()

    # The most confidently wrong rows, by the same predictions: keys, classes, probabilities, and their picture.
    keys = table.column("key").to_pylist()
    wrong = [(float(probs[i, predicted[i]]), keys[i], int(predicted[i])) for i in range(len(y)) if predicted[i] != y[i]]
    wrong.sort(key=lambda w: -w[0])
    names = manifest["label"]["vocabulary"]
    assert [(m["key"], m["predicted"]) for m in summary["mistakes"]] == [(k, names[p]) for _, k, p in wrong[:16]]
    assert [m["probability"] for m in summary["mistakes"]] == pytest.approx([w[0] for w in wrong[:16]], abs=1e-5)
    assert (run / "eval" / "test" / "mistakes.png").read_bytes()[:8] == PNG_SIGNATURE


def test_scoring_in_threads_of_the_driver_equals_scoring_in_spark_tasks(spark, trained, churn_dataset, default_eval):
    """On a local master an ONNX copy is scored in the driver's threads; Spark tasks give the same sums."""
    from dltool.config.loader import load_config
    from dltool.evaluate.score import SCORE_BATCH, score_checkpoints, sums_spec
    from dltool.evaluate.tasks import ScoreJob
    from dltool.storage.fs import open_dataset
    from dltool.storage.manifest import Manifest

    config, run = trained
    train = load_config(config).train
    manifest = Manifest.read(open_dataset(str(churn_dataset)))
    job = ScoreJob(str(churn_dataset), manifest, "test", sums_spec(train, "class", list(manifest.label.vocabulary)),
                   (), (str(run / "model" / "model.onnx"),), SCORE_BATCH, 0)  # fmt: skip
    in_tasks, wrong_in_tasks = score_checkpoints(spark, job, 2, progress=False)
    in_threads, wrong_in_threads = score_checkpoints(None, job, 2, progress=False)
    assert in_threads == in_tasks and in_threads[0]["examples"] == manifest.splits["test"].rows
    assert [(m["row"], m["predicted"]) for m in wrong_in_threads[0]] == [(m["row"], m["predicted"]) for m in wrong_in_tasks[0]]
    _, summary = default_eval
    assert rounded(summary["checkpoints"][0]["metrics"]) == rounded(in_tasks[0])


def test_checkpoint_all_scores_every_checkpoint_and_marks_the_best(trained, default_eval):
    config, run = trained
    result, summary = cli("eval", config, "--checkpoint", "all")
    assert result.exit_code == 0, result.output
    entries = summary["checkpoints"]
    assert [e["epoch"] for e in entries] == [1, 2]
    assert [e["checkpoint"] for e in entries] == [str(run / "checkpoints" / f"epoch-00{i}") for i in (1, 2)]
    losses = [e["metrics"]["loss"] for e in entries]
    assert summary["monitor"] == "loss" and summary["best"] == int(np.argmin(losses))
    assert "★ best" in result.stderr
    # The final model holds the weights of the last epoch: the same figures. Its ONNX copy scored it, TensorFlow
    # the checkpoint: the counts agree exactly, the losses and confidences to float32 rounding.
    assert [e["runtime"] for e in entries] == ["tensorflow", "tensorflow"]
    assert "no ONNX copy beside it" in entries[-1]["runtime_note"]
    assert rounded(entries[-1]["metrics"]) == rounded(default_eval[1]["checkpoints"][0]["metrics"])
    for name in ("confusion_matrix.png", "metrics_over_epochs.png"):
        assert (run / "eval" / "test" / name).read_bytes()[:8] == PNG_SIGNATURE

    # The same checkpoints named one by one (a bare name and a path), on another split.
    named = f"epoch-002,{run / 'checkpoints' / 'epoch-001'}"
    result, summary = cli("eval", config, "--checkpoint", named, "--split", "val")
    assert result.exit_code == 0, result.output
    assert [e["epoch"] for e in summary["checkpoints"]] == [2, 1]
    assert summary["split"] == "val" and (run / "eval" / "val" / "eval.json").is_file()


def test_fail_under_exits_3_when_missed_and_0_when_met(trained):
    config, run = trained
    result, summary = cli("eval", config, "--fail-under", "accuracy=1.01")
    assert result.exit_code == 3
    assert summary["status"] == "failed_gate" and summary["passed"] is False
    assert "accuracy" in summary["message"] and "\n" not in summary["message"]
    assert json.loads((run / "eval" / "test" / "eval.json").read_text())["passed"] is False

    result, summary = cli("eval", config, "--fail-under", "accuracy=0.0", "--fail-under", "loss=100")
    assert result.exit_code == 0, result.output
    assert summary["passed"] is True and summary["fail_under"] == {"accuracy": 0.0, "loss": 100.0}
    assert [(g["metric"], g["rule"]) for g in summary["gates"]] == [("accuracy", ">="), ("loss", "<=")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fail-under", "f1=0.5"], "use one of loss, accuracy"),
        (["--fail-under", "accuracy"], "expected METRIC=NUMBER"),
        (["--split", "nope"], "split 'nope' is not in the dataset"),
        (["--checkpoint", "epoch-009"], "checkpoint not found"),
    ],
)
def test_bad_options_fail_before_spark_with_exit_2(trained, args, message):
    config, _ = trained
    result, summary = cli("eval", config, *args)
    assert result.exit_code == 2, result.output
    assert message in summary["message"] and "\n" not in summary["message"]


def test_missing_run_dir_exits_2(trained, tmp_path):
    config, _ = trained
    result, summary = cli("eval", config, "--run-dir", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "run dir not found" in summary["message"]


def test_a_final_model_changed_after_its_onnx_copy_is_scored_by_tensorflow(trained, tmp_path):
    config, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copy(copy / "checkpoints" / "epoch-001" / "model.keras", copy / "model" / "model.keras")
    result, summary = cli("eval", config, "--run-dir", copy)
    assert result.exit_code == 0, result.output
    [entry] = summary["checkpoints"]
    assert entry["runtime"] == "tensorflow" and "model.keras changed after its ONNX copy" in entry["runtime_note"]
    result, first = cli("eval", config, "--run-dir", copy, "--checkpoint", "epoch-001")
    assert entry["metrics"] == first["checkpoints"][0]["metrics"]  # the model that is there now, by TensorFlow

    # A damaged copy beside an unchanged model: TensorFlow scores it, and the note says why.
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    onnx = damaged / "model" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:100])
    result, summary = cli("eval", config, "--run-dir", damaged)
    assert result.exit_code == 0, result.output
    [entry] = summary["checkpoints"]
    assert entry["runtime"] == "tensorflow" and "has 100 bytes, not the" in entry["runtime_note"]


def test_damaged_model_files_exit_1_with_one_line(trained, tmp_path):
    config, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    truncated = copy / "checkpoints" / "epoch-001" / "model.keras"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    result, summary = cli("eval", config, "--run-dir", copy, "--checkpoint", "epoch-001")
    assert result.exit_code == 1
    assert "damaged model file" in summary["message"] and "\n" not in summary["message"]
    assert "Traceback" not in result.output

    # A readable zip with damaged weights passes the driver's check and fails in the Spark task.
    damaged = copy / "checkpoints" / "epoch-002" / "model.keras"
    with zipfile.ZipFile(damaged) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(damaged, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data[: len(data) // 3] if name.endswith(".h5") else data)
    result, summary = cli("eval", config, "--run-dir", copy, "--checkpoint", "epoch-002")
    assert result.exit_code == 1
    assert "cannot load the model" in summary["message"] and "\n" not in summary["message"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")  # Keras's own numpy 2 warning when saving
def test_a_checkpoint_of_another_dataset_or_model_exits_2(trained, churn_dataset, tmp_path):
    import keras

    config, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta_path = copy / "checkpoints" / "epoch-001" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    # Another version of the same dataset (same features, classes, statistics): scored.
    meta_path.write_text(json.dumps({**meta, "dataset_hash": "0000000000000000"}))
    result, summary = cli("eval", config, "--run-dir", copy, "--checkpoint", "epoch-001")
    assert result.exit_code == 0, result.output
    # Another dataset: refused.
    meta_path.write_text(json.dumps({**meta, "dataset_hash": "0000000000000000", "preprocessing_hash": "1" * 16}))
    result, summary = cli("eval", config, "--run-dir", copy, "--checkpoint", "epoch-001")
    assert result.exit_code == 2 and "trained on another dataset" in summary["message"]

    wide = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="softmax")])
    wide.save(tmp_path / "wide.keras")
    result, summary = cli("eval", config, "--run-dir", copy, "--checkpoint", tmp_path / "wide.keras")
    assert result.exit_code == 2 and "shape [5]" in summary["message"]

    # Three classes behind a non-Dense head: only the loaded model tells, in the Spark task.
    width = json.loads((churn_dataset / "_manifest.json").read_text())["features"]["shape"][0]
    inputs = keras.Input((width,), name="features")
    three = keras.Model(inputs, keras.layers.Activation("softmax")(keras.layers.Dense(3)(inputs)))
    three.save(tmp_path / "three.keras")
    result, summary = cli("eval", config, "--run-dir", copy, "--checkpoint", tmp_path / "three.keras")
    assert result.exit_code == 2, result.output
    assert "3 outputs" in summary["message"] and "2 classes" in summary["message"]


def test_tasks_import_tensorflow_without_its_banner():
    """Eval and predict tasks write to the user's terminal in local mode: TensorFlow's start-up lines stay out."""
    import subprocess
    import sys

    code = ("import sys; from dltool.tfenv import import_tensorflow_quietly as q; tf = q(); "
            "print(tf.__name__, tf.constant(2).numpy() + 1); print('after', file=sys.stderr)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["tensorflow", "3"]
    assert done.stderr.strip() == "after", done.stderr  # the banner went nowhere; stderr works again


def test_eval_input_scores_held_out_raw_rows_exactly_as_the_test_split(trained, churn_dataset, default_eval, tmp_path):
    import csv

    config, run = trained
    keys = set(read_split(churn_dataset, "test").column("key").to_pylist())
    source = ROOT / "sample_data" / "tabular" / "customers.csv"
    with open(source, newline="") as f:
        header, *rows = list(csv.reader(f))
    held = tmp_path / "held_out.csv"
    with open(held, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(row for row in rows if row[0] in keys)
        writer.writerow(["X1", "40", "1000", "3", "basic", "east", "10", "1", "maybe", ""])  # a class never seen
    experiment = yaml.safe_load(config.read_text())
    experiment["ingest"] = {**yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())["ingest"], "input": str(source)}
    with_ingest = tmp_path / "experiment.yaml"
    with_ingest.write_text(yaml.safe_dump(experiment))

    result, summary = cli("eval", with_ingest, "--input", held)
    assert result.exit_code == 0, result.output
    assert summary["eval_dir"] == str(run / "eval" / "input-held_out.csv") and summary["quarantined"] == 1
    got, want = summary["checkpoints"][0]["metrics"], default_eval[1]["checkpoints"][0]["metrics"]
    assert got["confusion_matrix"] == want["confusion_matrix"]
    for name in ("accuracy", "loss"):
        assert got[name] == pytest.approx(want[name], abs=1e-6)
    assert not any(p.name.startswith("input-held_out.csv.ingest") for p in (run / "eval").iterdir())
