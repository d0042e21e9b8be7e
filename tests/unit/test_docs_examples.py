"""The docs' examples match the code: every YAML block validates, every `dltool ...` command line parses.

Pages: README.md, docs/*.md and examples/README.md. Nothing runs: YAML goes through the config
loader (no Spark, no input read), command lines through the Click command behind the Typer app
(`make_context` parses and converts the arguments without calling the command).

YAML blocks (```yaml):
- a whole config (`name:` and at least one other section) is loaded as written, `tune:` checked too;
- a fragment (`train:` only, a `model:` or `label:` snippet, ...) is put where it belongs
  (FRAGMENT_HOME) and laid over each of configs/*.yaml (their `tune:` left out), each of its sections
  replacing the base's settings key by key (an `ingest:` with its own `reader:` replaces the base's
  whole): it must fit at least one, so a misspelt key fails (sections forbid unknown keys);
- a fragment whose top-level keys repeat lists alternatives (`model: {builtin: auto}` then
  `model: {layers: ...}`): each is checked on its own.
Shell blocks (```bash/sh/shell/console, and plain ``` blocks whose line starts with a dltool
launcher): `dltool ...`, `python -m dltool ...` and `spark-submit ... $(python -m dltool.where) CMD ...`.

`<!-- not-a-config -->` on the line before a fence skips that block (for YAML that is not dltool's).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml

import dltool.cli
from dltool.config.loader import build_config, parse_config
from dltool.config.models import ExperimentConfig
from dltool.errors import ConfigError
from tests.conftest import ROOT

try:  # typer 0.29 parses with its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # older typer: click itself
    from click import UsageError

PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")), "examples/README.md"]
SKIP_MARKER = "<!-- not-a-config -->"
SHELL = {"bash", "sh", "shell", "console", "zsh"}
PLAIN = {"", "text"}  # untagged blocks: only lines that start with a dltool launcher are read
BASE_DIR = ROOT / "configs"  # relative paths resolve as in configs/*.yaml; nothing checks they exist

# The shipped experiments (image, audio, csv, text) that fragments are laid over, without their tune: sections.
BASES = {path.name: {k: v for k, v in yaml.safe_load(path.read_text(encoding="utf-8")).items() if k != "tune"}
         for path in sorted(BASE_DIR.glob("*.yaml"))}  # fmt: skip
# Fragment keys that are not sections of the experiment: the section they belong in.
FRAGMENT_HOME = {
    "model": "train",
    "optimizer": "train",
    "schedule": "train",
    "early_stopping": "train",
    "label": "ingest",
    "augment": "ingest",
    "split": "dataset",
    "mlflow": "tracking",
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # the page line of the opening fence
    lang: str
    lines: tuple[str, ...]
    skip: bool


def extract_blocks(page: str, text: str) -> list[Block]:
    """The fenced code blocks of a Markdown page, indentation of indented fences removed."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^\s`{]*)", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = len(opening.group(1)), opening.group(2), opening.group(3).lower()
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        body = tuple(line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[i + 1 : end])
        blocks.append(Block(page, i + 1, lang, body, previous == SKIP_MARKER))
        i = end + 1
    return blocks


# ---- YAML ----------------------------------------------------------------------------------------


def yaml_examples(block: Block) -> list[tuple[int, str]]:
    """(page line, YAML text padded with blank lines so YAML line numbers are page line numbers) for the
    block, or for each alternative when its top-level keys repeat."""
    pad = "\n" * block.line
    text = pad + "\n".join(block.lines)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return [(block.line, text)]  # the check reports the syntax error
    if not isinstance(root, yaml.MappingNode):
        return [(block.line, text)]
    keys = [key for key, _ in root.value if isinstance(key, yaml.ScalarNode)]
    names = [key.value for key in keys]
    if len(set(names)) == len(names) or "name" in names:
        return [(block.line, text)]  # a whole config with a repeated key is an error the loader names
    starts = [key.start_mark.line for key in keys] + [len(text.splitlines())]  # 0-based lines of `text`
    lines = text.splitlines()
    return [(a + 1, "\n" * a + "\n".join(lines[a:b])) for a, b in zip(starts, starts[1:])]


