"""`dltool tune`: a hyperparameter search with Optuna whose trials are dltool trainings on Spark.

The driver holds the study (Optuna's journal file in RUN_DIR/tune/, on any store, so a killed search resumes) and asks it
for trials; each trial is `run_training` on the config with the trial's values, in its own run dir
RUN_DIR/tune/trial-NNN, started from a driver thread so that `parallel` trials run at once (one barrier
stage each, of train.workers tasks). Every finished epoch goes to the pruner; a pruned trial is asked to
stop through its run dir's STOP file and ends after the epoch it is in. A trial that fails is recorded
with its error and the search goes on.
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import yaml

from dltool.config.loader import apply_settings, check_space
from dltool.config.models import ExperimentConfig, TrainSettings
from dltool.config.redaction import redact
from dltool.errors import ConfigError, DltoolError
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.ownership import check_replaceable, delete_owned, is_owned, mark
from dltool.storage.stores import with_storage
from dltool.train import checkpoints as ckpt
from dltool.train.metrics import lower_is_better

TUNE_DIR = ckpt.TUNE_DIR
JOURNAL = "study.journal"
SUMMARY = "tune.json"
BEST = "best.yaml"
PLOTS = {"history": "optimization_history.png", "importance": "param_importances.png",
         "parallel": "parallel_coordinate.png"}  # fmt: skip


@dataclass
class TrialRun:
    """What one trial did, as tune.json records it."""

    number: int
    params: dict
    run_dir: str
    state: str = "running"
    value: float | None = None
    epochs: int = 0
    pruned_at: int | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    rerun_of: int | None = None

    def to_json(self) -> dict:
        seconds = round(self.finished - self.started, 1) if self.finished else None
        return {**self.__dict__, "seconds": seconds}


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise DltoolError("dltool tune needs Optuna: pip install 'dltool[tune]'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class TuneResult:
    """A study (or the finding that it was already done); `summary` is tune.json as written."""

    status: str  # "completed" or "up_to_date"
    best: dict | None  # {"number", "value", "params", "run_dir", "epochs"} of the best trial
    counts: dict  # trials per state: complete, pruned, failed, interrupted, running
    best_config: str | None  # URI of best.yaml: the config with the best trial's values
    seconds: float
    message: str | None = None  # why nothing was done (up_to_date)
    summary: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_summary(cls, summary: dict) -> TuneResult:
        return cls(status=summary["status"], best=summary.get("best"), counts=summary.get("counts", {}),
                   best_config=summary.get("best_config"), seconds=float(summary.get("seconds", 0.0)),
                   message=summary.get("message"), summary=summary)  # fmt: skip

    def to_json(self) -> dict:
        return dict(self.summary)


@with_storage
def run_tune(config: ExperimentConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or continue) the config's study; returns the tune.json summary. Raises DltoolError on failure."""
    from dltool.evaluate.report import start_loading_plots
    from dltool.storage.manifest import Manifest

    started = time.monotonic()
    settings, train = config.tune, config.train
    if settings is None or train is None:
        raise ConfigError("the config needs train and tune sections to tune (see docs/tuning.md)")
    check_space(config)  # the CLI checked it with YAML lines already; a config built in Python is checked here
    metric = settings.metric or train.monitor
    direction = settings.direction or ("minimize" if lower_is_better(metric) else "maximize")
    folder = open_location(train.run_dir).child(TUNE_DIR)
    done = _earlier_study(folder, config, metric, direction, resume, overwrite)
    if done is not None:
        return done
    Manifest.read(open_dataset(config.dataset.path))  # the dataset must exist before Spark starts
    if not folder.exists():
        folder.fs.create_dir(folder.path, recursive=True)
        mark(folder, "study")
    elif not is_owned(folder):
        check_replaceable(folder, "study folder")  # empty (fine), or someone else's: refused
    optuna = _optuna()
    local_journal, keep_journal = _journal_here(folder.child(JOURNAL))
    study = _study(optuna, config, local_journal, direction)
    runs = _recover(study, folder) if resume else {}
    spark, workers, parallel = _cluster(config, settings)
    def record(status: str) -> dict:
        return _write_summary(folder, config, metric, direction, runs, study, status, started)

    trials = _Trials(config, metric, workers, parallel, TuneView(progress, metric))
    start_loading_plots(TUNE_PLOT_MODULES, agg=True)  # while the trials run: 2.8 s after them before (measured)
    trials.run(spark, optuna, study, folder, runs, keep_journal, lambda: record("running"))
    summary = record("completed")
    summary.update(parallel=parallel, workers_per_trial=workers)
    if summary["best"] is None:
        raise DltoolError(f"no trial finished: every one of the {len(runs)} failed (first: {_first_error(runs)})")
    best_config = _best_config(config, summary["best"]["params"])
    folder.child(BEST).write_bytes(yaml.safe_dump(best_config, sort_keys=False).encode())
    summary["plots"] = _plots(optuna, study, folder)
    summary["best_config"] = folder.child(BEST).uri
    folder.child(SUMMARY).write_bytes(json.dumps(summary, indent=2).encode())
    return summary


