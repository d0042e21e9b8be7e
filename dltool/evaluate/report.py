"""Eval results for people: a terminal table with one column per checkpoint, and PNG plots."""

from __future__ import annotations

import io
import posixpath
from collections.abc import Sequence
from os import PathLike

from dltool.errors import DltoolError, StorageError
from dltool.evaluate.metrics import headline
from dltool.storage.fs import open_location

__all__ = ["checkpoint_label", "confusion_png", "metric_over_epochs_png", "mistakes_png", "print_table"]

# Headline metrics the table shows, in order, with their row titles; top-k rows go after accuracy.
_ROWS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
    "macro_f1": "macro F1",
    "weighted_f1": "weighted F1",
    "ece": "ECE",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
}
_ANNOTATE_UP_TO = 20  # classes; beyond that the counts in the cells are unreadable
_TICKS_UP_TO = 60


PLOT_MODULES = ("matplotlib.backends.backend_agg", "matplotlib.figure")  # what Figure.savefig renders with


def start_loading_plots(modules: tuple[str, ...] = PLOT_MODULES, agg: bool = False) -> None:
    """Import `modules` on a thread (matplotlib: 0.7 s here) while Spark jobs run and the driver only waits; with
    `agg`, matplotlib's Agg backend is chosen first (for pyplot, which the modules would otherwise set up with the
    default backend)."""
    import importlib
    import threading

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
                if agg and name == "matplotlib":
                    importlib.import_module(name).use("Agg")
            except Exception:  # noqa: BLE001 - the plot itself imports it again and reports the error
                pass

    threading.Thread(target=load, name="dltool-load-plots", daemon=True).start()


def checkpoint_label(result: dict, index: int) -> str:
    """A short column title: the checkpoint's last path part (result["checkpoint"]) or its position."""
    checkpoint = result.get("checkpoint")
    return posixpath.basename(str(checkpoint).rstrip("/")) if checkpoint else f"#{index + 1}"


def print_table(results: Sequence[dict], best: int | None = None, console=None) -> None:
    """Print computed results side by side (best column marked); one result also gets a per-class table.

    Each result is a dict from `compute()`, optionally with "checkpoint" (used as the column
    title) and "split" (used in the title). `console` is a rich Console; the default writes to stderr.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    split = results[0].get("split") if results else None
    table = Table(title=f"eval: {split} split" if split else "eval", title_justify="left")
    table.add_column("metric")
    for i, result in enumerate(results):
        marked = i == best and len(results) > 1
        title = checkpoint_label(result, i) + (" ★ best" if marked else "")
        table.add_column(title, justify="right", style="bold green" if marked else None)
    figures = [headline(result) for result in results]
    table.add_row("examples", *(f"{result['examples']:,}" for result in results))
    for key in _row_keys(figures):
        title = _ROWS.get(key) or key.replace("_accuracy", " accuracy").replace("top_", "top-")
        table.add_row(title, *(_number(flat.get(key)) for flat in figures))
    console.print(table)
    if len(results) == 1 and results[0]["task"] == "classification":
        console.print(_per_class_table(results[0]))


def _row_keys(figures: list[dict]) -> list[str]:
    present = {key for flat in figures for key in flat}
    top_k = sorted((key for key in present if key.startswith("top_")), key=lambda key: int(key.split("_")[1]))
    keys = [key for key in _ROWS if key in present]
    at = keys.index("accuracy") + 1 if "accuracy" in keys else len(keys)
    return keys[:at] + top_k + keys[at:]


def _per_class_table(result: dict):
    from rich.table import Table

    table = Table(title="per class", title_justify="left")
    table.add_column("class")
    for name in ("precision", "recall", "F1", "support"):
        table.add_column(name, justify="right")
    for name, scores in result["per_class"].items():
        table.add_row(name, *(_number(scores[key]) for key in ("precision", "recall", "f1")), f"{scores['support']:,}")
    table.add_section()
    for average in ("macro", "weighted"):
        scores = result[average]
        table.add_row(f"{average} avg", *(_number(scores[key]) for key in ("precision", "recall", "f1")),
                      f"{result['examples']:,}")
    return table


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def confusion_png(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | PathLike) -> None:
    """A confusion-matrix heat map (rows true, columns predicted), coloured by each true class's share."""
    import numpy as np
    from matplotlib.figure import Figure

    # A bare Figure renders with Agg and touches no pyplot state, so no backend is switched for the caller.

    counts = np.asarray(matrix, dtype=np.int64)
    classes = len(class_names)
    if counts.shape != (classes, classes):
        raise DltoolError(f"confusion matrix has shape {list(counts.shape)}, expected [{classes}, {classes}]")
    # Shares, not counts, so a rare class's errors are as visible as a common one's.
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(max(4.0, 0.45 * classes + 2.5), 20.0)
    # Fixed margins sized for the longest tick label (a constrained layout takes 0.1 s more to find them)
    label = 0.075 * max(map(len, class_names), default=0) if classes <= _TICKS_UP_TO else 0.0  # inches
    width, height = side + 1.2 + label, side + 0.7 * label
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=(0.8 + label) / width, right=1 - 0.2 / width, bottom=(0.8 + 0.7 * label) / height,
                        top=1 - 0.45 / height)  # fmt: skip
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({int(counts.sum()):,} examples)")
    if classes <= _TICKS_UP_TO:
        ax.set_xticks(range(classes), labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(classes), labels=list(class_names))
    if classes <= _ANNOTATE_UP_TO:
        for (row, col), count in np.ndenumerate(counts):
            ax.text(col, row, f"{count:,}", ha="center", va="center", fontsize=8,
                    color="white" if shares[row, col] > 0.5 else "black")
    _save(fig, path)


