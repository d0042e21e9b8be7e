"""Load an experiment YAML safely and report every error with its file, line and field."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dltool.config.models import ExperimentConfig
from dltool.config.trust import refuse_code
from dltool.errors import ConfigError, InputNotFoundError

# Fields that name a location; relative paths in them are resolved against the config file.
PATH_FIELDS = ("dataset.path", "ingest.input", "train.run_dir", "train.model.application.weights")


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None, check_tune: bool = False) -> ExperimentConfig:
    """Read, override and validate an experiment file.

    `overrides` maps dotted field names (``spark.master``) to values given on the
    command line; they win over the file and are not resolved against it. `check_tune` also checks the
    tune: space against the train: section (dltool tune and validate), naming the YAML line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InputNotFoundError(f"{path}: config file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    return parse_config(text, source=str(path), base_dir=path.parent, overrides=overrides, check_tune=check_tune)


def parse_config(
    text: str,
    source: str = "<config>",
    base_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    check_tune: bool = False,
) -> ExperimentConfig:
    try:
        root, data = _read_yaml(text, source)
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_yaml_error(e, source)) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from e
    return build_config(data, source, base_dir, overrides, check_tune, root)


def _yaml_error(error: yaml.MarkedYAMLError, source: str) -> str:
    """A YAML syntax error at the line to fix: an unclosed bracket or quote is named where it opens, not where the
    parser gave up (often the next line)."""
    mark = error.problem_mark or error.context_mark
    problem = error.problem or str(error)
    if "python/" in str(error):
        problem = "Python object tags are not allowed (the config is loaded safely)"
    opened = error.context_mark
    for context, opener in (("flow mapping", "{"), ("flow sequence", "["), ("quoted scalar", "quote")):
        if opened is not None and context in (error.context or "") and mark is not None and mark.line > opened.line:
            what = "quote" if opener == "quote" else f"'{opener}'"
            return (f"{source}:{opened.line + 1}: invalid YAML: the {what} opened here (column {opened.column + 1}) "
                    f"is not closed; at line {mark.line + 1}: {problem}")  # fmt: skip
    line = f":{mark.line + 1}" if mark else ""
    return f"{source}{line}: invalid YAML: {problem}"


# A config is a few hundred values. YAML aliases can make a 1 KB file stand for billions of them
# (the "billion laughs"): the node tree is measured, aliases counted in full, before anything is copied.
MAX_VALUES = 100_000


def _read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML's node tree and its values, refusing duplicate keys and alias expansions past MAX_VALUES."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        try:
            values = _count_values(root, source, {})
        except RecursionError:
            raise ConfigError(f"{source}: the YAML is nested too deeply to be a config") from None
        if values > MAX_VALUES:
            raise ConfigError(f"{source}: the YAML stands for more than {MAX_VALUES:,} values once its aliases (*name) "
                              "are expanded; a config needs a few hundred: refused (an alias bomb?)")  # fmt: skip
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _count_values(node: yaml.Node, source: str, counted: dict[int, int]) -> int:
    """How many values the node stands for with its aliases expanded (each node counted once: linear time);
    a mapping with the same key twice is an error naming both lines."""
    if id(node) in counted:
        return counted[id(node)]
    counted[id(node)] = 1  # a node reached again through itself (a recursive alias) counts once
    total = 1
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if key.value in lines:
                    raise ConfigError(f"{source}:{line}: duplicate key {key.value!r} (first at line {lines[key.value]}); "
                                      "YAML would keep only the last one: remove one")  # fmt: skip
                lines[key.value] = line
            total += _count_values(key, source, counted) + _count_values(value, source, counted)
            if total > MAX_VALUES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            total += _count_values(item, source, counted)
            if total > MAX_VALUES:
                break
    counted[id(node)] = total
    return total


def build_config(
    data: Any,
    source: str = "<config>",
    base_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    check_tune: bool = False,
    root: yaml.Node | None = None,
) -> ExperimentConfig:
    """Validate config data (the YAML as Python values); `root`, the YAML's node tree, gives errors their lines."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections (name, dataset, ingest, ...)")
    data = json.loads(json.dumps(data, default=str))  # a copy: overrides must not change the caller's dict
    for dotted in PATH_FIELDS:
        if dotted == "ingest.input" and _names_a_table(data):
            continue  # `format: table`: a catalog table's name (sales.customers), not a file beside the config
        value = _get(data, dotted)
        if isinstance(value, str) and base_dir is not None:
            _set(data, dotted, resolve_relative(value, base_dir))
    for dotted, value in (overrides or {}).items():
        if dotted == "spark.conf" and isinstance(_get(data, dotted), dict):
            value = {**_get(data, dotted), **value}
        _set(data, dotted, value)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        overridden = set(overrides or {})
        raise ConfigError(_format_errors(e, root, source, overridden, data)) from e
    refuse_code(config, source)  # with DLTOOL_UNTRUSTED=1: no factory, code layer or code-loading Spark setting
    if check_tune and config.tune is not None:
        _check_space(config, root, source)
    if base_dir is not None:
        config._source_dir = os.path.abspath(base_dir)
    return config


def as_config(config: Any, overrides: dict[str, Any] | None = None, check_tune: bool = False) -> ExperimentConfig:
    """An ExperimentConfig from a YAML path, a dict (relative paths taken from the working directory) or an
    ExperimentConfig, with dotted `overrides` applied and everything validated again."""
    if isinstance(config, ExperimentConfig):
        if not overrides and not check_tune:
            return config
        built = build_config(json.loads(config.model_dump_json(exclude_unset=True)), f"<{config.name}>",
                             overrides=overrides, check_tune=check_tune)  # fmt: skip
        built._source_dir = config.source_dir
        return built
    if isinstance(config, dict):
        return build_config(config, "<dict>", Path.cwd(), overrides, check_tune)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides, check_tune)
    raise ConfigError(f"config: expected a YAML path, a dict or an ExperimentConfig, got {type(config).__name__}")


def apply_settings(train: dict, values: dict[str, Any]) -> dict:
    """A train section (as data) with dotted `train.*` settings replaced, e.g. a tuning trial's values."""
    data = json.loads(json.dumps(train))
    for dotted, value in values.items():
        *path, last = dotted.removeprefix("train.").split(".")
        node = data
        for part in path:  # a number indexes a list: train.model.layers.1.Dropout.rate
            if isinstance(node, list):
                node = node[_index(node, part, dotted)]
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        if isinstance(node, list):
            node[_index(node, last, dotted)] = value
        else:
            node[last] = value
    return data