def _earlier_study(folder: Location, config: ExperimentConfig, metric: str, direction: str, resume: bool,
                   overwrite: bool) -> dict | None:  # fmt: skip
    """The summary of a study that is already done (up to date), a ConfigError for a study there without
    --resume, else None: start it (after removing the old one with --overwrite) or continue it."""
    previous = ckpt.read_json(folder.child(SUMMARY))
    if overwrite and folder.exists():
        delete_owned(folder, "study folder")
    elif folder.child(JOURNAL).exists() and not resume:
        if previous and previous.get("status") == "completed" and previous["study"] == _study_record(config, metric, direction):
            return {**previous, "status": "up_to_date", "message": f"{folder.uri}: the study is done; --overwrite reruns it"}
        raise ConfigError(f"{folder.uri}: holds a study; pass --resume to continue it or --overwrite to start again")
    return None


def _study(optuna, config: ExperimentConfig, journal_path: str, direction: str):
    """The Optuna study in its journal (loaded when it exists), with the config's enqueued trials first."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    settings, train = config.tune, config.train
    study = optuna.create_study(
        storage=JournalStorage(JournalFileBackend(journal_path)), study_name=config.name, direction=direction,
        sampler=_sampler(optuna, settings, train), pruner=_pruner(optuna, settings), load_if_exists=True,
    )  # fmt: skip
    if not study.trials:
        for values in settings.enqueue:
            study.enqueue_trial({key: _storable(value) for key, value in values.items()}, skip_if_exists=True)
    return study


class _Trials:
    """The study's trials, `parallel` at once, each a `run_training` on the shared Spark application."""

    def __init__(self, config: ExperimentConfig, metric: str, workers: int, parallel: int, view: TuneView):
        self.config, self.metric, self.workers, self.parallel, self.view = config, metric, workers, parallel, view
        self.lock = threading.Lock()

    def run(self, spark, optuna, study, folder: Location, runs: dict, keep_journal, record) -> None:
        """Ask for trials until the study has its number, telling Optuna each result as it comes; on any
        failure or interrupt, the running trials' Spark jobs are cancelled before the pool waits for them."""
        with self.view, ThreadPoolExecutor(self.parallel, thread_name_prefix="dltool-trial") as pool:
            try:
                self._loop(pool, optuna, study, folder, runs, keep_journal, record)
            except BaseException:
                spark.sparkContext.cancelAllJobs()
                raise
            finally:
                keep_journal()

    def _loop(self, pool, optuna, study, folder: Location, runs: dict, keep_journal, record) -> None:
        settings = self.config.tune
        distributions = _distributions(optuna, settings.space)
        target = min(settings.trials, _grid_size(settings)) if settings.sampler == "grid" else settings.trials
        running: dict = {}
        while _counted(runs) + len(running) < target or running:
            while len(running) < self.parallel and _counted(runs) + len(running) < target:
                trial = study.ask(distributions)
                run = TrialRun(trial.number, dict(trial.params), folder.child(f"trial-{trial.number:03d}").uri,
                               rerun_of=trial.user_attrs.get("rerun_of"))  # fmt: skip
                runs[trial.number] = run
                self.view.update(run)
                running[pool.submit(contextvars.copy_context().run, self.one, trial, run)] = trial
                record()
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                trial = running.pop(future)
                run = future.result()
                _tell(study, optuna, trial, run)
                self.view.update(run)
                keep_journal()
                record()

    def one(self, trial, run: TrialRun) -> TrialRun:
        """Train one trial, reporting each epoch's metric to the pruner (a pruned trial is asked to stop)."""
        from dltool.train.run import run_training

        def on_epoch(event: dict) -> None:
            value = event["logs"].get(self.metric)
            run.epochs = event["epoch"]
            if value is None:
                return
            with self.lock:
                trial.report(value, event["epoch"])
                prune = run.pruned_at is None and trial.should_prune()
            if prune:
                run.pruned_at = event["epoch"]
                open_location(run.run_dir).child(ckpt.STOP_FILE).write_bytes(b"pruned by dltool tune\n")
            self.view.update(run)

        config = _trial_config(self.config, run.params, run.run_dir, self.workers, self.metric)
        try:
            summary = run_training(config, quiet=True, on_epoch=on_epoch, sharing=self.parallel, check_model=False,
                                   reuse_workers=True, scoring_copies=False)  # fmt: skip
        except DltoolError as e:
            run.state, run.error = "failed", str(e).splitlines()[0]
        else:
            run.epochs = summary["epochs_done"]
            run.value = (summary.get("best") or {}).get("value")
            run.state = "pruned" if summary.get("stopped_on_request") else "complete"
            run.pruned_at = run.epochs if run.state == "pruned" else None  # the epoch it stopped after
        run.finished = time.time()
        return run


