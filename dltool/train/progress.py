"""Live training progress on the driver's terminal (stderr), fed by worker events."""

from __future__ import annotations

import time
from typing import Self

from dltool.errors import ErrorRecord


def format_logs(logs: dict, keys: tuple[str, ...] | None = None) -> str:
    shown = []
    for key, value in logs.items():
        if key in ("epoch", "seconds", "samples_per_s", "learning_rate") or (keys and key not in keys):
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
            self.print(
                f"epoch {event['epoch']}/{event['epochs']}  {format_logs(logs)}  "
                f"{logs['samples_per_s']:.0f} samples/s  {logs['seconds']:.1f}s  → {event['checkpoint']}{marks}"
            )
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
