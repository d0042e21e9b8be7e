"""Render the experiment YAML reference (docs/config-reference.md) from the pydantic models."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dltool.config.loader import PATH_FIELDS
from dltool.config.models import ExperimentConfig

REGENERATE = "python -m dltool.config.reference > docs/config-reference.md"

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


@dataclass
class _Section:
    """One table of the reference: a model, where it sits in the YAML, and its union tag if any."""

    model: type[BaseModel]
    path: str
    tag: tuple[str, str] | None = None  # (discriminator field, value) for a member of a union
    used_in: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        parts = self.path.split(".") + ([self.tag[1]] if self.tag else [])
        return "-".join(p.replace("_", "-") for p in parts) if self.path else "top-level"

    @property
    def title(self) -> str:
        where = f"`{self.path}`" if self.path else "Top level"
        return f"{where} with `{self.tag[0]}: {self.tag[1]}`" if self.tag else where


def render_reference() -> str:
    """The Markdown reference of every section and field of the experiment YAML."""
    sections = _collect(ExperimentConfig)
    lines = [
        "# Experiment config reference",
        "",
        f"> Generated from `dltool/config/models.py` and the registered readers (`dltool/readers/`); do not edit by hand. Regenerate with `{REGENERATE}`.",
        "",
        "An experiment is one YAML file. Every section rejects unknown fields, so a misspelt key is an",
        "error (exit 2) that names the file, the line and the field. `dltool validate CONFIG` checks a file",
        "without starting Spark; `dltool schema` prints the same schema as JSON Schema for editors.",
        "Relative paths in " + " and ".join(f"`{p}`" for p in PATH_FIELDS) + " are resolved against the",
        "folder of the config file; paths given on the command line are resolved against the working directory.",
        "The user guide (docs/guide.md) explains each option with examples.",
        "",
        "## Contents",
        "",
    ]
    lines += [f"- [{s.title}](#{s.anchor})" for s in sections]
    for section in sections:
        lines += ["", f'<a id="{section.anchor}"></a>', "", f"## {section.title}", ""]
        doc = section.model.__doc__  # the class's own docstring; not inherited, unlike inspect.getdoc
        if doc:
            lines += [" ".join(doc.split()), ""]
        if len(section.used_in) > 1:
            lines += ["Used in: " + ", ".join(section.used_in) + ".", ""]
        lines += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
        for name, info in section.model.model_fields.items():
            cells = [f"`{name}`", _type_text(info, sections), _default_text(info), info.description or ""]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _collect(root: type[BaseModel]) -> list[_Section]:
    """Every model reachable from root, each once, in field order; union members stay together.

    A field's new sections come first, then what each of them nests, so the three readers
    sit side by side and the label sources after them. A model met again notes its users.
    """
    sections = [_Section(root, "")]
    seen: dict[type[BaseModel], _Section] = {root: sections[0]}

    def visit(parent: _Section) -> None:
        for name, info in parent.model.model_fields.items():
            path = f"{parent.path}.{name}" if parent.path else name
            new = []
            for model, tag in _nested_models(info):
                if model in seen:
                    seen[model].used_in.append(_where(parent))
                    continue
                seen[model] = _Section(model, path, tag, [_where(parent)])
                new.append(seen[model])
            sections.extend(new)
            for section in new:
                visit(section)

    visit(sections[0])
    return sections


def _where(section: _Section) -> str:
    return f"[{section.title}](#{section.anchor})"


def _nested_models(info: FieldInfo) -> list[tuple[type[BaseModel], tuple[str, str] | None]]:
    """The models a field holds: one section model, or the members of a discriminated union."""
    annotation = info.annotation
    if _is_model(annotation):
        return [(annotation, None)]
    members = [a for a in _union_args(annotation) if _is_model(a)]
    if members and isinstance(info.discriminator, str):
        return [(m, (info.discriminator, _tag_of(m, info.discriminator))) for m in members]
    return [(m, None) for m in members]


def _tag_of(model: type[BaseModel], discriminator: str) -> str:
    return str(get_args(model.model_fields[discriminator].annotation)[0])


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_args(annotation: Any) -> tuple:
    return get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()


def _section_of(model: type[BaseModel], sections: list[_Section]) -> _Section:
    return next(s for s in sections if s.model is model)


def _type_text(info: FieldInfo, sections: list[_Section]) -> str:
    text = _type_name(info.annotation, sections)
    constraints = _constraints(info)
    return f"{text} ({constraints})" if constraints else text


def _type_name(annotation: Any, sections: list[_Section]) -> str:
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if _is_model(annotation):
        section = _section_of(annotation, sections)
        return f"section, see [{section.title}](#{section.anchor})"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        values = [f"`{_yaml(v)}`" for v in args]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin in (Union, types.UnionType):
        if all(_is_model(a) for a in args):
            members = [_section_of(a, sections) for a in args]
            links = [f"[{m.tag[1] if m.tag else m.title}](#{m.anchor})" for m in members]
            return "one of the sections " + ", ".join(links)
        names = [_type_name(a, sections) for a in args]
        return ", ".join(names[:-1]) + " or " + names[-1]
    if origin is list:
        return f"list of {_type_name(args[0], sections)}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a, sections) for a in args) + "]"
    if origin is dict:
        return f"map of {_type_name(args[0], sections)} to {_type_name(args[1], sections)}"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(info: FieldInfo) -> str:
    """Bounds and patterns declared on the field (annotated-types objects in FieldInfo.metadata)."""
    parts = []
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    lengths = {}
    for item in info.metadata:
        for attr, symbol in bounds.items():
            if getattr(item, attr, None) is not None:
                parts.append(f"{symbol} {_yaml(getattr(item, attr))}")
        for attr in ("min_length", "max_length"):
            if getattr(item, attr, None) is not None:
                lengths[attr] = getattr(item, attr)
        if getattr(item, "pattern", None) is not None:
            parts.append(f"matching `{item.pattern}`")
    if lengths:
        low, high = lengths.get("min_length"), lengths.get("max_length")
        parts.append(f"length {low}" if low == high else f"length {low or 0} to {high if high is not None else 'any'}")
    return ", ".join(parts)


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        if not _union_args(info.annotation):
            return "its defaults"
        value = value.model_dump(mode="json")
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A value as the user would write it in YAML (flow style for lists and maps)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'" if _needs_quotes(value) else value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json.dumps(v) if isinstance(v, str) else _yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _needs_quotes(text: str) -> bool:
    """Whether YAML would read the string as something else (or fail) without quotes."""
    return (
        text == ""
        or text != text.strip()
        or text[0] in "\"'#&*!|>%@`{}[],?:-"
        or ": " in text
        or " #" in text
        or text.lower() in ("null", "~", "true", "false", "yes", "no", "on", "off")
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(render_reference())
