"""The `dltool` command line: thin commands that load the config and call the library.

Exit codes: 0 ok (or nothing to do), 1 runtime failure, 2 config or usage error,
3 data-quality threshold exceeded. Human output goes to stderr; `--json` prints a
machine-readable summary on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from dltool.errors import DataQualityError, DltoolError

if TYPE_CHECKING:
    from dltool.evaluate.result import EvalResult
    from dltool.ingest.results import IngestPlan, IngestResult

DOCS = "README.md and docs/ in the dltool source (docs/guide.md: the readers and every option)"

app = typer.Typer(
    help="Deep learning on Spark, driven by one YAML file: ingest images, audio, text or tables into Parquet "
    "tensor shards, train a Keras model on them with data-parallel TensorFlow, then score, predict and export.\n\n"
    "Start with: dltool init YOUR_DATA > experiment.yaml",
    epilog=f"Exit codes: 0 done or up to date, 1 runtime failure, 2 config or usage error, 3 a data-quality or "
    f"model-quality gate missed. Docs: {DOCS}.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _help_in_plain_words() -> None:
    """Help that names things, not Python types: `CONFIG` rather than `{config} <path>`, a flag without `<bool>`.

    Typer prints an argument's Python type beside its name and wraps a required one in braces; an option's
    `metavar` (PATH, KEY=VALUE) already says what it takes, and a flag takes nothing.
    """
    from typer import core

    def argument_type(self, ctx):
        return None

    def option_type(self, ctx, _shown=core.TyperOption.display_type_rich):
        return None if self.is_flag else _shown(self, ctx)

    def usage_name(self):
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    core.TyperArgument.display_type_rich = argument_type
    core.TyperArgument._usage_display_name = usage_name
    core.TyperOption.display_type_rich = option_type


_help_in_plain_words()


def _version(value: bool) -> None:
    if value:
        from dltool.doctor import versions

        for name, version in versions().items():
            print(f"{name} {version}")
        raise typer.Exit(0)


@app.callback()
def _redacted_output(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the versions of dltool, Python, Spark, TensorFlow and Java.")] = False,
) -> None:
    """Every line a command prints passes through one redaction (dltool.config.redaction): no secret reaches
    a terminal, a log collector or an XCom."""
    from dltool.config.redaction import RedactingWriter

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingWriter):
            setattr(sys, name, RedactingWriter(stream))


ConfigArg = Annotated[Path, typer.Argument(metavar="CONFIG", help="The experiment YAML file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout (one line).")]
MasterOpt = Annotated[Optional[str], typer.Option("--master", metavar="URL", show_default=False,
                                                  help="Spark master: local[*], spark://HOST:7077, yarn (overrides spark.master).")]
ConfOpt = Annotated[
    Optional[list[str]], typer.Option("--conf", metavar="KEY=VALUE", help="Extra Spark setting, e.g. "
                                      "spark.driver.memory=4g (repeatable).", show_default=False)
]
DataOpt = Annotated[Optional[str], typer.Option("--data", "-d", metavar="PATH", show_default=False,
                                                help="The dataset: a folder or URI (overrides dataset.path).")]
RunDirOpt = Annotated[Optional[str], typer.Option("--run-dir", "-r", metavar="PATH", show_default=False,
                                                  help="The run folder: checkpoints, model, logs (overrides train.run_dir).")]
InputOpt = Annotated[Optional[str], typer.Option("--input", "-i", metavar="PATH", show_default=False,
                                                 help="The raw input: a folder, file, URI or table (overrides ingest.input).")]
StorageOpt = Annotated[
    Optional[list[str]],
    typer.Option("--storage-option", metavar="KEY=VALUE", help="Object-store setting of the config's storage: "
                 "section, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable).", show_default=False),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace what an earlier run of this command wrote.")]
FailUnderOpt = Annotated[
    Optional[list[str]],
    typer.Option("--fail-under", metavar="METRIC=VALUE", help="Exit 3 unless the metric is met (at least; at most "
                 "for loss, mae, mse, rmse, ece), e.g. accuracy=0.9, or against the model the run was warm-started "
                 "from: accuracy=parent-0.01 (repeatable).", show_default=False),
]
MaxDropOpt = Annotated[
    Optional[list[str]],
    typer.Option("--max-drop", metavar="METRIC=VALUE", help="Exit 3 when an exported file loses more than this "
                 "against the Keras model, e.g. accuracy=0.02 (repeatable).", show_default=False),
]


class Format(str, Enum):
    """The file formats of `dltool export` (a Literal cannot be repeated in a typer option)."""

    savedmodel = "savedmodel"
    tflite = "tflite"
    tflite_fp16 = "tflite-fp16"
    tflite_int8 = "tflite-int8"
    onnx = "onnx"


CheckpointOpt = Annotated[Optional[str], typer.Option("--checkpoint", metavar="PATH", show_default=False,
                                                      help="A checkpoint folder or .keras file (default: the run's final model).")]


def _examples(*lines: str) -> str:
    """A command's help epilog: its examples, one per line."""
    return "Examples:\n\n" + "\n".join(f"  {line}" for line in lines) + f"\n\nDocs: {DOCS}."


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


