"""The one table from foreign errors to ours (map_errors) and the one form errors cross processes in (ErrorRecord).

PySpark's and py4j's own exception classes are built here without a JVM where they allow it;
a py4j Java error fetches its text from a live gateway, so a subclass that is given the text
Spark gives a failed job stands in for it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from py4j.protocol import Py4JJavaError, Py4JNetworkError
from pyspark.errors.exceptions.base import AnalysisException, PySparkRuntimeError, PythonException

from dltool.errors import (
    ConfigError,
    DltoolError,
    EnvironmentProblem,
    ErrorRecord,
    InputNotFoundError,
    QualityGateError,
    StorageError,
    map_errors,
)

TASK_FAILED = """An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 3.0 failed 1 times, \
most recent failure: Lost task 1.0 in stage 3.0 (TID 7) (127.0.0.1 executor driver): \
org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/site-packages/dltool/ingest/files.py", line 306, in _run_file_task
    examples = reader.decode(data, key)
ImportError: libsndfile could not be loaded (broken install)

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/site-packages/dltool/ingest/files.py", line 308, in _run_file_task
    raise EnvironmentProblem(
dltool.errors.EnvironmentProblem: the audio reader cannot run on this executor (ImportError: libsndfile) while decoding a.wav

\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:572)
\tat org.apache.spark.scheduler.Task.run(Task.scala:147)
Driver stacktrace:
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2898)
"""


class JavaError(Py4JJavaError):
    """py4j's Py4JJavaError with its text given, not fetched from a JVM."""

    def __init__(self, text: str):
        Exception.__init__(self, text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def java_error(text: str) -> Py4JJavaError:
    return JavaError(text)


def mapped(error: BaseException, what: str = "ingest of /data") -> BaseException:
    with pytest.raises(BaseException) as info:
        with map_errors(what):
            raise error
    return info.value


# ------------------------------------------------------------------------------------------ map_errors


def test_dltool_errors_and_unnamed_foreign_errors_pass_through_unchanged():
    ours = QualityGateError("accuracy 0.5, needs >= 0.9")
    assert mapped(ours) is ours
    bug = KeyError("features")
    assert mapped(bug) is bug  # a bug in dltool must look like one


def test_analysis_exception_is_a_config_error():
    error = mapped(AnalysisException(message="[PATH_NOT_FOUND] Path does not exist: file:/nowhere."),
                   "ingest.input: reading '/nowhere' as parquet")  # fmt: skip
    assert type(error) is ConfigError and error.exit_code == 2
    assert str(error) == "ingest.input: reading '/nowhere' as parquet failed: [PATH_NOT_FOUND] Path does not exist: file:/nowhere."
    assert isinstance(error.__cause__, AnalysisException)


def test_a_dltool_error_raised_in_a_task_comes_back_as_itself():
    error = mapped(java_error(TASK_FAILED))
    assert type(error) is EnvironmentProblem and error.exit_code == 1
    assert str(error) == (
        "ingest of /data failed: the audio reader cannot run on this executor (ImportError: libsndfile) while decoding a.wav"
    )
    python = PythonException(message="An exception was thrown from the Python worker.\n"
                                     "dltool.errors.ConfigError: /run/model.keras: the model has 3 outputs")  # fmt: skip
    error = mapped(python, "scoring")
    assert type(error) is ConfigError and str(error) == "scoring failed: /run/model.keras: the model has 3 outputs"


def test_a_foreign_task_failure_is_its_last_error_line():
    text = TASK_FAILED.replace("dltool.errors.EnvironmentProblem", "ValueError")
    error = mapped(java_error(text), "predict")
    assert type(error) is DltoolError
    assert str(error) == "predict failed: ValueError: the audio reader cannot run on this executor (ImportError: libsndfile) while decoding a.wav"


def test_a_failed_jvm_job_is_its_deepest_cause():
    text = ("An error occurred while calling o279.collectToPython.\n"
            ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 9.0 failed 1 times\n"
            "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2898)\n"
            "Caused by: org.apache.spark.SparkException: StringIndexer encountered NULL value. To handle or skip "
            "NULLS, try setting StringIndexer.handleInvalid.\n"
            "\tat org.apache.spark.ml.feature.StringIndexerModel.$anonfun$getIndexer$1(StringIndexer.scala:406)\n")  # fmt: skip
    error = mapped(java_error(text), "writing dataset /d")
    assert str(error) == ("writing dataset /d failed: org.apache.spark.SparkException: StringIndexer encountered NULL "
                          "value. To handle or skip NULLS, try setting StringIndexer.handleInvalid.")  # fmt: skip


def test_an_unknown_dltool_name_in_spark_text_is_not_trusted():
    error = mapped(java_error("org.apache.spark.SparkException: Job aborted\ndltool.errors.NoSuchError: x"))
    assert type(error) is DltoolError and error.exit_code == 1  # shown as text, never raised as a class
    assert str(error) == "ingest of /data failed: dltool.errors.NoSuchError: x"


def test_a_lost_executor_is_named():
    text = ("org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 4.0 failed 1 times, "
            "most recent failure: Lost task 1.0 in stage 4.0 (TID 9) (127.0.0.1 executor 1): ExecutorLostFailure "
            "(executor 1 exited caused by one of the running tasks) Reason: Command exited with code 137\n"
            "Driver stacktrace:")  # fmt: skip
    error = mapped(java_error(text), "the barrier stage")
    assert str(error) == "the barrier stage failed: Spark executor 1 was lost (Command exited with code 137)"


def test_a_killed_worker_is_its_first_line_whatever_its_output_said():
    text = ("org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
            "dltool.errors.DltoolError: dltool worker 1 was killed by SIGKILL\n"
            "  | epoch 2 step 10\n  | dltool.errors.ConfigError: printed by the user's factory\n")  # fmt: skip
    error = mapped(java_error(text), "the barrier stage")
    assert type(error) is DltoolError and str(error) == "the barrier stage failed: dltool worker 1 was killed by SIGKILL"


def test_gateway_and_start_up_failures_say_what_they_are():
    error = mapped(Py4JNetworkError("An error occurred while trying to connect to the Java server (127.0.0.1:40123)"), "scoring")
    assert type(error) is DltoolError
    assert str(error) == "scoring failed: Py4JNetworkError: An error occurred while trying to connect to the Java server (127.0.0.1:40123)"
    error = mapped(PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={}), "starting Spark (master local[2])")
    assert str(error) == (
        "starting Spark (master local[2]) failed: PySparkRuntimeError: [JAVA_GATEWAY_EXITED] "
        "Java gateway process exited before sending its port number."
    )