def metric_over_epochs_png(epochs: Sequence[int], values: dict[str, Sequence[float | None]],
                           path: str | PathLike) -> None:
    """One panel per metric against the checkpoint's epoch (None leaves a gap), shared x axis."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not values:
        raise DltoolError("no metrics to plot over epochs")
    for name, series in values.items():
        if len(series) != len(epochs):
            raise DltoolError(f"metric {name!r} has {len(series)} values for {len(epochs)} epochs")
    fig = Figure(figsize=(7.0, 1.0 + 2.0 * len(values)), layout="constrained")
    axes = fig.subplots(len(values), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, series) in zip(axes, values.items()):
        ax.plot(list(epochs), [float("nan") if v is None else v for v in series], marker="o")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title("metrics over epochs")
    _save(fig, path)


def mistakes_png(examples: Sequence[dict], reader: str, feature_names: Sequence[str] | None,
                 path: str | PathLike, vocabulary: Sequence[str] | None = None) -> None:  # fmt: skip
    """A grid of the most confidently wrong examples: images as pictures, 2-D audio features and waveforms
    as spectrograms, table rows as their non-zero features, text as its tokens (or heaviest TF-IDF slots);
    each titled key, true class, predicted class and probability.

    Only spectrograms get an axes of their own (they have labelled axes): building one costs 20 ms, so
    pictures share one axes over the whole figure and texts are figure text.
    """
    import textwrap

    import numpy as np
    from matplotlib.figure import Figure

    columns = min(4, len(examples))
    rows = -(-len(examples) // columns)
    table = feature_names is not None and np.asarray(examples[0]["features"]).ndim == 1
    cell_w, cell_h, top_in = 3.2, 1.9 if table else 3.0, 0.6  # inches: a panel, and the figure's title above them
    fig_w, fig_h = cell_w * columns, cell_h * rows + top_in
    fig = Figure(figsize=(fig_w, fig_h))
    fig.suptitle(f"most confidently wrong ({reader} reader): true → predicted (probability)")
    canvas = None  # the pictures' shared axes, in figure fractions
    for i, example in enumerate(examples):
        row, col = divmod(i, columns)
        left, top = col * cell_w, fig_h - top_in - row * cell_h  # the panel's top-left corner, inches
        key = str(example["key"])
        key = key if len(key) <= 32 else "…" + key[-31:]
        title = f"{key}\n{example['true']} → {example['predicted']} ({example['probability']:.2f})"
        fig.text((left + cell_w / 2) / fig_w, top / fig_h, title, ha="center", va="top", fontsize=8)
        body_top, body_h = top - 0.4, cell_h - 0.5  # below the title's two lines
        x = np.asarray(example["features"])
        if x.ndim == 3:  # an image, height x width x channels
            picture = x[..., 0] if x.shape[-1] == 1 else x[..., :3]
            if picture.dtype != np.uint8:
                low, high = float(picture.min()), float(picture.max())
                picture = (picture - low) / (high - low or 1.0)
            if canvas is None:
                canvas = fig.add_axes((0.0, 0.0, 1.0, 1.0))
                canvas.set_axis_off()
            scale = min((cell_w - 0.2) / picture.shape[1], body_h / picture.shape[0])  # inches a pixel, aspect kept
            width, height = picture.shape[1] * scale, picture.shape[0] * scale
            x0 = left + (cell_w - width) / 2
            canvas.imshow(picture, cmap="gray" if picture.ndim == 2 else None, aspect="auto",
                          extent=(x0 / fig_w, (x0 + width) / fig_w, (body_top - height) / fig_h, body_top / fig_h))
        elif x.ndim == 2 or (feature_names is None and vocabulary is None):  # a spectrogram, with labelled axes
            ax = fig.add_axes(((left + 0.55) / fig_w, (body_top - body_h + 0.45) / fig_h, (cell_w - 0.75) / fig_w,
                               (body_h - 0.5) / fig_h))  # fmt: skip
            if x.ndim == 2:  # audio features, frames x bins
                ax.imshow(x.T, aspect="auto", origin="lower", cmap="magma")
                ax.set(xlabel="frame", ylabel="bin")
            else:  # a waveform
                ax.specgram(x, NFFT=256, noverlap=128, cmap="magma")
                ax.set(xlabel="sample", ylabel="frequency")
        else:
            if vocabulary is not None:  # text: the tokens the model saw, or the heaviest TF-IDF slots
                words = ["", "[UNK]", *vocabulary]
                if x.dtype.kind in "iu":
                    shown = textwrap.fill(" ".join(words[i] for i in x if i), 38, max_lines=9)
                else:  # slot j holds id j + 1
                    shown = "\n".join(f"{words[j + 1]} = {x[j]:.3g}" for j in np.argsort(-x)[:10] if x[j] > 0)
                size = 7
            else:  # a table row: its features that are not 0 (numbers, the categories it has), in order
                shown = "\n".join(f"{feature_names[j]} = {x[j]:.4g}" for j in [j for j in range(len(x)) if x[j] != 0][:10])
                size = 8
            fig.text((left + 0.1) / fig_w, body_top / fig_h, shown, va="top", family="monospace", fontsize=size)
    if canvas is not None:
        canvas.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0))
    _save(fig, path)


def _save(fig, path: str | PathLike) -> None:
    """Render to PNG in memory, then write atomically (temp name, rename) to a local path or URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    target = open_location(str(path))
    try:
        target.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        target.write_bytes(buffer.getvalue())
    except OSError as e:
        raise StorageError(f"{target.uri}: cannot write the plot: {e}") from e