def check_yaml(page: str, line: int, text: str) -> ExperimentConfig:
    """Validate one example; a whole config as written, a fragment laid over BASES. Raises ConfigError."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise AssertionError(f"{page}:{line}: a YAML block that is not a mapping; mark it {SKIP_MARKER} if it is not a config")
    if "name" in data and len(data) > 1:
        return parse_config(text, source=page, base_dir=BASE_DIR, check_tune="tune" in data)
    sections = []
    for key, value in data.items():
        section, value = (key, value) if key in ExperimentConfig.model_fields else (FRAGMENT_HOME.get(key), {key: value})
        if section is None:
            raise AssertionError(f"{page}:{line}: top-level key {key!r} is neither a config section "
                                 f"({', '.join(ExperimentConfig.model_fields)}) nor a known fragment ({', '.join(FRAGMENT_HOME)})")  # fmt: skip
        sections.append((section, value))
    errors = []
    for name, base in BASES.items():
        merged = json.loads(json.dumps(base))
        for section, value in sections:
            below = merged.get(section)
            replaces = not isinstance(value, dict) or not isinstance(below, dict) or "reader" in value
            merged[section] = value if replaces else {**below, **value}
        try:
            return build_config(merged, f"{page}:{line} laid over configs/{name}", BASE_DIR, check_tune="tune" in merged)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError("the fragment fits none of configs/*.yaml:\n" + "\n".join(errors))


# ---- shell ---------------------------------------------------------------------------------------

LAUNCHER = re.compile(r"^(\$\s+)?(\S*/)?(dltool|python3?|spark-submit)(\s|$)")
WHERE = re.compile(r"^\$\(\s*(\S*/)?python3?\s+-m\s+dltool\.where\s*\)$")
KEYWORDS = {"do", "then", "else", "elif", "if", "while", "until", "time", "!", "exec", "{", "env", "nohup"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<<", ">|"}


def _strip_comment_and_substitute(line: str) -> tuple[str, dict[str, str]]:
    """The line without its `# comment`, each `$(...)` replaced by a placeholder word (returned)."""
    out, subs, quote, i = [], {}, None, 0
    while i < len(line):
        char = line[i]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            break
        elif line.startswith("$(", i):
            depth, j, inner = 0, i + 1, None
            while j < len(line):
                if line[j] in "'\"" and inner is None:
                    inner = line[j]
                elif line[j] == inner:
                    inner = None
                elif inner is None and line[j] == "(":
                    depth += 1
                elif inner is None and line[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            key = f"__subst{len(subs)}__"
            subs[key] = line[i : j + 1]
            out.append(key)
            i = j + 1
            continue
        out.append(char)
        i += 1
    return "".join(out), subs


def dltool_argvs(line: str) -> list[list[str]]:
    """The argument lists given to dltool by one shell line (after the program name)."""
    text, subs = _strip_comment_and_substitute(line)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split, lexer.commenters = True, ""
    tokens, commands, words = list(lexer), [], []
    for token in [*tokens, ";"]:
        if token and set(token) <= set(";&|()"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    argvs = []
    for words in commands:
        kept, drop = [], False
        for word in words:
            if drop:
                drop = False
            elif word in REDIRECTS:
                drop = True
                if kept and kept[-1].isdigit():
                    kept.pop()  # the 2 of 2>/dev/null
            else:
                kept.append(word)
        while kept and (kept[0] in KEYWORDS or re.match(r"^[A-Za-z_]\w*=", kept[0])):
            kept.pop(0)
        kept = [re.sub(r"__subst\d+__", lambda m: subs[m.group(0)], word) for word in kept]
        if not kept:
            continue
        program = os.path.basename(kept[0])
        if program == "dltool":
            argvs.append(kept[1:])
        elif re.fullmatch(r"python3?", program) and kept[1:3] == ["-m", "dltool"]:
            argvs.append(kept[3:])
        elif program == "spark-submit":
            where = next((n for n, word in enumerate(kept) if WHERE.match(word)), None)
            if where is not None:
                argvs.append(kept[where + 1 :])
    return argvs


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str
    argv: tuple[str, ...]


def shell_commands(block: Block) -> list[Command]:
    """The dltool command lines of a block: every line of a shell block (only `$ ` lines when it has
    prompts: the others are output), and in a plain block the lines that start with a launcher."""
    if block.skip or (block.lang not in SHELL and block.lang not in PLAIN):
        return []
    prompts = any(line.startswith("$ ") for line in block.lines)
    commands, n = [], 0
    while n < len(block.lines):
        start, line = n, block.lines[n]
        while line.rstrip().endswith("\\") and n + 1 < len(block.lines):
            n += 1
            line = line.rstrip()[:-1] + " " + block.lines[n].strip()
        n += 1
        if prompts and not line.startswith("$ "):
            continue
        line = line[2:] if line.startswith("$ ") else line
        if block.lang in PLAIN and not LAUNCHER.match(line):
            continue
        try:
            argvs = dltool_argvs(line)
        except ValueError as e:  # unbalanced quotes
            if block.lang in SHELL and re.search(r"(^|[\s/;&|(])dltool\s", line):
                raise AssertionError(f"{block.page}:{block.line + 1 + start}: cannot split {line!r}: {e}") from e
            continue
        commands += [Command(block.page, block.line + 1 + start, line.strip(), tuple(argv)) for argv in argvs]
    return commands


CLICK_APP = typer.main.get_command(dltool.cli.app)


def check_command(argv: list[str]) -> None:
    """Parse `dltool ARGV` as the CLI would, calling nothing. Raises UsageError (BadParameter, NoSuchOption,
    MissingParameter, ...). The group's own options (flags: --help, --version) are checked by name only, so
    their callbacks (which print and exit) do not run; the command's arguments are parsed and converted."""
    argv = list(argv)
    first = next((n for n, word in enumerate(argv) if not word.startswith("-")), len(argv))
    flags = {"--help", *CLICK_APP.context_settings.get("help_option_names", ())}
    flags.update(opt for param in CLICK_APP.params for opt in (*param.opts, *param.secondary_opts))
    unknown = [word for word in argv[:first] if word not in flags]
    if unknown or not argv:
        raise UsageError(f"No such option: {unknown[0]}" if unknown else "missing command")
    if first == len(argv):
        return  # dltool --version
    ctx = CLICK_APP.make_context("dltool", argv[first : first + 1])
    name, command, args = CLICK_APP.resolve_command(ctx, argv[first:])
    try:
        sub = command.make_context(name, args, parent=ctx)
    except typer.Exit as e:  # dltool CMD --help
        if e.exit_code:
            raise UsageError(f"exit code {e.exit_code}") from e
        return
    hidden = [param.opts[0] for param in command.params if getattr(param, "hidden", False)
              and getattr(sub.get_parameter_source(param.name), "name", "") == "COMMANDLINE"]  # fmt: skip
    if hidden:
        raise UsageError(f"{hidden[0]} is hidden (an old name kept working): show the current option", ctx=sub)
    config = sub.params.get("config")
    if isinstance(config, Path) and not config.is_absolute() and config.parts[0] in ("configs", "examples"):
        if "$" not in str(config) and not (ROOT / config).exists():
            raise UsageError(f"CONFIG {config} is not in the repository", ctx=sub)