@contextmanager
def _exits(as_json: bool, report=None):
    """Every command's errors, one way: a DltoolError is one line per line of its message on stderr (with
    --json, a summary on stdout) and its exit code. A quality gate missed after the outputs were written
    shows them with `report`, then exits with the summary marked failed_gate; a failed `dltool run` step
    exits with the steps done and the one that failed."""
    from dltool.errors import QualityGateError

    try:
        yield
    except QualityGateError as e:
        if report is None:
            _fail(e, as_json)
        report(e.summary)
        _gate_missed(e, e.summary.to_json() if hasattr(e.summary, "to_json") else e.summary, as_json)
    except DltoolError as e:
        from dltool.chain import ChainError

        if isinstance(e, ChainError):
            print(f"dltool: error: {e.summary['failed_step']}: {e}", file=sys.stderr)
            _finish(e.summary, as_json, e.exit_code)
        _fail(e, as_json)


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


def _storage_settings(items: list[str] | None) -> dict:
    """`--storage-option`s of a command that takes a dataset, not a config: checked as a `storage:` section."""
    from dltool.config.models import StorageSettings
    from dltool.errors import ConfigError

    try:
        return StorageSettings(**_storage_pairs(items)).model_dump()
    except ValueError as e:  # pydantic's ValidationError
        raise ConfigError("--storage-option: " + "; ".join(f"{'.'.join(map(str, err['loc'])) or 'storage'}: {err['msg']}"
                                                            for err in e.errors())) from e  # fmt: skip


def _load(config: Path, overrides: dict, check_tune: bool = False):
    from dltool.config.loader import load_config

    return load_config(config, overrides, check_tune=check_tune)


@app.command(epilog=_examples("dltool ingest experiment.yaml", "dltool ingest experiment.yaml --dry-run",
                              "dltool ingest experiment.yaml -i s3://raw/photos -d s3://datasets/photos"))
