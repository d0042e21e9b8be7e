"""The `dltool` command line: thin commands that load the config and call the library.

Exit codes: 0 ok (or nothing to do), 1 runtime failure, 2 config or usage error,
3 data-quality threshold exceeded. Human output goes to stderr; `--json` prints a
machine-readable summary on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dltool.errors import DataQualityError, DltoolError

if TYPE_CHECKING:
    from dltool.evaluate.result import EvalResult
    from dltool.spark.results import IngestPlan, IngestResult

app = typer.Typer(
    help="Deep-learning ETL and training on Spark, driven by one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _redacted_output() -> None:
    """Every line a command prints passes through one redaction (dltool.config.redaction): no secret reaches
    a terminal, a log collector or an XCom."""
    from dltool.config.redaction import RedactingWriter

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingWriter):
            setattr(sys, name, RedactingWriter(stream))


ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
MasterOpt = Annotated[Optional[str], typer.Option("--master", help="Spark master URL (overrides spark.master).")]
ConfOpt = Annotated[
    Optional[list[str]], typer.Option("--conf", help="Extra Spark setting KEY=VALUE (repeatable).", show_default=False)
]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Dataset location (overrides dataset.path).")]
RunDirOpt = Annotated[Optional[str], typer.Option("--run-dir", help="Run directory (overrides train.run_dir).")]
StorageOpt = Annotated[
    Optional[list[str]],
    typer.Option("--storage-option", help="Object-store setting KEY=VALUE of the config's storage: section, e.g. "
                 "endpoint_url=http://127.0.0.1:9000 (repeatable).", show_default=False),
]


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message)


def _text(value) -> str:
    """A value from the data (a path, a message, a key) made safe inside rich markup: [x] stays [x]."""
    from rich.markup import escape

    return escape(str(value))


def _finish(summary: dict, as_json: bool, exit_code: int = 0) -> None:
    if as_json:
        # One line: schedulers (Airflow's XCom) take a command's last line of output as its result.
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    raise typer.Exit(exit_code)


def _gate_missed(error: DltoolError, summary: dict, as_json: bool) -> None:
    """A quality gate missed after the outputs were written: the error line, and the full summary marked failed_gate."""
    print(f"dltool: error: {error}", file=sys.stderr)
    _finish({**summary, "status": "failed_gate", "exit_code": error.exit_code, "message": str(error)}, as_json, error.exit_code)


def _fail(error: DltoolError, as_json: bool) -> None:
    message = str(error).strip() or type(error).__name__
    for line in message.splitlines():
        print(f"dltool: error: {line}", file=sys.stderr)
    summary = {"status": "error", "exit_code": error.exit_code, "error": type(error).__name__, "message": message}
    if isinstance(error, DataQualityError):
        summary.update(status="failed_quality", summary=error.summary.to_json() if error.summary is not None else {})
    _finish(summary, as_json, error.exit_code)


def _overrides(master: str | None = None, conf: list[str] | None = None, storage: list[str] | None = None,
               **paths: str | None) -> dict:  # fmt: skip
    """Dotted config overrides from command-line options; local paths are taken relative to the cwd."""

    overrides = {f"storage.{key}": value for key, value in _storage_pairs(storage).items()}
    for dotted, value in paths.items():
        if value is not None:
            table = dotted == "ingest__input" and _table_name(value)
            overrides[dotted.replace("__", ".")] = value if "://" in value or table else os.path.abspath(value)
    if master:
        overrides["spark.master"] = master
    spark_conf = _pairs("--conf", conf, "spark.driver.memory=2g")
    if spark_conf:
        overrides["spark.conf"] = spark_conf  # merged into the file's conf map by the loader
    return overrides


def _table_name(value: str) -> bool:
    """`--input sales.customers` for `format: table`: a catalog name is no path (no folder in it, no such file)."""
    return os.sep not in value and not os.path.exists(value)


def _pairs(option: str, items: list[str] | None, example: str) -> dict[str, str]:
    from dltool.errors import ConfigError

    pairs = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} {example}")
        pairs[key.strip()] = value
    return pairs


def _storage_pairs(items: list[str] | None) -> dict[str, str]:
    return _pairs("--storage-option", items, "endpoint_url=http://host:9000")


def _load(config: Path, overrides: dict, check_tune: bool = False):
    from dltool.config.loader import load_config

    return load_config(config, overrides, check_tune=check_tune)


@app.command()
def ingest(
    config: ConfigArg,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Dataset location (overrides dataset.path).")] = None,
    input: Annotated[Optional[str], typer.Option("--input", "-i", help="Input location (overrides ingest.input).")] = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild even if the dataset exists.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be read and written; start nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read raw images, audio or CSV and write Parquet tensor shards with a manifest."""
    try:
        from dltool import api

        cfg = _load(config, _overrides(master, conf, storage, dataset__path=output, ingest__input=input))
        summary = api.ingest(cfg, overwrite=overwrite, dry_run=dry_run, progress=not as_json)
    except DltoolError as e:
        _fail(e, as_json)
    _report_ingest(summary)
    _finish(summary.to_json(), as_json)