# ---- the tests -----------------------------------------------------------------------------------

BLOCKS = [block for page in PAGES for block in extract_blocks(page, (ROOT / page).read_text(encoding="utf-8"))]
YAML_EXAMPLES = [
    pytest.param(block.page, line, text, id=f"{block.page}:{line}")
    for block in BLOCKS
    if block.lang in ("yaml", "yml") and not block.skip
    for line, text in yaml_examples(block)
]
COMMANDS = [
    pytest.param(command, id=f"{command.page}:{command.line} {' '.join(command.argv[:1])}")
    for block in BLOCKS
    for command in shell_commands(block)
]


def test_docs_have_examples_to_check():
    assert len(YAML_EXAMPLES) >= 15 and len(COMMANDS) >= 40, (len(YAML_EXAMPLES), len(COMMANDS))  # the reader works
    assert len([b for b in BLOCKS if b.skip]) <= 5, "not-a-config is for blocks that are not dltool's: use it sparingly"


@pytest.mark.parametrize(("page", "line", "text"), YAML_EXAMPLES)
def test_yaml_example_validates(page, line, text, monkeypatch):
    monkeypatch.delenv("DLTOOL_UNTRUSTED", raising=False)  # a factory example is fine here
    try:
        check_yaml(page, line, text)
    except ConfigError as e:
        pytest.fail(f"{page}:{line}: the YAML example does not validate:\n{e}", pytrace=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_example_parses(command):
    try:
        check_command(list(command.argv))
    except UsageError as e:  # BadParameter, NoSuchOption, MissingParameter are UsageErrors
        pytest.fail(f"{command.page}:{command.line}: `{command.text}` does not parse: {e.format_message()}", pytrace=False)


# ---- the checker catches what it should ----------------------------------------------------------


def _blocks(markdown: str) -> list[Block]:
    return extract_blocks("page.md", markdown)


def _check_all_yaml(markdown: str) -> None:
    for block in _blocks(markdown):
        if not block.skip:
            for line, text in yaml_examples(block):
                check_yaml(block.page, line, text)


@pytest.mark.parametrize(
    ("fragment", "error"),
    [
        ("train:\n  epochz: 3\n", "epochz"),
        ("model: {bultin: small_cnn}\n", "bultin"),
        ("modle: {builtin: small_cnn}\n", "'modle' is neither a config section"),
        ("ingest:\n  reader: csv\n  input: x.csv\n  label: churn\n  numerics: [a]\n", "numerics"),
        ("model: {builtin: auto}\nmodel: {layerz: []}\n", "layerz"),
        ("dataset:\n  split: {train: 0.5, val: 0.1, test: 0.1}\n", "must be 1.0"),
        ("tune:\n  space:\n    train.optimiser.learning_rate: {choice: [0.1]}\n", "optimiser"),
    ],
)
def test_a_wrong_fragment_fails(fragment, error):
    with pytest.raises((ConfigError, AssertionError), match=re.escape(error)):
        _check_all_yaml(f"Text\n\n```yaml\n{fragment}```\n")


def test_a_wrong_whole_config_fails_with_its_page_line():
    with pytest.raises(ConfigError, match=r"page\.md:6: .*size"):
        _check_all_yaml("Intro\n\n```yaml\nname: x\ndataset: {path: d}\ningest: {reader: image, input: i, size: [0, 4]}\n```\n")


def test_fragments_and_alternatives_that_fit_pass():
    _check_all_yaml(
        "```yaml\nmodel: {builtin: auto}\nmodel:\n  layers:\n    - Dense: {units: 4}\n```\n"
        "```yaml\nlabel: {source: none}\n```\n"
        "```yaml\ningest:\n  reader: csv\n  input: x.csv\n  numeric: auto\n  label: churn\n```\n"
    )


def test_not_a_config_marker_skips_a_block():
    blocks = _blocks("<!-- not-a-config -->\n```yaml\nservices: {}\n```\n")
    assert [b.skip for b in blocks] == [True]


@pytest.mark.parametrize(
    ("line", "argvs"),
    [
        ("dltool train c.yaml --epochs 3   # a comment", [["train", "c.yaml", "--epochs", "3"]]),
        (".venv/bin/dltool schema > out.json 2>&1", [["schema"]]),
        ("python -m dltool eval c.yaml --run-dir $RUN", [["eval", "c.yaml", "--run-dir", "$RUN"]]),
        ("spark-submit --conf a=b#c $(python -m dltool.where) ingest c.yaml", [["ingest", "c.yaml"]]),
        ("for c in a b; do dltool ingest $c.yaml && X=1 dltool train $c.yaml || break; done",
         [["ingest", "$c.yaml"], ["train", "$c.yaml"]]),
        ("(cd $(python -c 'import os; print(os.getcwd())') && zip -q x.zip .)", []),
        ("export DLTOOL_BIN=$PWD/.venv/bin/dltool", []),
    ],
)
def test_dltool_argvs(line, argvs):
    assert dltool_argvs(line) == argvs


def test_console_prompts_and_continuations():
    block = _blocks("```console\n$ dltool train c.yaml \\\n    --workers 2\ndltool train done\n$ ls\n```\n")[0]
    assert [(c.line, c.argv) for c in shell_commands(block)] == [(2, ("train", "c.yaml", "--workers", "2"))]


@pytest.mark.parametrize(
    "argv",
    [
        ["trian", "configs/csv.yaml"],
        ["train", "configs/csv.yaml", "--epoch", "3"],
        ["train", "configs/csv.yaml", "--workers", "0"],
        ["predict", "configs/csv.yaml", "--input", "x"],
        ["validate", "configs/nope.yaml"],
        ["--verbose", "validate", "configs/csv.yaml"],
        ["ingest", "configs/csv.yaml", "--output", "out/x"],  # the old name of --data, kept working but hidden
        [],
    ],
)
def test_a_wrong_command_fails(argv):
    with pytest.raises(UsageError):
        check_command(argv)