def ingest(
    config: ConfigArg,
    input: InputOpt = None,
    data: DataOpt = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", hidden=True, help="Old name of --data.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild the dataset even if it is up to date.")] = False,
    refit: Annotated[bool, typer.Option("--refit", help="Rebuild the dataset as its next version: classes, statistics "
                                        "and categories fitted again, every record kept in its split.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be read and written; start nothing.")] = False,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read raw images, audio, text or a table and write Parquet tensor shards with a manifest."""
    with _exits(as_json):
        from dltool import api

        cfg = _load(config, _overrides(master, conf, storage, dataset__path=data or output, ingest__input=input))
        summary = api.ingest(cfg, overwrite=overwrite, refit=refit, dry_run=dry_run, progress=not as_json)
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
    counts, splits = summary.counts, ", ".join(f"{k} {v}" for k, v in summary.splits.items())
    tally = f"{counts.ok} of {counts.inputs} inputs ok, {counts.quarantined} quarantined"
    if summary.changes is not None:
        changes = summary.changes
        counted = changes.get("files") or {what: sum(changes[what].values()) for what in ("added", "changed", "removed")}
        said = ", ".join(f"{counted[what]} {what}" for what in ("added", "changed", "removed"))
        _say(f"[green]✓[/] version {summary.version} of {summary.dataset} in {summary.seconds:.1f}s: files {said}; "
             f"{counts.rows} rows ({splits}); {tally}")  # fmt: skip
    else:
        _say(f"[green]✓[/] wrote {counts.rows} rows to {summary.dataset} in {summary.seconds:.1f}s ({splits}); {tally}")
    for error in summary.errors:
        stage = f"[{error['stage']}]"
        _say(f"  quarantined {_text(error['key'])}: {_text(stage)} {_text(error['message'])}")
    for warning in summary.warnings:
        _say(f"  [yellow]warning:[/] {_text(warning)}")
    for column, reason in summary.left_out.items():
        _say(f"  left out column {_text(column)}: {_text(reason)}")


@app.command(epilog=_examples("dltool train experiment.yaml", "dltool train experiment.yaml --workers 2 --epochs 30",
                              "dltool train experiment.yaml --resume   # from the newest checkpoint",
                              "dltool train daily.yaml -d data/photos -r runs/day2 --warm-start runs/day1 --epochs 3"))
def train(
    config: ConfigArg,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=1, metavar="N", show_default=False,
                                                   help="TensorFlow workers, one Spark task each (overrides train.workers).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, metavar="N", show_default=False,
                                                  help="Epochs (overrides train.epochs; unset: sized to the data, early stopping).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run dir's newest checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the run dir's previous run first.")] = False,
    mlflow: Annotated[
        Optional[str], typer.Option("--mlflow", metavar="URI", show_default=False,
                                    help="Log the run to this MLflow tracking URI (tracking.mlflow.tracking_uri).")
    ] = None,
    from_tune: Annotated[
        bool, typer.Option("--from-tune", help="Train with the best trial's values of the run dir's study (dltool tune).")
    ] = False,
    warm_start: Annotated[
        Optional[str], typer.Option("--warm-start", metavar="PATH", show_default=False,
                                    help="Start from this run dir's model (or a checkpoint folder or .keras file), "
                                         "trained on another version of the dataset; run.json names it the parent.")
    ] = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the config's model on its dataset: one Spark barrier task per TensorFlow worker."""
    with _exits(as_json):
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
        result = api.train(cfg, resume=resume, overwrite=overwrite, progress=not as_json, warm_start=warm_start)
    if result.status == "up_to_date":
        _say(f"[green]✓[/] {result.message}")
    else:
        best = result.best or {}
        best_text = f"; best {best['monitor']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""
        kept = f" (epoch {result.model_epoch}, the {result.kept})" if result.model_epoch else ""
        _say(f"[green]✓[/] trained {result.epochs_done} epochs in {result.seconds:.1f}s{best_text}; model{kept}: {result.model}")
    _finish(result.to_json(), as_json)


@app.command("eval", epilog=_examples("dltool eval experiment.yaml", "dltool eval experiment.yaml --checkpoint all --json",
                                      "dltool eval experiment.yaml --fail-under accuracy=0.9   # exit 3 below it",
                                      "dltool eval experiment.yaml --input held_out/           # labelled raw inputs"))
def eval_(
    config: ConfigArg,
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", metavar="all|PATH[,PATH...]", show_default=False,
                     help="'all', or checkpoint folders / .keras files, comma-separated; "
                     "default: the final model (else the best checkpoint)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="PATH", show_default=False,
                     help="Score this file instead of the run's models: an exported SavedModel folder, "
                     ".tflite or .onnx file (dltool export), or a .keras file."),
    ] = None,
    split: Annotated[str, typer.Option("--split", metavar="NAME", help="Dataset split to score.")] = "test",
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", metavar="PATH", show_default=False,
                     help="Labelled raw inputs to score instead of a split (a class-folder tree, "
                     "a CSV with the label column), read as the dataset was."),
    ] = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    fail_under: FailUnderOpt = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the run's model or checkpoints on a split with Spark: eval.json, a table and plots."""
    with _exits(as_json, report=_report_eval):
        from dltool import api
        from dltool.evaluate.score import parse_fail_under

        gates = parse_fail_under(fail_under)
        cfg = _load(config, _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir))
        summary = api.evaluate(cfg, checkpoint=checkpoint, split=split, fail_under=gates, progress=not as_json,
                               input=input, model=model)  # fmt: skip
    _report_eval(summary)
    _finish({**summary.to_json(), "status": "ok", "exit_code": 0}, as_json)


