"""Export the run's model to serving formats, score each on a split with Spark, and say what each costs.

`dltool export CONFIG --format tflite-int8 --format onnx` writes the files to RUN_DIR/export/
(or `--output`), scores them and the Keras model in one Spark job over the same split (the
eval job: `score_checkpoints`), times them here on the driver, and writes `export.json`: per
format its file, size, metric, drop against Keras, single-example latency and batch
throughput. `--max-drop accuracy=0.01` exits 3 when a format loses more than that.

Converters: TensorFlow's own TFLiteConverter (float32, float16 weights, full-integer int8
calibrated on train rows) and tf2onnx for ONNX.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dltool.artefacts import converter_message, to_onnx
from dltool.config.models import ExperimentConfig
from dltool.errors import ConfigError, DltoolError, QualityGateError
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.manifest import Manifest, manifest_hash
from dltool.storage.ownership import check_replaceable, mark, protected_paths
from dltool.storage.stores import with_storage

__all__ = ["FORMATS", "parse_max_drop", "run_export"]

# format -> the name written under the export folder
FORMATS = {"savedmodel": "saved_model", "tflite": "model.tflite", "tflite-fp16": "model-fp16.tflite",
           "tflite-int8": "model-int8.tflite", "onnx": "model.onnx"}  # fmt: skip
EXPORT_FILE = "export.json"
LATENCY_CALLS = 50
THROUGHPUT_BATCH = 256


def parse_max_drop(items: list[str] | None) -> dict[str, float]:
    """`--max-drop METRIC=VALUE` options as {metric: largest allowed loss against the Keras model}."""
    from dltool.evaluate.score import parse_metric_values

    return parse_metric_values("--max-drop", items, "accuracy=0.01", minimum=0)


@dataclass(frozen=True)
class ExportResult:
    """What `dltool export` wrote and measured (export.json): each format's file, its score against the Keras
    model's and its speed, and the --max-drop gates."""

    model: str  # URI of the exported model
    split: str
    metric: str  # "accuracy", or "mae" for regression
    output: str  # the export folder
    formats: tuple[dict, ...]  # one row per format, the Keras model's first: format, uri, bytes, value, drop, latency
    gates: tuple[dict, ...]
    passed: bool
    calibration: int

    @classmethod
    def from_json(cls, data: dict) -> ExportResult:
        return cls(**{**data, "formats": tuple(data["formats"]), "gates": tuple(data["gates"])})

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "formats": list(self.formats), "gates": list(self.gates)}


@with_storage
def run_export(config: ExperimentConfig, formats: list[str], output: str | None = None, checkpoint: str | None = None,
               calibration: int = 500, split: str = "test", max_drop: dict[str, float] | None = None,
               progress: bool = True) -> dict:  # fmt: skip
    """Write each format, score it against the Keras model on `split`, time it; returns what export.json holds.

    Raises QualityGateError (exit 3), after writing everything, when a format's metric falls
    more than `max_drop` allows below the Keras model's.
    """
    from dltool.evaluate.metrics import headline

    formats, dataset, manifest, target, metric = _checked(config, formats, checkpoint, calibration, max_drop)
    run_dir = open_location(config.train.run_dir)
    out = open_location(output) if output else run_dir.child("export")

    from dltool.storage.fs import local_scratch

    scratch = local_scratch("export")
    try:
        written = _convert_all(config, target.model.uri, dataset, manifest, formats, scratch, calibration)
        _write_out(config, out, written, named=bool(output))
        scores = _score(config, dataset, manifest, split, [target.model.uri] + [out.child(FORMATS[f]).uri for f in written],
                        progress)  # fmt: skip
        timings = _time_all(config, target.model.uri, written, dataset, manifest, split)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    keras_value = headline(scores[0]).get(metric)
    rows = [_row("keras", target.model.uri, _size(target.model), metric, keras_value, keras_value, timings["keras"])]
    for i, fmt in enumerate(written, start=1):
        location = out.child(FORMATS[fmt])
        rows.append(_row(fmt, location.uri, _size(location), metric, headline(scores[i]).get(metric), keras_value,
                         timings[fmt]))  # fmt: skip
    gates = drop_gates(rows, metric, max_drop or {})
    summary = {"model": target.model.uri, "split": split, "metric": metric, "output": out.uri, "formats": rows,
               "gates": gates, "passed": all(g["passed"] for g in gates), "calibration": calibration}  # fmt: skip
    from dltool.train.checkpoints import write_json

    write_json(out.child(EXPORT_FILE), summary)
    _track(run_dir, out, rows, metric)
    missed = [g for g in gates if not g["passed"]]
    if missed:
        raise QualityGateError("; ".join(f"{g['format']} loses {_amount(g['drop'])} {g['metric']} against the Keras "
                                         f"model (--max-drop {g['max_drop']:g})" for g in missed), summary)  # fmt: skip
    return summary