def _report_ingest(summary: IngestResult | IngestPlan) -> None:
    """Tell a person what run_ingest did (an IngestResult) or would do (an IngestPlan)."""
    if summary.status == "up_to_date":
        _say(f"[green]✓[/] {_text(summary.message)}")
        return
    if summary.status == "dry_run":
        _say(f"dry run: would read {summary.inputs} inputs ({summary.bytes / 2**20:.1f} MB) from {summary.source}")
        if summary.splits:
            _say("  per split: " + ", ".join(f"{k} {v}" for k, v in summary.splits.items()))
        if summary.labels is not None:
            _say(f"  labels: {list(summary.labels)}")
        _say(f"  left out by include/exclude: {summary.left_out_by_patterns}")
        _say("  would write: " + ", ".join(summary.writes))
        return
    counts = summary.counts
    _say(
        f"[green]✓[/] wrote {counts.rows} rows to {summary.dataset} in {summary.seconds:.1f}s "
        f"({', '.join(f'{k} {v}' for k, v in summary.splits.items())}); "
        f"{counts.ok} of {counts.inputs} inputs ok, {counts.quarantined} quarantined"
    )
    for error in summary.errors:
        stage = f"[{error['stage']}]"
        _say(f"  quarantined {_text(error['key'])}: {_text(stage)} {_text(error['message'])}")
    for warning in summary.warnings:
        _say(f"  [yellow]warning:[/] {_text(warning)}")
    for column, reason in summary.left_out.items():
        _say(f"  left out column {_text(column)}: {_text(reason)}")


@app.command()
def train(
    config: ConfigArg,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="TensorFlow workers (overrides train.workers).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs (overrides train.epochs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run dir's newest checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the run dir's previous run first.")] = False,
    mlflow: Annotated[
        Optional[str], typer.Option("--mlflow", help="Log the run to this MLflow tracking URI (tracking.mlflow.tracking_uri).")
    ] = None,
    from_tune: Annotated[
        bool, typer.Option("--from-tune", help="Train with the best trial's values of the run dir's study (dltool tune).")
    ] = False,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the config's model on its dataset: one Spark barrier task per TensorFlow worker."""
    try:
        from dltool import api

        overrides = _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir)
        overrides.update({k: v for k, v in {"train.workers": workers, "train.epochs": epochs,
                                            "tracking.mlflow.tracking_uri": mlflow}.items() if v is not None})  # fmt: skip
        cfg = _load(config, overrides)
        if from_tune:
            from dltool.tune import best_values

            best = best_values(cfg)
            _say("values of the best trial: " + ", ".join(f"{_text(k)}={_text(v)}" for k, v in best.items()))
            cfg = _load(config, {**best, **overrides})  # the command line still wins
        result = api.train(cfg, resume=resume, overwrite=overwrite, progress=not as_json)
    except DltoolError as e:
        _fail(e, as_json)
    if result.status == "up_to_date":
        _say(f"[green]✓[/] {result.message}")
    else:
        best = result.best or {}
        best_text = f"; best {best['monitor']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""
        kept = f" (epoch {result.model_epoch}, the {result.kept})" if result.model_epoch else ""
        _say(f"[green]✓[/] trained {result.epochs_done} epochs in {result.seconds:.1f}s{best_text}; model{kept}: {result.model}")
    _finish(result.to_json(), as_json)