@app.command(epilog=_examples("dltool export experiment.yaml --format savedmodel",
                              "dltool export experiment.yaml -f tflite-int8 --max-drop accuracy=0.02"))
def export(
    config: ConfigArg,
    formats: Annotated[
        list[Format],
        typer.Option("--format", "-f", metavar="FORMAT", show_default=False,
                     help="savedmodel, tflite, tflite-fp16, tflite-int8 or onnx; repeatable."),
    ],
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="PATH", show_default=False,
                                               help="Folder for the files (default: RUN_DIR/export).")] = None,
    checkpoint: CheckpointOpt = None,
    calibration: Annotated[int, typer.Option("--calibration", metavar="ROWS", help="Train rows that calibrate tflite-int8.")] = 500,
    split: Annotated[str, typer.Option("--split", metavar="NAME", help="Split each format is scored on.")] = "test",
    max_drop: MaxDropOpt = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the run's model (SavedModel, TFLite float/fp16/int8, ONNX), score each file against it: export.json."""
    with _exits(as_json, report=_report_export):
        from dltool import api
        from dltool.export import parse_max_drop

        drops = parse_max_drop(max_drop)
        cfg = _load(config, _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir))
        target = output if output is None or "://" in output else os.path.abspath(output)
        summary = api.export(cfg, [f.value for f in formats], output=target, checkpoint=checkpoint, calibration=calibration,
                             split=split, max_drop=drops, progress=not as_json).to_json()  # fmt: skip
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