# ------------------------------------------------------------------------------------------------ study


def _journal_here(journal: Location):
    """The study journal as a local file Optuna can lock, and a function that keeps it where the study lives.

    On local disk that is the journal itself. On HDFS or an object store (no file locks) the driver, the study's
    only writer, works on a copy in a temporary folder: fetched first (to resume), written back after every
    finished trial and at the end. A search killed mid-trial resumes from the last finished one.
    """
    if journal.fs.type_name == "local":
        return journal.path, lambda: None
    import atexit
    import shutil
    import tempfile

    here = tempfile.mkdtemp(prefix="dltool-study-")
    atexit.register(shutil.rmtree, here, True)
    local = f"{here}/{JOURNAL}"
    if journal.exists():
        with open(local, "wb") as copy:
            copy.write(journal.read_bytes())

    def keep() -> None:
        if os.path.exists(local):
            with open(local, "rb") as copy:
                journal.write_bytes(copy.read())

    return local, keep



def _sampler(optuna, settings, train: TrainSettings):
    seed = train.seed if settings.seed is None else settings.seed
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler({key: spec["choice"] for key, spec in settings.space.items()}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, settings.trials // 3)))


def _pruner(optuna, settings):
    pruner = settings.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs)
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def _distributions(optuna, space: dict[str, dict]) -> dict:
    d = optuna.distributions
    made = {}
    for key, spec in space.items():
        step = spec.get("step")
        if "choice" in spec:
            # Optuna keeps choices it can store as they are; lists (layer widths) go in as their JSON.
            made[key] = d.CategoricalDistribution([_storable(v) for v in spec["choice"]])
        elif "int" in spec:
            made[key] = d.IntDistribution(*spec["int"], step=int(step or 1))
        else:
            low, high = map(float, spec.get("uniform") or spec["loguniform"])
            made[key] = d.FloatDistribution(low, high, log="loguniform" in spec, step=step)
    return made