def _checked(config: ExperimentConfig, formats: list[str], checkpoint: str | None, calibration: int,
             max_drop: dict[str, float] | None):  # fmt: skip
    """The formats (each once), the dataset and its manifest, the one model to export, checked against the
    data it was trained on, and the metric each format is compared by (accuracy, or mae for regression)."""
    from dltool.evaluate import targets as tg

    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ConfigError(f"--format {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}")
    if config.train is None:
        raise ConfigError("the config has no 'train' section: export needs train.run_dir (or pass --run-dir)")
    if calibration < 1:
        raise ConfigError("--calibration must be at least 1")
    dataset = open_dataset(config.dataset.path)
    manifest = Manifest.read(dataset)
    if manifest.label.kind not in ("class", "regression"):
        raise ConfigError(f"{dataset.uri}: the dataset has no labels: export scores each format against the Keras model")
    targets = tg.resolve_targets(open_location(config.train.run_dir), checkpoint)
    if len(targets) != 1:
        raise ConfigError("export takes one model: pass --checkpoint PATH (or none for the run's final model)")
    tg.check_target(targets[0], manifest, manifest_hash(manifest))
    metric = "accuracy" if manifest.label.kind == "class" else "mae"
    for name in max_drop or {}:
        if name != metric:
            raise ConfigError(f"--max-drop {name}: export compares {metric} for this model; use --max-drop {metric}=VALUE")
    return list(dict.fromkeys(formats)), dataset, manifest, targets[0], metric


def _write_out(config: ExperimentConfig, out: Location, written: dict, named: bool) -> None:
    """The converted files into the export folder, replacing those of an earlier export; a folder the user
    `named` must be dltool's (or empty), as the run dir's own export/ is."""
    from dltool.train.checkpoints import upload_tree

    if named:
        check_replaceable(out, "export folder", protected_paths(config))  # its files are replaced below
    if not out.exists():
        out.fs.create_dir(out.path, recursive=True)
        mark(out, "export")
    for fmt, path in written.items():
        destination = out.child(FORMATS[fmt])
        if destination.exists():
            destination.delete()
        if path.is_dir():
            upload_tree(path, destination)
        else:
            destination.write_bytes(path.read_bytes())


def drop_gates(rows: list[dict], metric: str, max_drop: dict[str, float]) -> list[dict]:
    """Each exported format (rows after the Keras one) against each `--max-drop`: its loss (the row's `drop`)
    and whether that is allowed; a format that could not be scored fails."""
    gates = []
    for row in rows[1:]:
        for name, allowed in max_drop.items():
            gates.append({"format": row["format"], "metric": name, "max_drop": allowed, "drop": row["drop"],
                          "passed": row["drop"] is not None and row["drop"] <= allowed})  # fmt: skip
    return gates


def loss_against_keras(metric: str, keras_value: float | None, value: float | None) -> float | None:
    """What the format lost: a lower accuracy, or a higher error (mae); negative when it did better."""
    from dltool.evaluate.metrics import higher_is_better

    if keras_value is None or value is None:
        return None
    return round(keras_value - value if higher_is_better(metric) else value - keras_value, 6)


def _track(run_dir: Location, out: Location, rows: list[dict], metric: str) -> None:
    """Each format's metric and the exported files into the MLflow run the training recorded, if any."""
    from dltool.tracking import Tracker
    from dltool.train import checkpoints as ckpt

    tracker = Tracker.reopen((ckpt.read_json(run_dir.child(ckpt.RUN_FILE)) or {}).get("mlflow"))
    if tracker is not None:
        tracker.log_metrics({f"export_{row['format']}_{metric}": row[metric] for row in rows[1:] if row[metric] is not None})
        tracker.log_files(out, "export")


def _row(fmt: str, uri: str, size: int, metric: str, value, keras_value, timing: dict) -> dict:
    return {"format": fmt, "path": uri, "bytes": size, metric: value, "drop": loss_against_keras(metric, keras_value, value),
            **timing}  # fmt: skip


def _amount(drop: float | None) -> str:
    return "an unknown amount of" if drop is None else f"{drop:.4f}"


def _size(location: Location) -> int:
    import pyarrow.fs as pafs

    info = location.info()
    if info.type == pafs.FileType.File:
        return int(info.size or 0)
    return sum(int(i.size or 0) for i in location.fs.get_file_info(pafs.FileSelector(location.path, recursive=True))
               if i.type == pafs.FileType.File)  # fmt: skip


# ------------------------------------------------------------------------------------------ converting


def _convert_all(config, model_uri: str, dataset: Location, manifest: Manifest, formats: list[str], scratch: Path,
                 calibration: int) -> dict[str, Path]:  # fmt: skip
    """Each format written under scratch, from the Keras model (TFLite from its SavedModel)."""
    from dltool.artefacts import load_model
    from dltool.spark.shipping import factory_modules

    tf = _tensorflow()
    import keras

    model = load_model(keras, model_uri, factory_modules(config))
    saved = scratch / FORMATS["savedmodel"]
    model.export(str(saved), format="tf_saved_model", verbose=False)
    written = {}
    for fmt in formats:
        path = scratch / FORMATS[fmt]
        if fmt == "savedmodel":
            pass
        elif fmt == "onnx":
            to_onnx(tf, model, manifest.features.shape, manifest.features.dtype, str(path))
        else:
            sample = _calibration_rows(dataset, manifest, calibration) if fmt == "tflite-int8" else None
            path.write_bytes(_tflite(tf, saved, fmt, sample))
        written[fmt] = path
    return written