@app.command("run", epilog=_examples("dltool run experiment.yaml", "dltool run experiment.yaml --until export -f tflite --json"))
def run_(
    config: ConfigArg,
    until: Annotated[Literal["ingest", "train", "eval", "export"], typer.Option("--until", metavar="STEP",
                                       help="The last step: ingest, train, eval or export.")] = "eval",
    fail_under: FailUnderOpt = None,
    formats: Annotated[
        list[Format] | None,
        typer.Option("--format", "-f", metavar="FORMAT", show_default=False,
                     help="Export format for --until export: savedmodel, tflite, tflite-fp16, tflite-int8 or onnx; repeatable."),
    ] = None,
    max_drop: MaxDropOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo every step, up to date or not.")] = False,
    input: InputOpt = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest, train, eval (and export) in one Spark application, skipping steps that are up to date."""
    with _exits(as_json):
        from dltool import api
        from dltool.evaluate.score import parse_fail_under
        from dltool.export import parse_max_drop

        gates, drops = parse_fail_under(fail_under), parse_max_drop(max_drop)
        cfg = _load(config, _overrides(master, conf, storage, ingest__input=input, dataset__path=data,
                                       train__run_dir=run_dir))  # fmt: skip
        summary = api.run(cfg, until=until, fail_under=gates, formats=[f.value for f in formats or []], max_drop=drops,
                          overwrite=overwrite, progress=not as_json).to_json()  # fmt: skip
    for step, result in summary["steps"].items():
        _say(f"{step}: {_text(result.get('status', 'done'))}")
    _say(f"done in {summary['seconds']} s")
    _finish(summary, as_json)


@app.command(epilog=_examples("dltool tune experiment.yaml --trials 20", "dltool tune experiment.yaml --resume",
                              "dltool train experiment.yaml --from-tune    # then train with the best values"))
def tune(
    config: ConfigArg,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run dir's study (after a kill or a stop).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the run dir's study and start again.")] = False,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, metavar="N", show_default=False,
                                                  help="Trials in the study (overrides tune.trials).")] = None,
    parallel: Annotated[Optional[int], typer.Option("--parallel", min=1, metavar="N", show_default=False,
                                                    help="Trials at once (overrides tune.parallel).")] = None,
    data: DataOpt = None,
    run_dir: RunDirOpt = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the tune: space with Optuna (the [tune] extra), each trial a training on Spark: tune.json, plots, best.yaml."""
    with _exits(as_json):
        from dltool import api

        overrides = _overrides(master, conf, storage, dataset__path=data, train__run_dir=run_dir)
        overrides.update({k: v for k, v in {"tune.trials": trials, "tune.parallel": parallel}.items() if v is not None})
        cfg = _load(config, overrides, check_tune=True)
        summary = api.tune(cfg, resume=resume, overwrite=overwrite, progress=not as_json).to_json()
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


@app.command(epilog=_examples("dltool predict experiment.yaml --input new_photos/ --output preds/",
                              "dltool predict experiment.yaml -i new_rows.csv -o preds/ --keep customer_id"))
def predict(
    config: ConfigArg,
    input: Annotated[str, typer.Option("--input", "-i", metavar="PATH", show_default=False,
                                       help="A dltool dataset, raw inputs read as the config's reader reads them "
                                       "(a folder, CSV or text files), or a table.")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="PATH", show_default=False,
                                        help="Folder for the Parquet predictions.")],
    checkpoint: CheckpointOpt = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="PATH|URI", show_default=False,
                     help="Predict with this model instead of the run's: a .keras/.tflite/.onnx file, a "
                     "SavedModel folder, or a registered MLflow model (models:/NAME@ALIAS)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", metavar="NAME", help="Split to predict when --input is a dataset.")] = "test",
    run_dir: RunDirOpt = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", metavar="COLUMN", help="Table column copied into the output (an id); repeatable.",
                     show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Batch inference on Spark: one Parquet row per input with the predicted class and probabilities."""
    with _exits(as_json):
        from dltool import api

        cfg = _load(config, _overrides(master, conf, storage, train__run_dir=run_dir))
        result = api.predict(cfg, input, output, checkpoint=checkpoint, model=model, split=split, keep=keep or [],
                             overwrite=overwrite, progress=not as_json)  # fmt: skip
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
    for runtime, note in dict.fromkeys((e.runtime, e.runtime_note) for e in entries):
        _say(f"scored with {'onnxruntime' if runtime == 'onnxruntime' else 'TensorFlow'}: {note}")
    for gate in summary.gates:
        mark = "[green]✓[/]" if gate.passed else "[red]✗[/]"
        value = "undefined" if gate.value is None else f"{gate.value:.4f}"
        _say(f"{mark} {gate.metric} {value} (needs {gate.rule} {gate.threshold:g})")
    if summary.quarantined:
        _say(f"  [yellow]{summary.quarantined} input(s) quarantined while reading, not scored[/]")
    _say(f"results: {summary.eval_dir}")


@app.command(epilog=_examples("dltool init photos/ > experiment.yaml    # photos/cat/1.jpg, photos/dog/2.jpg ...",
                              "dltool init customers.csv -o churn.yaml", "dltool init photos/ -o exp.yaml && dltool validate exp.yaml"))
def init(
    data: Annotated[str, typer.Argument(metavar="PATH", help="Your data: a folder of images, audio or text in class "
                                        "folders (train/ and test/ above them or not), or a table file or folder "
                                        "(CSV, Parquet, ORC, JSON lines).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", show_default=False,
                                                   help="Write the YAML here (default: print it on stdout).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", show_default=False,
                                                help="The experiment's name (default: the data's folder or file name).")] = None,
) -> None:
    """Look at your data and write a commented experiment YAML that validates and trains: the reader, the labels,
    the split, the sizes, each guess explained."""
    with _exits(False):
        from dltool.errors import ConfigError
        from dltool.guess import guess_config

        if output is not None and output.exists():
            raise ConfigError(f"{output} exists: dltool init does not replace a file; name another with -o")
        guess = guess_config(data, base=str(output.parent) if output is not None else None, name=name)
        for note in guess.notes:
            _say(f"  {_text(note)}")
        if output is None:
            sys.stdout.write(guess.yaml)
        else:
            output.write_text(guess.yaml, encoding="utf-8")
            _say(f"[green]✓[/] wrote {_text(output)}: check it with dltool validate {_text(output)}, then dltool ingest, "
                 "train and eval")


@app.command(epilog=_examples("dltool validate experiment.yaml", "dltool validate experiment.yaml --untrusted --json"))
def validate(
    config: ConfigArg,
    untrusted: Annotated[bool, typer.Option("--untrusted", help="Also refuse a config that names code to run "
                         "(a model factory, TFSMLayer/Lambda layers, Spark settings that load jars or plugins).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a config file without starting Spark: fields, values, the tune space, the input (exit 2 when invalid)."""
    with _exits(as_json):
        from dltool import api

        warnings = api.validate(config, untrusted=untrusted)
        cfg = _load(config, {})
    for warning in warnings:
        _say(f"  [yellow]warning:[/] {_text(warning)}")
    parts = [f"{cfg.ingest.reader} reader" if cfg.ingest else "no ingest", f"dataset {cfg.dataset.path}"]
    if cfg.train:
        parts.append(f"{cfg.train.model.kind} model, run dir {cfg.train.run_dir}")
    _say(f"[green]✓[/] {config}: valid ({', '.join(parts)})")
    _finish({"status": "ok", "config": str(config), "name": cfg.name, "warnings": warnings}, as_json)