def _storable(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _grid_size(settings) -> int:
    size = 1
    for spec in settings.space.values():
        size *= len(spec["choice"])
    return size


def _recover(study, folder: Location) -> dict[int, TrialRun]:
    """The runs of a study being resumed, from tune.json; trials a killed search left running are marked failed
    (interrupted: they do not count) and queued again with the same values."""
    from optuna.trial import TrialState

    recorded = {run["number"]: run for run in (ckpt.read_json(folder.child(SUMMARY)) or {}).get("trials", [])}
    runs: dict[int, TrialRun] = {}
    for trial in study.get_trials(deepcopy=False):
        entry = recorded.get(trial.number, {})
        run = TrialRun(trial.number, dict(trial.params), folder.child(f"trial-{trial.number:03d}").uri,
                       **{k: entry[k] for k in ("value", "epochs", "pruned_at", "error", "started", "finished",
                                                 "rerun_of") if k in entry})  # fmt: skip
        if trial.state == TrialState.RUNNING:
            # Optuna has no public call to fail another process's trial; its storage is the documented way.
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(dict(trial.params), user_attrs={"rerun_of": trial.number})
            run.state, run.error = "interrupted", "the search stopped while this trial ran; it is run again"
        elif trial.state != TrialState.WAITING:
            run.state = entry.get("state") or trial.state.name.lower()
        else:
            continue
        runs[trial.number] = run
    return runs


def _counted(runs: dict[int, TrialRun]) -> int:
    return sum(run.state in ("complete", "pruned", "failed") for run in runs.values())


def _tell(study, optuna, trial, run: TrialRun) -> None:
    state = optuna.trial.TrialState
    if run.state == "failed":
        trial.set_user_attr("error", run.error)
        study.tell(trial, state=state.FAIL)
    elif run.state == "pruned":
        study.tell(trial, state=state.PRUNED)
    elif run.value is None:
        run.state, run.error = "failed", "the run logged no value of the metric"
        study.tell(trial, state=state.FAIL)
    else:
        study.tell(trial, run.value)


def _first_error(runs: dict[int, TrialRun]) -> str:
    return next((run.error for run in runs.values() if run.error), "no error recorded")


# ------------------------------------------------------------------------------------------------ trials


def _cluster(config: ExperimentConfig, settings) -> tuple:
    """The Spark session, the workers of one trial and how many trials run at once; fails fast when the cluster
    cannot hold one trial."""
    from dltool.train.barrier import check_slots, wait_for_slots
    from dltool.spark.shipping import config_code
    from dltool.train.run import training_session

    spark = training_session(config, config_code(config))
    workers = config.train.workers or 1
    # All the executors that are coming, not just enough for one trial: `parallel` is sized from them
    # (a driver that starts quickly would otherwise see one executor of two and run trials one by one).
    slots = wait_for_slots(spark, None if settings.parallel is None else workers * settings.parallel)
    check_slots(spark, workers, slots)
    parallel = settings.parallel or max(1, slots // workers)
    return spark, workers, max(1, min(parallel, slots // workers))


def _trial_config(config: ExperimentConfig, values: dict, run_dir: str, workers: int, metric: str) -> ExperimentConfig:
    decoded = {key: _decoded(value) for key, value in values.items()}
    train = apply_settings(config.train.model_dump(mode="json"), decoded)
    train.update(run_dir=run_dir, workers=workers, monitor=metric)
    return config.model_copy(update={"train": TrainSettings.model_validate(train)})


def _decoded(value):
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def best_values(config: ExperimentConfig) -> dict:
    """The best trial's values of the config's study (`dltool train --from-tune`), as train overrides."""
    folder = open_location(config.train.run_dir).child(TUNE_DIR) if config.train else None
    summary = ckpt.read_json(folder.child(SUMMARY)) if folder else None
    if not summary or not summary.get("best"):
        where = folder.uri if folder else "the config (no train section)"
        raise ConfigError(f"{where}: no finished study with a best trial; run dltool tune first")
    return {key: _decoded(value) for key, value in summary["best"]["params"].items()}


def _best_config(config: ExperimentConfig, params: dict) -> dict:
    """The config as the user wrote it (what was set), with the best trial's values: `dltool train` takes it."""
    data = config.model_dump(mode="json", exclude_unset=True)
    data["train"] = apply_settings(data["train"], {key: _decoded(v) for key, v in params.items()})
    return redact(data)  # a file on disk: secrets (spark.conf keys, URIs' user info) stay out of it


# ------------------------------------------------------------------------------------------------ results


def _study_record(config: ExperimentConfig, metric: str, direction: str) -> dict:
    settings = config.tune
    return {"name": config.name, "metric": metric, "direction": direction, "trials": settings.trials,
            "sampler": settings.sampler, "pruner": settings.pruner.type, "space": settings.space}  # fmt: skip


def _write_summary(folder, config, metric, direction, runs, study, status, started) -> dict:
    finished = [run for run in runs.values() if run.state == "complete" and run.value is not None]
    pick = min if direction == "minimize" else max
    best = pick(finished, key=lambda run: run.value) if finished else None
    states = [run.state for run in runs.values()]
    summary = {
        "status": status, "study": _study_record(config, metric, direction), "journal": folder.child(JOURNAL).uri,
        "counts": {state: states.count(state) for state in ("complete", "pruned", "failed", "interrupted", "running")},
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                           "run_dir": best.run_dir, "epochs": best.epochs},
        "trials": [run.to_json() for run in sorted(runs.values(), key=lambda run: run.number)],
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    folder.child(SUMMARY).write_bytes(json.dumps(summary, indent=2).encode())
    return summary


# What `_plots` imports, in order: Optuna's importance module imports scikit-learn where it is installed (1.1 s here).
TUNE_PLOT_MODULES = ("matplotlib", "matplotlib.pyplot", "optuna.visualization.matplotlib", "optuna.importance")


def _plots(optuna, study, folder: Location) -> dict[str, str]:
    """Optuna's optimisation history, parameter importances and parallel coordinates as PNGs (those the study's
    finished trials allow: importances need two)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    made = {}
    for name, draw in (("history", plots.plot_optimization_history), ("importance", plots.plot_param_importances),
                       ("parallel", plots.plot_parallel_coordinate)):  # fmt: skip
        if name == "importance" and len(finished) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = draw(study)
            except (ValueError, RuntimeError):
                continue  # e.g. importances over one value of every parameter
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        target, image = folder.child(PLOTS[name]), io.BytesIO()
        figure.savefig(image, format="png", dpi=100, bbox_inches="tight")  # then written to any store
        plt.close(figure)
        target.write_bytes(image.getvalue())
        made[name] = target.uri
    return made


class TuneView:
    """A live table of the trials on stderr (trial, values, metric, state, epochs); silent for --json."""

    def __init__(self, enabled: bool, metric: str):
        self.enabled, self.metric = enabled, metric
        self.runs: dict[int, TrialRun] = {}
        self._live = None
        self._lock = threading.Lock()

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(*exc)
            if not self._live.console.is_terminal:
                self._live.console.line()  # the last frame ends without a newline off a terminal

    def update(self, run: TrialRun) -> None:
        with self._lock:
            self.runs[run.number] = run
            if self._live is not None:
                self._live.update(self._table())

    def _table(self):
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"dltool tune: {self.metric}", title_justify="left")
        for column in ("trial", "values", self.metric, "state", "epochs"):
            table.add_column(column, justify="right" if column in ("trial", "epochs", self.metric) else "left")
        for run in sorted(self.runs.values(), key=lambda r: r.number):
            values = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in run.params.items())
            state = run.state + (f" at epoch {run.pruned_at}" if run.state == "pruned" else "")
            if run.error:
                state += f": {run.error[:80]}"
            metric = "" if run.value is None else f"{run.value:.4f}"
            table.add_row(str(run.number), escape(values), metric, escape(state), str(run.epochs))
        return table


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