@app.command("eval")
def eval_(
    config: ConfigArg,
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", help="'all', or checkpoint folders / .keras files, comma-separated; "
                     "default: the final model (else the best checkpoint)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Score this file instead of the run's models: an exported SavedModel folder, "
                     ".tflite or .onnx file (dltool export), or a .keras file."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split to score.")] = "test",
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Labelled raw inputs to score instead of a split (a class-folder tree, "
                     "a CSV with the label column), read as the dataset was."),
    ] = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option("--fail-under", help="Exit 3 unless METRIC=VALUE is met (at least; at most for loss, mae, "
                     "mse, rmse, ece); repeatable.", show_default=False),
    ] = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the run's model or checkpoints on a split with Spark: eval.json, a table and plots."""
    from dltool.errors import QualityGateError

    try:
        from dltool import api
        from dltool.evaluate.score import parse_fail_under

        gates = parse_fail_under(fail_under)
        cfg = _load(config, _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir))
        summary = api.evaluate(cfg, checkpoint=checkpoint, split=split, fail_under=gates, progress=not as_json,
                               input=input, model=model)  # fmt: skip
    except QualityGateError as e:
        _report_eval(e.summary)
        _gate_missed(e, e.summary.to_json(), as_json)
    except DltoolError as e:
        _fail(e, as_json)
    _report_eval(summary)
    _finish({**summary.to_json(), "status": "ok", "exit_code": 0}, as_json)


@app.command()
def export(
    config: ConfigArg,
    formats: Annotated[
        list[str],
        typer.Option("--format", "-f", help="savedmodel, tflite, tflite-fp16, tflite-int8 or onnx (repeatable).",
                     show_default=False),
    ],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Folder for the files (default RUN_DIR/export).")] = None,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Checkpoint folder or .keras file; default: the run's final model.")
    ] = None,
    calibration: Annotated[int, typer.Option("--calibration", help="Train rows that calibrate tflite-int8.")] = 500,
    split: Annotated[str, typer.Option("--split", help="Split each format is scored on.")] = "test",
    max_drop: Annotated[
        list[str] | None,
        typer.Option("--max-drop", help="Exit 3 when a format loses more than METRIC=VALUE against the Keras model.",
                     show_default=False),
    ] = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the run's model (SavedModel, TFLite float/fp16/int8, ONNX), score each file against it: export.json."""
    from dltool.errors import QualityGateError

    try:
        from dltool.export import parse_max_drop, run_export

        drops = parse_max_drop(max_drop)
        cfg = _load(config, _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir))
        target = output if output is None or "://" in output else os.path.abspath(output)
        summary = run_export(cfg, formats, output=target, checkpoint=checkpoint, calibration=calibration, split=split,
                             max_drop=drops, progress=not as_json)  # fmt: skip
    except QualityGateError as e:
        _report_export(e.summary)
        _gate_missed(e, e.summary, as_json)
    except DltoolError as e:
        _fail(e, as_json)
    _report_export(summary)
    _finish({**summary, "status": "ok", "exit_code": 0}, as_json)