@app.command(epilog=_examples("dltool doctor", "dltool doctor experiment.yaml --master yarn"))
def doctor(
    config: Annotated[Optional[Path], typer.Argument(metavar="CONFIG", help="Experiment YAML to check for "
                                                     "(default: a local Spark).", show_default=False)] = None,
    master: MasterOpt = None,
    conf: ConfOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Preflight: Java, Spark on the configured master, task slots, GPUs, executors' dltool, storage (exit 2 on a failure)."""
    with _exits(as_json):
        from dltool.config.models import SparkSettings
        from dltool.doctor import run_doctor

        overrides = _overrides(master, conf, storage)
        cfg = _load(config, overrides) if config is not None else None
        spark = {key.split(".", 1)[1]: value for key, value in overrides.items() if key.startswith("spark.")}
        checks = run_doctor(cfg, SparkSettings(**spark))
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        fix = f" [yellow]→ {_text(check.fix)}[/]" if check.fix else ""
        _say(f"{mark} {check.name}: {_text(check.found)}{fix}")
    failed = [c.name for c in checks if not c.ok]
    summary = {"status": "ok" if not failed else "failed", "failed": failed, "checks": [c.to_json() for c in checks]}
    _finish(summary, as_json, 2 if failed else 0)


@app.command(epilog=_examples("dltool inspect out/datasets/digits", "dltool inspect out/datasets/digits --versions",
                              "dltool inspect s3://datasets/photos --verify --json"))
def inspect(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="Dataset location (path or URI).", show_default=False)],
    storage: StorageOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Read every shard and check its size and hash against "
                                         "the manifest (exit 1 naming a damaged one).")] = False,
    versions: Annotated[bool, typer.Option("--versions", help="List the dataset's versions: what each ingest "
                                           "added, changed and removed per split (read one as DATASET@N).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset's manifest, counts per split and class, schema and a sample row; DATASET@N: its version N."""
    with _exits(as_json):
        from dltool.describe import describe_dataset

        info = describe_dataset(dataset, _storage_settings(storage), verify=verify)
    if not as_json:
        from dltool.describe import print_description, print_versions

        print_versions(info) if versions else print_description(info)
    _finish(info, as_json)


@app.command(epilog=_examples("dltool gc out/datasets/digits --keep 3", "dltool gc s3://datasets/photos --dry-run"))
def gc(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="Dataset location (path or URI).", show_default=False)],
    keep: Annotated[int, typer.Option("--keep", min=1, metavar="N", help="The newest versions to keep readable.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove the shards and version files of a grown dataset that none of its newest versions uses."""
    with _exits(as_json):
        from dltool import api
        from dltool.storage.stores import storage_scope

        with storage_scope(_storage_settings(storage)):
            result = api.gc(dataset, keep=keep, dry_run=dry_run)
    verb = "would remove" if result.dry_run else "removed"
    versions = ", ".join(map(str, result.removed_versions)) or "none"
    _say(f"[green]✓[/] {verb} {result.files} files ({result.bytes / 2**20:.1f} MB) of {_text(result.dataset)}: "
         f"versions {versions}; readable: {', '.join(map(str, result.kept))}")  # fmt: skip
    _finish(result.to_json(), as_json)


@app.command(epilog=_examples("dltool schema > dltool.schema.json"))
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