def _tensorflow():
    """TensorFlow in this process, its C++ logging (the converters print pages of it) kept to errors.

    TF_CPP_MIN_LOG_LEVEL is read once, when TensorFlow loads: set for that moment unless the user set it.
    """
    from dltool.tfenv import import_tensorflow_quietly

    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return import_tensorflow_quietly()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        return import_tensorflow_quietly()
    finally:
        del os.environ["TF_CPP_MIN_LOG_LEVEL"]


def _tflite(tf, saved: Path, fmt: str, sample) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if fmt == "tflite-fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite-int8":  # every op in int8; the input stays the stored dtype, the output float32
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in sample)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter's ConverterError names the op it cannot convert
        raise DltoolError(f"{fmt}: the model cannot be converted: {converter_message(e)}") from e


def _calibration_rows(dataset: Location, manifest: Manifest, count: int):
    """About `count` train rows spread over the split (not its first rows: shards hold a class folder at a time)."""
    import numpy as np

    from dltool.shards.feed import ShardFeed, plan_shares

    (units,) = plan_shares(dataset.uri, manifest, "train", 1)
    if not units:
        raise ConfigError(f"{dataset.uri}: the train split is empty: no rows to calibrate int8 quantization with")
    if len(units) > 64:  # a large split: read 64 row groups spread over it, not all of it
        units = [units[round(i * (len(units) - 1) / 63)] for i in range(64)]
    rows = sum(u.rows for u in units)
    step = max(1, rows // count)
    feed = ShardFeed(dataset.uri, manifest, units, cache_mb=0, with_labels=False)
    kept, seen = [], 0
    for x, _ in feed.one_pass(THROUGHPUT_BATCH):
        first = (-seen) % step
        kept.append(np.asarray(x)[first::step])
        seen += len(x)
    return np.concatenate(kept)[:count]


# ------------------------------------------------------------------------------------ scoring, timing


def _score(config, dataset: Location, manifest: Manifest, split: str, models: list[str], progress: bool) -> list[dict]:
    """The eval job over every model at once: one result per model, same rows, same metric code."""
    from dltool.evaluate.score import split_rows, sums_spec, score_checkpoints
    from dltool.evaluate.tasks import SCORING_MODULES, ScoreJob, scoring_session, scoring_tasks
    from dltool.spark.shipping import factory_modules

    rows = split_rows(manifest, split)
    spark, cores = scoring_session(config, rows, True, SCORING_MODULES)  # Keras, SavedModel, TFLite: TensorFlow
    class_names = [str(name) for name in manifest.label.vocabulary or ()]
    job = ScoreJob(dataset.uri, manifest, split, sums_spec(config.train, manifest.label.kind, class_names),
                   tuple(factory_modules(config)), tuple(models), 256, config.train.cache_mb)  # fmt: skip
    results, _ = score_checkpoints(spark, job, scoring_tasks(cores, rows), progress=progress,
                                   description=f"export: score {len(models)} models on {split} ({rows:,} rows)")  # fmt: skip
    return results


def _time_all(config, model_uri: str, written: dict[str, Path], dataset: Location, manifest: Manifest,
              split: str) -> dict[str, dict]:  # fmt: skip
    """Single-example latency (median of LATENCY_CALLS) and batch throughput of each format, on this CPU."""
    import numpy as np

    from dltool.artefacts import load_predictor
    from dltool.shards.feed import ShardFeed, plan_shares
    from dltool.spark.shipping import factory_modules

    tf = _tensorflow()
    (units,) = plan_shares(dataset.uri, manifest, split, 1)
    x = next(iter(ShardFeed(dataset.uri, manifest, units, cache_mb=0, with_labels=False).one_pass(THROUGHPUT_BATCH)))[0]
    x = np.asarray(x)
    threads = os.cpu_count() or 1
    timings = {}
    for fmt, uri in [("keras", model_uri), *((f, str(p)) for f, p in written.items())]:
        predictor = load_predictor(tf, uri, factory_modules(config), threads)
        predictor.predict(x[:1])  # warm-up: graph tracing, allocation
        calls = []
        for _ in range(LATENCY_CALLS):
            start = time.perf_counter()
            predictor.predict(x[:1])
            calls.append(time.perf_counter() - start)
        predictor.predict(x)
        start, batches = time.perf_counter(), 0
        while batches < 3 or time.perf_counter() - start < 0.5:
            predictor.predict(x)
            batches += 1
        seconds = time.perf_counter() - start
        timings[fmt] = {"latency_ms": round(statistics.median(calls) * 1000, 3),
                        "rows_per_s": round(batches * len(x) / seconds, 1)}  # fmt: skip
    return timings