def _report_export(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metric = summary["metric"]
    table = Table(title=f"export: {metric} on {summary['split']}, against the Keras model")
    for column in ("format", "size", metric, "drop", "latency (1 row)", "rows/s (batch 256)"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for row in summary["formats"]:
        value, drop = row[metric], row["drop"]
        table.add_row(row["format"], f"{row['bytes'] / 1024:,.0f} KiB", "–" if value is None else f"{value:.4f}",
                      "" if row["format"] == "keras" or drop is None else f"{drop:+.4f}", f"{row['latency_ms']:.2f} ms",
                      f"{row['rows_per_s']:,.0f}")  # fmt: skip
    Console(stderr=True).print(table)
    _say(f"files and export.json in {_text(summary['output'])}")


@app.command("run")
def run_(
    config: ConfigArg,
    until: Annotated[str, typer.Option("--until", help="Last step: ingest, train, eval or export.")] = "eval",
    fail_under: Annotated[
        list[str] | None,
        typer.Option("--fail-under", help="Eval's quality gate METRIC=VALUE (exit 3 when missed); repeatable.",
                     show_default=False),
    ] = None,
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="Export formats for --until export (repeatable).", show_default=False),
    ] = None,
    max_drop: Annotated[
        list[str] | None,
        typer.Option("--max-drop", help="Export's gate METRIC=VALUE against the Keras model; repeatable.",
                     show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo every step, up to date or not.")] = False,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest, train, eval (and export) in one Spark application, skipping steps that are up to date."""
    try:
        from dltool.chain import ChainError, run_chain
        from dltool.evaluate.score import parse_fail_under
        from dltool.export import parse_max_drop

        gates, drops = parse_fail_under(fail_under), parse_max_drop(max_drop)
        cfg = _load(config, _overrides(master, conf, storage))
        summary = run_chain(cfg, until=until, fail_under=gates, formats=formats or [], max_drop=drops,
                            overwrite=overwrite, progress=not as_json)  # fmt: skip
    except ChainError as e:
        print(f"dltool: error: {e.summary['failed_step']}: {e}", file=sys.stderr)
        _finish(e.summary, as_json, e.exit_code)
    except DltoolError as e:
        _fail(e, as_json)
    for step, result in summary["steps"].items():
        _say(f"{step}: {_text(result.get('status', 'done'))}")
    _say(f"done in {summary['seconds']} s")
    _finish(summary, as_json)


@app.command()
def tune(
    config: ConfigArg,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run dir's study (after a kill or a stop).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the run dir's study and start again.")] = False,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Trials in the study (overrides tune.trials).")] = None,
    parallel: Annotated[Optional[int], typer.Option("--parallel", min=1, help="Trials at once (overrides tune.parallel).")] = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the tune: space with Optuna, each trial a training on Spark: tune.json, plots, best.yaml."""
    try:
        from dltool.tune import run_tune

        overrides = _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir)
        overrides.update({k: v for k, v in {"tune.trials": trials, "tune.parallel": parallel}.items() if v is not None})
        summary = run_tune(_load(config, overrides, check_tune=True), resume=resume, overwrite=overwrite, progress=not as_json)
    except DltoolError as e:
        _fail(e, as_json)
    if summary["status"] == "up_to_date":
        _say(f"[green]✓[/] {_text(summary['message'])}")
    else:
        best, counts = summary["best"], summary["counts"]
        values = ", ".join(f"{_text(k)}={_text(v)}" for k, v in best["params"].items())
        _say(
            f"[green]✓[/] {counts['complete']} trials complete, {counts['pruned']} pruned, {counts['failed']} failed "
            f"in {summary['seconds']:.0f}s; best: trial {best['number']}, {summary['study']['metric']} "
            f"{best['value']:.4f} ({values})"
        )
        _say(f"  best config: {_text(summary['best_config'])} (or: dltool train CONFIG --from-tune)")
    _finish(summary, as_json)


@app.command()
def predict(
    config: ConfigArg,
    input: Annotated[str, typer.Option("--input", "-i", help="A dltool dataset, a raw image/audio folder, or raw CSV file(s).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for the Parquet predictions.")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Checkpoint folder or .keras file; default: the run's final model.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Predict with this model instead of the run's: a .keras/.tflite/.onnx file, a "
                     "SavedModel folder, or a registered MLflow model (models:/NAME@ALIAS)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split to predict when --input is a dataset.")] = "test",
    run_dir: RunDirOpt = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="Table column copied into the output (an id); repeatable.", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Batch inference on Spark: one Parquet row per input with the predicted class and probabilities."""
    try:
        from dltool import api

        cfg = _load(config, _overrides(master, conf, storage, train__run_dir=run_dir))
        result = api.predict(cfg, input, output, checkpoint=checkpoint, model=model, split=split, keep=keep or [],
                             overwrite=overwrite, progress=not as_json)  # fmt: skip
    except DltoolError as e:
        _fail(e, as_json)
    quarantined = f", {result.quarantined} quarantined" if result.raw_input else ""
    _say(f"[green]✓[/] {result.rows} predictions in {result.output}{quarantined}")
    _finish(result.to_json(), as_json)


def _report_eval(summary: EvalResult) -> None:
    """Tell a person the scores of an EvalResult: the table, the best model, the gates and where the files are."""
    from dltool.evaluate.report import print_table

    entries = summary.checkpoints
    print_table([{**e.metrics, "checkpoint": e.name, "split": summary.split} for e in entries], summary.best)
    if summary.best is not None:
        _say(f"best by {summary.monitor}: {summary.scored.name}")
    for gate in summary.gates:
        mark = "[green]✓[/]" if gate.passed else "[red]✗[/]"
        value = "undefined" if gate.value is None else f"{gate.value:.4f}"
        _say(f"{mark} {gate.metric} {value} (needs {gate.rule} {gate.threshold:g})")
    if summary.quarantined:
        _say(f"  [yellow]{summary.quarantined} input(s) quarantined while reading, not scored[/]")
    _say(f"results: {summary.eval_dir}")


@app.command()
def validate(
    config: ConfigArg,
    untrusted: Annotated[bool, typer.Option("--untrusted", help="Also refuse a config that names code to run "
                         "(a model factory, TFSMLayer/Lambda layers, Spark settings that load jars or plugins).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a config file without starting Spark (exit 2 when it is invalid)."""
    try:
        from dltool.config.trust import refuse_code

        cfg = _load(config, {}, check_tune=True)
        refuse_code(cfg, str(config), always=untrusted)
    except DltoolError as e:
        _fail(e, as_json)
    parts = [f"{cfg.ingest.reader} reader" if cfg.ingest else "no ingest", f"dataset {cfg.dataset.path}"]
    if cfg.train:
        parts.append(f"{cfg.train.model.kind} model, run dir {cfg.train.run_dir}")
    _say(f"[green]✓[/] {config}: valid ({', '.join(parts)})")
    _finish({"status": "ok", "config": str(config), "name": cfg.name}, as_json)


@app.command()
def doctor(
    config: Annotated[Optional[Path], typer.Argument(help="Experiment YAML to check for (default: a local Spark).",
                                                     show_default=False)] = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Preflight: Java, Spark on the configured master, task slots, GPUs, executors' dltool, storage (exit 2 on a failure)."""
    try:
        from dltool.config.models import SparkSettings
        from dltool.doctor import run_doctor

        overrides = _overrides(master, conf, storage)
        cfg = _load(config, overrides) if config is not None else None
        spark = {key.split(".", 1)[1]: value for key, value in overrides.items() if key.startswith("spark.")}
        checks = run_doctor(cfg, SparkSettings(**spark))
    except DltoolError as e:
        _fail(e, as_json)
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        fix = f" [yellow]→ {_text(check.fix)}[/]" if check.fix else ""
        _say(f"{mark} {check.name}: {_text(check.found)}{fix}")
    failed = [c.name for c in checks if not c.ok]
    summary = {"status": "ok" if not failed else "failed", "failed": failed, "checks": [c.to_json() for c in checks]}
    _finish(summary, as_json, 2 if failed else 0)


@app.command()
def inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset location (path or URI).", show_default=False)],
    storage: StorageOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Read every shard and check its size and hash against "
                                         "the manifest (exit 1 naming a damaged one).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset's manifest, counts per split and class, schema and a sample row."""
    try:
        from dltool.config.models import StorageSettings
        from dltool.describe import describe_dataset
        from dltool.errors import ConfigError

        try:
            settings = StorageSettings(**_storage_pairs(storage))
        except ValueError as e:  # pydantic's ValidationError
            raise ConfigError("--storage-option: " + "; ".join(f"{'.'.join(map(str, err['loc'])) or 'storage'}: {err['msg']}"
                                                                for err in e.errors())) from e  # fmt: skip
        info = describe_dataset(dataset, settings.model_dump(), verify=verify)
    except DltoolError as e:
        _fail(e, as_json)
    if not as_json:
        from dltool.describe import print_description

        print_description(info)
    _finish(info, as_json)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the experiment YAML (for editor completion and validation)."""
    from dltool.config.models import ExperimentConfig

    sys.stdout.write(json.dumps(ExperimentConfig.model_json_schema(), indent=2) + "\n")


def main() -> None:
    try:
        app()
    except Exception as e:  # a bug in dltool: still one line, the trace only on request
        if os.environ.get("DLTOOL_DEBUG"):
            raise
        print(f"dltool: internal error: {type(e).__name__}: {e} (set DLTOOL_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
