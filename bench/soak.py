"""Soak benchmark: 2 training workers over 20,000 steps; threads, memory, open files and speed, start against end.

What it measures (results in docs/benchmarks.md, "Soak"):

- the sample images (small_cnn) and the sample reviews (text_cnn, an embedding: its sparse
  gradients take more collectives a step than a dense model's), each ingested once into a
  temporary folder, then `dltool.train` with 2 workers on local[2] for at least --steps
  steps (the epochs follow from the train split and --global-batch);
- each worker prints one `dltool resources:` line per epoch into its log (RUN_DIR/logs):
  threads, resident memory and open files; the table shows the first epoch's and the last
  epoch's values of each worker and their difference, and the train steps/s of the
  first and last epochs (from history.jsonl) with their ratio. Flat means end = start.

Before the fix (2026-12-04) every collective op left a thread sleeping for train.timeout_s,
and a worker aborted with "Resource temporarily unavailable" after about 2,000 steps.

    .venv/bin/python bench/soak.py                      # 20,000 steps each (about 15 minutes here)
    .venv/bin/python bench/soak.py --steps 3000         # quick run
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def soak(config: str, work: Path, steps: int, global_batch: int) -> list[str]:
    import dltool
    from dltool.train.worker import read_resource_lines

    name = Path(config).stem
    dataset, run = work / "datasets" / name, work / "runs" / name
    dltool.ingest(ROOT / "configs" / config, dataset__path=str(dataset))
    train_rows = json.loads((dataset / "_manifest.json").read_text())["splits"]["train"]["rows"]
    per_epoch = max(1, train_rows // global_batch)
    epochs = math.ceil(steps / per_epoch)
    started = time.perf_counter()
    result = dltool.train(ROOT / "configs" / config, dataset__path=str(dataset), train__run_dir=str(run),
                          train__workers=2, train__epochs=epochs, train__global_batch_size=global_batch,
                          train__keep_checkpoints=1, train__early_stopping=None, quiet=True)  # fmt: skip
    seconds = time.perf_counter() - started
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    first_rate, last_rate = (history[i]["samples_per_s"] / global_batch for i in (0, -1))
    rows = []
    for rank in (0, 1):
        usage = read_resource_lines((run / "logs" / "attempt-1" / f"worker-{rank}.log").read_text())
        a, b = usage[0], usage[-1]
        rows.append(
            f"| {name} | {rank} | {b['steps']:,} | {a['threads']} → {b['threads']} ({b['threads'] - a['threads']:+d}) "
            f"| {a['rss_mb']:.0f} → {b['rss_mb']:.0f} ({b['rss_mb'] - a['rss_mb']:+.1f}) "
            f"| {a['open_files']} → {b['open_files']} ({b['open_files'] - a['open_files']:+d}) "
            f"| {first_rate:.0f} → {last_rate:.0f} ({last_rate / first_rate:.2f}x) |"
        )
    print(f"{name}: {result.epochs_done} epochs of {per_epoch} steps in {seconds:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--global-batch", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dltool-soak-") as tmp:
        rows = []
        for config in ("images.yaml", "text.yaml"):
            rows += soak(config, Path(tmp), args.steps, args.global_batch)
    print("| data | worker | steps | threads | RSS MB | open files | steps/s, first → last epoch |")
    print("| --- | ---: | ---: | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
