"""The exceptions dltool raises, each carrying the exit code the CLI maps it to.

    DltoolError                  exit 1: a runtime failure (storage, Spark, worker)
    ├── ConfigError              exit 2: the config or a command-line value is wrong
    │   └── InputNotFoundError   exit 2: an input path, dataset or run does not exist
    ├── StorageError             exit 1: a filesystem cannot be reached or written
    ├── EnvironmentProblem       exit 1: a task cannot run here (a library fails to import), not bad data
    └── DataQualityError         exit 3: a quality threshold was missed
        └── QualityGateError     exit 3: a model missed an `eval --fail-under` threshold

A message is one line that says what failed, where, and what to do.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataQualityError",
    "DltoolError",
    "EnvironmentProblem",
    "InputNotFoundError",
    "QualityGateError",
    "RecordError",
    "StorageError",
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


class QualityGateError(DataQualityError):
    """A scored model missed a --fail-under threshold; `summary` is the EvalResult (written to eval.json)."""


class RecordError(Exception):
    """One input record could not be used; it is quarantined, never raised to the user.

    `stage` is where it failed: read, label, header, decode, transform (files) or parse (CSV rows).
    """

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage
