"""The exceptions dltool raises, each carrying the exit code the CLI maps it to.

    DltoolError                  exit 1: a runtime failure (storage, Spark, worker)
    ├── ConfigError              exit 2: the config or a command-line value is wrong
    │   └── InputNotFoundError   exit 2: an input path, dataset or run does not exist
    ├── StorageError             exit 1: a filesystem cannot be reached or written
    ├── EnvironmentProblem       exit 1: a task cannot run here (a library fails to import), not bad data
    └── DataQualityError         exit 3: a quality threshold was missed
        └── QualityGateError     exit 3: a model missed an `eval --fail-under` threshold

A message is one line that says what failed, where, and what to do.

Foreign errors become ours in one table (`_FOREIGN`, most specific first), applied by
`map_errors` around calls into Spark, storage and TensorFlow; an error crosses a process
boundary (training worker child, Spark task) as an `ErrorRecord` and is raised again as itself.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DataQualityError",
    "DltoolError",
    "EnvironmentProblem",
    "ErrorRecord",
    "InputNotFoundError",
    "QualityGateError",
    "RecordError",
    "StorageError",
    "map_errors",
]


class DltoolError(Exception):
    exit_code = 1


class ConfigError(DltoolError):
    exit_code = 2


class InputNotFoundError(ConfigError):
    pass


class StorageError(DltoolError):
    exit_code = 1


class EnvironmentProblem(DltoolError):
    """A Spark task hit a broken environment (missing library, dltool bug), not a bad record."""

    exit_code = 1


# Raised while decoding one record, these say the executor or the code is broken, not the record:
# the run stops instead of quarantining every input with the same cause.
NOT_RECORD_ERRORS = (ImportError, NameError, AttributeError, SyntaxError, NotImplementedError, MemoryError)


class DataQualityError(DltoolError):
    """A quality threshold was missed; `summary` is the run's result (an IngestResult), `.to_json()` for JSON."""

    exit_code = 3

    def __init__(self, message: str, summary=None):
        super().__init__(message)
        self.summary = summary

    @classmethod
    def quarantined(cls, counts, limit: float, where: str, unit: str = "inputs", summary=None) -> DataQualityError:
        """An ingest that quarantined more than `dataset.max_bad_fraction` of its `counts` (a manifest's Counts);
        `where` says where its `_errors` table is and what was kept."""
        enough = math.ceil(counts.bad_fraction * 100) / 100
        return cls(f"{counts.quarantined} of {counts.inputs} {unit} quarantined ({counts.bad_fraction:.1%} > "
                   f"dataset.max_bad_fraction {limit:g}: {enough:.2f} goes on without them); see {where}",
                   summary)  # fmt: skip


class QualityGateError(DataQualityError):
    """A scored model missed a --fail-under threshold; `summary` is the EvalResult (written to eval.json)."""


class RecordError(Exception):
    """One input record could not be used; it is quarantined, never raised to the user.

    `stage` is where it failed: read, label, header, decode, transform (files) or parse (CSV rows).
    """

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


# ------------------------------------------------------------------------------ one serialisable form


@dataclass(frozen=True)
class ErrorRecord:
    """An error as plain values, to cross a process boundary and be raised again as the same dltool class.

    On the wire (`to_json`): {"error_class": "ConfigError", "message": "...", "exit_code": 2}. A foreign
    error keeps its own class name ("ValueError") and comes back as a DltoolError (exit 1) naming it.
    """

    error_class: str
    message: str
    exit_code: int = 1

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorRecord:
        """Ours as they are; a foreign error as `_FOREIGN` maps it, else under its own class name."""
        if not isinstance(error, DltoolError):
            error = foreign_error(error) or error
        from dltool.config.redaction import redact_text

        code = error.exit_code if isinstance(error, DltoolError) else 1
        return cls(type(error).__name__, redact_text(str(error).strip()) or type(error).__name__, code)

    @classmethod
    def from_json(cls, data: dict) -> ErrorRecord:
        if "error_class" not in data:  # the older {"error": text, "exit_code": n} records
            code = int(data.get("exit_code", 1))
            return cls({2: "ConfigError", 3: "DataQualityError"}.get(code, "DltoolError"), data["error"], code)
        return cls(data["error_class"], data["message"], int(data["exit_code"]))

    def to_json(self) -> dict:
        return {"error_class": self.error_class, "message": self.message, "exit_code": self.exit_code}

    @property
    def text(self) -> str:
        """The message as a user reads it: a foreign error is named, ours speak for themselves."""
        return self.message if _dltool_class(self.error_class) else f"{self.error_class}: {self.message}"

    def exception(self, context: str = "") -> DltoolError:
        """The dltool exception again, one line, after `context` ("worker 1", "scoring failed") when given."""
        line = first_line(self.text)
        return (_dltool_class(self.error_class) or DltoolError)(f"{context}: {line}" if context else line)

    def raise_(self, context: str = "") -> None:
        raise self.exception(context)


def first_line(text: object) -> str:
    """The first non-blank line of a message (TensorFlow's and Spark's run to dozens)."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _dltool_class(name: str) -> type[DltoolError] | None:
    cls = getattr(sys.modules[__name__], name, None)
    return cls if isinstance(cls, type) and issubclass(cls, DltoolError) else None


# -------------------------------------------------------------------------- foreign errors to ours

# Spark's message text: a dltool error raised in a task ("dltool.errors.ConfigError: ..."), a lost
# executor, and the last Python or Java error line ("ValueError: ...", "org.apache.spark.SparkException: ..."),
# never a Java frame ("at ...Error...(X.scala:83)").
_DLTOOL_LINE = re.compile(r"^dltool\.errors\.(\w+): (.*)$")
_EXECUTOR_LOST = re.compile(r"ExecutorLostFailure \(executor (\S+) ([^)]*)\)(?: Reason: ([^\n]+))?")
_ERROR_LINE = re.compile(r"^[\w.$]*(Error|Exception)\b.*:")


def _from_spark(error: BaseException) -> DltoolError:
    """A failed Spark call in one line; a dltool error raised inside a task comes back as itself."""
    text = str(error)
    # A Java error's causes come as ": org...Exception: ..." and "Caused by: org...Exception: ..." lines.
    lines = [line.strip().removeprefix("Caused by:").lstrip(": ") for line in text.splitlines() if line.strip()]
    lost = _EXECUTOR_LOST.search(text)
    if lost:
        return DltoolError(f"Spark executor {lost.group(1)} was lost ({lost.group(3) or lost.group(2)})")
    ours = [m for m in map(_DLTOOL_LINE.match, lines) if m]
    if ours and _dltool_class(ours[-1].group(1)):
        return _dltool_class(ours[-1].group(1))(ours[-1].group(2))
    cause = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    if cause is None:  # no error line: a start-up or connection failure says what it is on its first line
        cause = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if cause.startswith("ModuleNotFoundError"):  # before any dltool code ran in the task: the workers' Python
        return EnvironmentProblem(f"{cause} in Spark's Python workers ({_workers_python()}): they need a Python that "
                                  "imports it, which PYSPARK_PYTHON or spark.pyspark.python chooses")  # fmt: skip
    return DltoolError(cause)


def _workers_python() -> str:
    """The Python that the active SparkContext starts its workers with (PySpark's default: python3 on the PATH)."""
    context = getattr(sys.modules.get("pyspark"), "SparkContext", None)
    return getattr(getattr(context, "_active_spark_context", None), "pythonExec", None) or "python3"


# (module prefix, class name, how it becomes ours), most specific first. Classes are matched by name
# along the error's MRO, so neither pyspark, py4j nor TensorFlow is imported to recognise their errors.
_FOREIGN: tuple[tuple[str, str, Callable[[BaseException], DltoolError]], ...] = (
    ("pyspark", "AnalysisException", lambda error: ConfigError(first_line(error))),  # no such table, path, column
    ("py4j", "Py4JError", _from_spark),  # Py4JJavaError (a failed job), Py4JNetworkError (the JVM is gone), ...
    ("pyspark", "PySparkException", _from_spark),  # PythonException, captured JVM errors, gateway start-up
    ("tensorflow", "OpError", lambda error: DltoolError(f"{type(error).__name__}: {first_line(error)}")),  # InvalidArgumentError, ...
    ("builtins", "FileNotFoundError", lambda error: InputNotFoundError(first_line(error))),
    ("builtins", "OSError", lambda error: StorageError(first_line(error))),  # PermissionError, ConnectionError, ...
)


def foreign_error(error: BaseException) -> DltoolError | None:
    """The dltool error `_FOREIGN` maps `error` to, or None when it names no class of `error`."""
    classes = type(error).__mro__
    for module, name, ours in _FOREIGN:
        if any(c.__name__ == name and c.__module__.split(".")[0] == module for c in classes):
            return ours(error)
    return None


@contextmanager
def map_errors(what: str) -> Iterator[None]:
    """Raise a foreign error of the block as ours: "{what} failed: {cause}", cause chained.

    Dltool errors pass through, as do errors the table does not name (a bug should look like one).
    """
    try:
        yield
    except DltoolError:
        raise
    except Exception as e:
        ours = foreign_error(e)
        if ours is None:
            raise
        raise type(ours)(f"{what} failed: {ours}") from e
