"""The building blocks of config sections that readers share: the frozen base and file inputs with labels.

A leaf module (pydantic only), so reader modules and the experiment models both import it
without importing each other.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelFromParentDir(Section):
    """The label is the name of the file's parent directory (class folders)."""

    source: Literal["parent_dir"] = "parent_dir"


class LabelFromRegex(Section):
    """The label is the first group of a regex searched in the path relative to the input root."""

    source: Literal["regex"]
    pattern: str = Field(description="Regex searched in the relative path; its first group is the label.")

    @field_validator("pattern")
    @classmethod
    def _compiles_with_group(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regex: {e}") from e
        if compiled.groups < 1:
            raise ValueError("the regex needs one capturing group, e.g. '^(\\w+)_\\d+'")
        return value


class NoLabel(Section):
    """Records have no label (unsupervised data, or inference inputs)."""

    source: Literal["none"]


FileLabel = Annotated[Union[LabelFromParentDir, LabelFromRegex, NoLabel], Field(discriminator="source")]


class FileInput(Section):
    input: str = Field(description="Directory (searched recursively) or single file; local path or URI.")
    include: list[str] = Field(description="Glob patterns matched against the path relative to input (case-insensitive).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files to leave out.")
    label: FileLabel = LabelFromParentDir()
    max_file_mb: float = Field(64, gt=0, description="Files larger than this are quarantined unread.")
    files_per_task: int = Field(
        0, ge=0, description="At most this many files per Spark task (and shard); 0 sizes tasks from shard_mb and the cores."
    )
