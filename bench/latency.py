"""Fixed cost per command: each verb of the CLI from a cold shell, against a bare Spark start, same run.

For each bundled sample config named, it runs from a fresh shell, in order: `dltool ingest`,
`dltool train --epochs 1` (so the time is mostly fixed cost), `dltool eval` and `dltool predict`
on the sample's own inputs. It times each command's wall clock. The floor every Spark tool pays is a
fresh Python that builds a `SparkSession` (`local[2]`, UI off) and runs `spark.range(1).count()`,
timed the same way, three times; the table prints each verb's time minus the floor's median.
Outputs go to a temporary folder, removed at the end.

    .venv/bin/python bench/latency.py                    # csv and text
    .venv/bin/python bench/latency.py --configs csv images audio text
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DLTOOL = [sys.executable, "-m", "dltool"]
FLOOR = """
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
spark.range(1).count()
spark.stop()
"""


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:4])} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return took


def config_for(name: str, folder: Path) -> Path:
    """The shipped config with its dataset and run under `folder`, its input made absolute, local[2]."""
    data = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    data["ingest"]["input"] = str((ROOT / "configs" / data["ingest"]["input"]).resolve())
    data["dataset"]["path"] = str(folder / "dataset")
    data["train"]["run_dir"] = str(folder / "run")
    data["spark"] = {"master": "local[2]"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["csv", "text"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dltool-latency-"))
    try:
        floors = [timed([sys.executable, "-c", FLOOR]) for _ in range(3)]
        floor = statistics.median(floors)
        print(f"floor (fresh Python, SparkSession + range(1).count()): {' '.join(f'{f:.1f}' for f in floors)} s, "
              f"median {floor:.1f} s", flush=True)  # fmt: skip
        rows = []
        for name in args.configs:
            folder = work / name
            folder.mkdir()
            config = str(config_for(name, folder))
            source = yaml.safe_load(Path(config).read_text())["ingest"]["input"]
            times = {
                "ingest": timed([*DLTOOL, "ingest", config, "--json"]),
                "train (1 epoch)": timed([*DLTOOL, "train", config, "--epochs", "1", "--json"]),
                "eval": timed([*DLTOOL, "eval", config, "--json"]),
                "predict": timed([*DLTOOL, "predict", config, "--input", source, "--output", str(folder / "preds"),
                                  "--json"]),  # fmt: skip
            }
            run = json.loads((folder / "run" / "run.json").read_text())
            first_step = run.get("time_to_first_step_s")
            for verb, took in times.items():
                rows.append((name, verb, took, took - floor))
                print(f"  {name} {verb}: {took:.1f} s ({took - floor:+.1f} s over the floor)", flush=True)
            if first_step is not None:  # from the start of `run_training`, after the CLI's imports and config load
                rows.append((name, "train: first step", first_step, first_step - floor))
                print(f"  {name} train, first step at {first_step:.1f} s ({first_step - floor:+.1f} s over the floor)")
            chain = times["ingest"] + times["train (1 epoch)"] + times["eval"]
            print(f"  {name} ingest + train (1 epoch) + eval: {chain:.1f} s", flush=True)
        print(f"\n{'config':8s} {'verb':16s} {'wall s':>7s} {'over floor s':>13s}")
        for name, verb, took, over in rows:
            print(f"{name:8s} {verb:16s} {took:7.1f} {over:13.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
