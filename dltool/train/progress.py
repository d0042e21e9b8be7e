"""Live training progress on the driver's terminal (stderr), fed by worker events."""

from __future__ import annotations

import time
from typing import Self

from dltool.errors import ErrorRecord


TIMING_KEYS = ("epoch", "seconds", "samples_per_s", "learning_rate", "input_wait")
STARVED = 0.2  # a worker waiting for its batches this share of its step time: the feed is the bottleneck
STARVED_MIN_S = 2.0  # ...in an epoch this long: in a shorter one the wait costs too little to change a setting for


def starved_warning(share: float, worker: int, epoch: int, feed: dict) -> str:
    """What to tell a user whose worker waited `share` of its step time for input, with the likely cause and the
    setting to change; `feed` is the chief's start event's description of the train feed."""
    head = (f"worker {worker} waited for its batches {share:.0%} of its step time in epoch {epoch}: the input, not "
            "the model, sets the pace")  # fmt: skip
    if not feed.get("cached", True):
        return (f"{head}. Its share of the train split ({feed.get('mb', 0):,.0f} MB decoded) does not fit "
                f"train.cache_mb ({feed.get('cache_mb')}), so every epoch reads and decodes the shards again: raise "
                "train.cache_mb, or make the shards smaller (ingest size, dtype)")
    return (f"{head}. The batches come from memory, so the model's steps are shorter than copying "
            f"{feed.get('per_worker_batch')} rows a step: raise train.global_batch_size (fewer, larger steps), "
            "or train a bigger model on this data")


def format_logs(logs: dict, keys: tuple[str, ...] | None = None) -> str:
    shown = []
    for key, value in logs.items():
        if key in TIMING_KEYS or (keys and key not in keys):
            continue
        if isinstance(value, float):
            shown.append(f"{key} {value:.4f}")
    return "  ".join(shown)


class TrainProgress:
    """A step bar per epoch plus one line per finished epoch; `enabled=False` prints the lines only, `quiet` nothing."""

    def __init__(self, enabled: bool = True, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
        self.enabled = enabled and self.console.is_terminal
        self._progress = None
        self._bar = None
        self.first_step_at: float | None = None
        self.feed: dict = {}
        self._first_epoch = 1
        self.input_waits: list[float] = []  # per epoch, the largest worker's share (the cache fill left out)
        self.input_warning: str | None = None

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=self.console, transient=True,
            )  # fmt: skip
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def print(self, message: str) -> None:
        self.console.print(message)

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "start" and event["epoch"] > event["epochs"]:
            self.print("all epochs are done; writing the final model")
        elif kind == "start":
            self.feed, self._first_epoch = event.get("feed") or {}, event["epoch"]
            self.print(
                f"training {event['epochs']} epochs from epoch {event['epoch']}: {event['steps']} steps of "
                f"{event['global_batch']} examples per epoch"
            )
        elif kind == "step":
            if self.first_step_at is None:
                self.first_step_at = time.monotonic()
            if self._progress is not None:
                info = f"{format_logs(event['logs'])}  {event['samples_per_s']:.0f} samples/s"
                description = f"epoch {event['epoch']}"
                if self._bar is None:
                    self._bar = self._progress.add_task(description, total=event["steps"], info=info)
                self._progress.update(self._bar, description=description, completed=event["step"],
                                      total=event["steps"], info=info)  # fmt: skip
        elif kind == "epoch":
            logs = event["logs"]
            marks = " [green]best[/]" if event.get("best") else ""
            marks += "  [yellow]stopping early[/]" if event.get("stopped_early") else ""
            wait = f"  input {logs['input_wait']:.0%}" if "input_wait" in logs else ""
            self.print(
                f"epoch {event['epoch']}/{event['epochs']}  {format_logs(logs)}  "
                f"{logs['samples_per_s']:.0f} samples/s{wait}  {logs['seconds']:.1f}s  → {event['checkpoint']}{marks}"
            )
            self._check_input(event)
            if self._progress is not None and self._bar is not None:
                self._progress.reset(self._bar)
        elif kind == "validation":
            self.print(f"  step {event['step']}: {format_logs(event['logs'])}")
        elif kind == "failed":
            # TensorFlow's errors run to dozens of lines (graph nodes, gRPC details): the head says enough.
            head = [line for line in ErrorRecord.from_json(event["error"]).text.splitlines() if line.strip()][:3]
            self.print(f"[red]worker {event['rank']} failed:[/] " + "\n  ".join(head or ["(no message)"]))
            for line in event.get("traceback") or []:
                self.print(f"  [dim]{line}[/]")

    def _check_input(self, event: dict) -> None:
        """Keep the epoch's input wait; warn once when a worker starves. A cached feed's first epoch reads and
        decodes the whole split into memory: that wait is paid once and is left out."""
        logs = event["logs"]
        if "input_wait" not in logs or (self.feed.get("cached") and event["epoch"] == self._first_epoch):
            return
        self.input_waits.append(logs["input_wait"])
        if logs["input_wait"] > STARVED and logs.get("seconds", 0) >= STARVED_MIN_S and self.input_warning is None:
            worker = max(range(len(logs["input_wait_workers"])), key=logs["input_wait_workers"].__getitem__)
            self.input_warning = starved_warning(logs["input_wait"], worker, event["epoch"], self.feed)
            self.print(f"[yellow]warning:[/] {self.input_warning}")

    def input_report(self) -> dict | None:
        """For run.json: the mean and largest per-epoch input wait (the largest worker's share of step time) and
        the warning, if one was given."""
        if not self.input_waits:
            return None
        mean = sum(self.input_waits) / len(self.input_waits)
        return {"mean": round(mean, 4), "max": max(self.input_waits), "warning": self.input_warning}
