"""MLflow tracking: a training run's config, per-epoch metrics, files and model, then eval and export, in one MLflow run.

Only the driver logs: the chief worker's per-epoch results reach it as events, so one
MLflow run per training run holds every epoch whatever the number of workers. The MLflow
run's id is kept in `run.json`, where eval and export find it to log into the same run.
MLflow is optional (`pip install 'dltool[mlflow]'`) and imported only when a config asks
for it. Everything goes through an `MlflowClient` told its tracking URI: MLflow's global
(fluent) run state is never touched.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from dltool.errors import DltoolError

__all__ = ["Tracker", "check_reachable", "mlflow_model_path"]

PARAM_LIMIT = 500  # characters of one param value kept (MLflow's limit is 6,000; configs hold long lists)


def _off_stdout(method):
    """MLflow prints links ("View run ... at") on stdout, which belongs to dltool's --json result: send them to stderr."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        with redirect_stdout(sys.stderr):
            return method(*args, **kwargs)

    return run


def _mlflow():
    try:
        import mlflow
    except ImportError as e:
        raise DltoolError("tracking.mlflow needs MLflow: pip install 'dltool[mlflow]'") from e
    return mlflow


class Tracker:
    """One MLflow run: created for a training run, or reopened from the id its run.json recorded."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.client = MlflowClient(tracking_uri=tracking_uri)

    @classmethod
    @_off_stdout
    def start(cls, settings, config, run_name: str) -> Tracker:
        """A new MLflow run in `settings.experiment` with the flattened config as its params."""
        _mlflow()
        from mlflow.tracking import MlflowClient

        check_reachable(settings.tracking_uri)
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        try:
            experiment = client.get_experiment_by_name(settings.experiment)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
            run = client.create_run(experiment_id, run_name=settings.run_name or run_name,
                                    tags={"dltool.experiment": config.name})  # fmt: skip
        except Exception as e:  # noqa: BLE001 - requests' and MLflow's errors for an unreachable server
            raise DltoolError(f"tracking.mlflow: cannot reach {settings.tracking_uri}: {_first_line(e)}") from e
        tracker = cls(settings.tracking_uri, run.info.run_id)
        tracker.log_params(_flatten(config.redacted()))
        return tracker

    @classmethod
    def reopen(cls, recorded: dict | None) -> Tracker | None:
        """The MLflow run a run.json recorded (`mlflow: {tracking_uri, run_id}`), or None."""
        if not recorded:
            return None
        _mlflow()
        return cls(recorded["tracking_uri"], recorded["run_id"])

    def record(self) -> dict:
        """What run.json keeps to find this run again."""
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}

    @_off_stdout
    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        from dltool.config.redaction import redact

        items = [Param(k, str(v)[:PARAM_LIMIT]) for k, v in redact(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    @_off_stdout
    def log_metrics(self, metrics: dict, step: int | None = None, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(prefix + k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"]  # fmt: skip
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    @_off_stdout
    def log_files(self, location, artifact_path: str) -> None:
        """A run-dir file or folder (local or remote) as artifacts under artifact_path."""
        with _local(location) as path:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    @_off_stdout
    def log_keras_model(self, model_location, manifest, register_as: str | None) -> str | None:
        """The model in MLflow's Keras flavour with a signature and an input example, under `model/`; registered
        as a new version of `register_as` when set (its version is returned)."""
        import numpy as np

        mlflow = _mlflow()
        from mlflow.models import infer_signature

        from dltool.artefacts import load_model
        from dltool.tfenv import import_tensorflow_quietly

        import_tensorflow_quietly()
        import keras

        model = load_model(keras, model_location.uri)
        example = np.zeros((1, *manifest.features.shape), dtype=manifest.features.dtype)
        signature = infer_signature(example, np.asarray(model(example, training=False)))
        scratch = Path(tempfile.mkdtemp(prefix="dltool-mlflow-"))
        try:
            # save_model into a folder that exists (MLflow 3.17 writes the example before creating it), then
            # upload: no fluent run state is touched.
            mlflow.keras.save_model(model, str(scratch), signature=signature, input_example=example)
            self.client.log_artifacts(self.run_id, str(scratch), "model")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if not register_as:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(register_as)
        except MlflowException:
            pass  # it exists: add a version
        source = self.client.get_run(self.run_id).info.artifact_uri.rstrip("/") + "/model"
        return str(self.client.create_model_version(register_as, source, run_id=self.run_id).version)

    @_off_stdout
    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


@_off_stdout
def mlflow_model_path(uri: str, target: str, tracking_uri: str | None = None) -> str:
    """A `models:/NAME@ALIAS` (or runs:/) model downloaded into the folder `target`: the path of its .keras file.
    The registry is the one at tracking_uri (default: MLflow's own, MLFLOW_TRACKING_URI)."""
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    try:
        source = uri
        if uri.startswith("models:/"):  # resolved here: download_artifacts would ask the global registry
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            name, _, alias = uri.removeprefix("models:/").partition("@")
            if alias:
                version = client.get_model_version_by_alias(name, alias)
            else:
                name, _, number = name.partition("/")
                version = client.get_model_version(name, number)
            source = version.source
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=target, tracking_uri=tracking_uri))
    except Exception as e:  # noqa: BLE001 - MLflow's errors for an unknown name, alias or server
        raise DltoolError(f"{uri}: cannot load the registered model: {_first_line(e)}") from e
    found = sorted(local.rglob("*.keras"))
    if not found:
        raise DltoolError(f"{uri}: the registered model holds no .keras file (not logged by dltool's Keras flavour)")
    return str(found[0])


def check_reachable(uri: str) -> None:
    """A quick look at an HTTP tracking server (MLflow's client retries for minutes before it gives up)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except urllib.error.HTTPError:
        return  # it answered: a server behind a proxy may not serve /health
    except OSError as e:
        raise DltoolError(f"tracking.mlflow: cannot reach {uri}: {getattr(e, 'reason', e)}") from e


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@contextmanager
def _local(location):
    import pyarrow.fs as pafs

    if isinstance(location.fs, pafs.LocalFileSystem):
        yield Path(location.path)
        return
    scratch = Path(tempfile.mkdtemp(prefix="dltool-track-"))
    try:
        path = scratch / location.path.rstrip("/").rsplit("/", 1)[-1]
        if location.is_dir():
            pafs.copy_files(location.path, str(path), source_filesystem=location.fs,
                            destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        else:
            path.write_bytes(location.read_bytes())
        yield path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