def _index(items: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"{dotted}: {part!r} is not an index of a list of {len(items)}")
    return int(part)


def space_examples(spec: dict) -> list:
    """Values that stand for a tune.space distribution in checks: its bounds, or every choice."""
    kind = next(k for k in spec if k != "step")
    return list(spec[kind])


def check_space(config: ExperimentConfig) -> None:
    """The tune: space checked against the train: section (a config built in Python: no YAML lines)."""
    _check_space(config, None, "config")


def _check_space(config: ExperimentConfig, root: yaml.Node | None, source: str) -> None:
    """Every tune.space key names a train setting, and every value the search can draw fits it: the YAML line
    of the first that does not."""
    from dltool.config.models import TrainSettings

    if config.train is None:
        raise ConfigError(f"{_line_of(root, ['tune'], source)}: tune: the config has no train section to tune")
    train = config.train.model_dump(mode="json")
    for key, spec in config.tune.space.items():
        where = _line_of(root, ["tune", "space", key], source)
        for value in space_examples(spec):
            try:
                TrainSettings.model_validate(apply_settings(train, {key: value}))
            except ConfigError as e:
                raise ConfigError(f"{where}: tune.space.{e}") from e
            except ValidationError as e:
                item = e.errors()[0]
                field = ".".join(["train", *map(str, item["loc"])])
                why = "no such setting" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
                raise ConfigError(f"{where}: tune.space.{key}: {value!r} does not fit {field}: {why}") from e


def _names_a_table(data: dict) -> bool:
    ingest = data.get("ingest")
    return isinstance(ingest, dict) and ingest.get("format") == "table"


def resolve_relative(value: str, base_dir: Path) -> str:
    """Resolve a plain relative path against base_dir; leave URIs and absolute paths alone."""
    if "://" in value or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), value))


def config_hash(section: Any) -> str:
    """A stable digest of a config section (or plain data), for idempotent reruns."""
    data = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _format_errors(error: ValidationError, root: yaml.Node | None, source: str, overridden: set[str], data: Any) -> str:
    lines = []
    for item in error.errors():
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p in _union_tags())]
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(item["ctx"]["discriminator"].strip("'"))
        field = ".".join(str(p) for p in loc) or "(top level)"
        where = "command line" if field in overridden else _line_of(root, loc, source)
        lines.append(f"{where}: {field}: {_in_words(item, loc, data)}")
    return "; ".join(lines) if len(lines) <= 1 else "\n".join(lines)


def _in_words(item: dict, loc: list, data: Any) -> str:
    """One pydantic error said as the user would: the value they wrote, what the field takes, what they meant."""
    from dltool.config.hints import choices_in, closest, field_schema, known_keys

    kind, given = item["type"], item.get("input")
    if kind == "extra_forbidden":
        guess = closest(str(loc[-1]), known_keys(loc[:-1], data))
        return f"unknown field; did you mean {guess!r}?" if guess else \
            "unknown field (check the spelling; `dltool schema` lists the fields)"  # fmt: skip
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_not_found":
        return "required field is missing (it selects the kind, e.g. reader: image)"
    if kind in ("union_tag_invalid", "literal_error", "enum"):
        expected = item["ctx"].get("expected_tags") or item["ctx"].get("expected", "")
        choices = choices_in(expected)
        if not choices:  # numbers (channels: 1, 3 or 4): pydantic's own words say it
            return item["msg"]
        value = item["ctx"].get("tag", given)
        guess = closest(value, choices)
        return f"{value!r} is not one of {', '.join(choices)}" + (f"; did you mean {guess!r}?" if guess else "")
    message = item["msg"].removeprefix("Value error, ")
    schema = field_schema(loc, data) or {}
    about = schema.get("description", "")
    if kind == "string_pattern_mismatch" and about:
        return f"{given!r} is not of the form this field takes: {about}"
    if kind in ("tuple_type", "list_type", "too_short", "too_long") and re.search(r"\[[^\]]+\]", about):
        form = re.search(r"\[[^\]]+\]", about).group(0)
        return f"expected a list {form}, got {given!r} ({about})"
    return message


def _union_tags() -> set[str]:
    """Discriminator tags pydantic puts into error locations (readers, label sources); not YAML keys."""
    from dltool.config.readers import INGEST_SECTIONS

    return set(INGEST_SECTIONS) | {"parent_dir", "regex", "none"}


def _line_of(root: yaml.Node | None, loc: list, source: str) -> str:
    """The deepest YAML line that the error location reaches."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return f"{source}:{line}" if line else source