def test_tensorflow_errors_are_one_line_without_importing_tensorflow():
    op_error = type("OpError", (Exception,), {"__module__": "tensorflow.python.framework.errors_impl"})
    invalid = type("InvalidArgumentError", (op_error,), {"__module__": "tensorflow.python.framework.errors_impl"})
    error = mapped(invalid("Incompatible shapes: [32,3] vs. [32,2]\n\t [[{{node sub}}]]"), "scoring")
    assert type(error) is DltoolError and str(error) == "scoring failed: InvalidArgumentError: Incompatible shapes: [32,3] vs. [32,2]"


def test_os_errors_are_input_or_storage_errors():
    missing = mapped(FileNotFoundError(2, "No such file or directory", "/data/train/part-00001.parquet"))
    assert type(missing) is InputNotFoundError and missing.exit_code == 2
    assert str(missing) == "ingest of /data failed: [Errno 2] No such file or directory: '/data/train/part-00001.parquet'"
    assert type(mapped(PermissionError(13, "Permission denied", "/data"))) is StorageError
    assert type(mapped(ConnectionResetError(104, "Connection reset by peer"))) is StorageError


def test_the_table_imports_neither_spark_nor_tensorflow():
    code = (
        "import sys\nfrom dltool.errors import ErrorRecord, map_errors\n"
        "try:\n    with map_errors('x'):\n        raise PermissionError('no')\nexcept Exception as e:\n"
        "    ErrorRecord.from_exception(e)\n"
        "print(sorted(m for m in ('pyspark', 'py4j', 'tensorflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------- ErrorRecord


@pytest.mark.parametrize(
    "error",
    [ConfigError("train.monitor: 'val_f1' is not logged"), InputNotFoundError("/data: dataset not found"),
     EnvironmentProblem("the audio reader cannot run on this executor"), QualityGateError("accuracy 0.5"),
     DltoolError("the workers' weights differ")],  # fmt: skip
)
def test_a_dltool_error_survives_the_wire_with_its_class_and_exit_code(error):
    record = ErrorRecord.from_exception(error)
    assert record == ErrorRecord(type(error).__name__, str(error), error.exit_code)
    again = ErrorRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    with pytest.raises(type(error)) as info:
        again.raise_("worker 1")
    assert type(info.value) is type(error) and info.value.exit_code == error.exit_code
    assert str(info.value) == f"worker 1: {error}"
    assert str(again.exception()) == str(error)


def test_a_foreign_error_keeps_its_name_and_comes_back_as_a_one_line_dltool_error():
    record = ErrorRecord.from_exception(ValueError("cannot reshape array\nof size 12"))
    assert record.to_json() == {"error_class": "ValueError", "message": "cannot reshape array\nof size 12", "exit_code": 1}
    assert record.text == "ValueError: cannot reshape array\nof size 12"  # the progress view shows its head
    error = record.exception("scoring failed")
    assert type(error) is DltoolError and str(error) == "scoring failed: ValueError: cannot reshape array"


def test_a_foreign_error_the_table_names_is_recorded_as_ours():
    record = ErrorRecord.from_exception(FileNotFoundError(2, "No such file or directory", "/data/x.parquet"))
    assert record.error_class == "InputNotFoundError" and record.exit_code == 2
    record = ErrorRecord.from_exception(java_error(TASK_FAILED))
    assert record.error_class == "EnvironmentProblem" and record.message.startswith("the audio reader cannot run")


def test_a_name_that_is_not_a_dltool_error_class_is_never_raised_as_one():
    for name in ("RecordError", "SystemExit", "map_errors", "ErrorRecord"):
        error = ErrorRecord(name, "boom", 2).exception()
        assert type(error) is DltoolError and str(error) == f"{name}: boom"


def test_older_records_read_by_their_exit_code():
    assert ErrorRecord.from_json({"error": "train.model: bad", "exit_code": 2}) == ErrorRecord("ConfigError", "train.model: bad", 2)
    assert ErrorRecord.from_json({"error": "scoring failed: X", "exit_code": 1}).exception().exit_code == 1


def test_a_record_is_a_frozen_value():
    record = ErrorRecord("ConfigError", "x", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.message = "y"
