"""The chain on YARN against the same chain on local[2]: both read and write HDFS, same data, one run.

Starts the Hadoop cluster of `.ci/hadoop` (HDFS: 1 NameNode, 2 DataNodes; YARN: 1 ResourceManager,
2 NodeManagers) on 127.0.0.1, puts --per-class sample images of each digit class on HDFS with Hadoop's
FsShell, packs this virtualenv and Spark's jars onto HDFS (`yarn_setup`), then runs
`dltool ingest → train (2 workers, --epochs) → eval → predict` three times, each command its own
process as a user runs it:

- local[2]: Spark in the driver's JVM, everything on HDFS;
- YARN, cold: the first applications, whose containers unpack the 2 GB environment on each node;
- YARN, warm: the same again (the NodeManagers' caches hold the environment).

Prints the cluster's start-up cost, each step's seconds and the ratio YARN / local[2]
(results in docs/benchmarks.md, "YARN").

    .venv/bin/python bench/yarn_chain.py                 # about 10 minutes here
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("ingest", "train", "eval", "predict")


def launcher():
    loader = importlib.machinery.SourceFileLoader("dltool_ci_hadoop", str(ROOT / ".ci" / "hadoop"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def chain(config: Path, name: str) -> dict[str, float]:
    times = {}
    for step in STEPS:
        args = [step, str(config), "--overwrite"] if step in ("ingest", "train") else [step, str(config)]
        if step == "predict":
            args += ["--input", "hdfs:///bench/images/1", "--output", f"hdfs:///bench/predictions/{name}", "--overwrite"]
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "dltool", *args], capture_output=True, text=True, env=dict(os.environ))
        times[step] = time.monotonic() - started
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip() and not line.lstrip().startswith("at ")]
            sys.exit(f"{name} {step} failed:\n" + "\n".join(lines[-40:]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="images of each of the 10 classes (default 20)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    hadoop = launcher()
    with tempfile.TemporaryDirectory(prefix="dltool-yarn-bench-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        hadoop.start(work / "cluster")
        start_s = time.monotonic() - started
        os.environ.update(hadoop.environment(work / "cluster"))
        try:
            images = work / "images"
            for folder in sorted((ROOT / "sample_data" / "images").iterdir()):
                (images / folder.name).mkdir(parents=True)
                for path in sorted(folder.iterdir())[: args.per_class]:
                    (images / folder.name / path.name).write_bytes(path.read_bytes())
            started = time.monotonic()
            hadoop.fs(work / "cluster", ["-mkdir", "-p", "/bench"], check=True, capture_output=True)
            hadoop.fs(work / "cluster", ["-put", str(images), "/bench/images"], check=True, capture_output=True)
            put_s = time.monotonic() - started
            started = time.monotonic()
            yarn = hadoop.yarn_setup(work / "cluster")
            setup_s = time.monotonic() - started
            results = {}
            for name, spark in (("local[2]", {"master": "local[2]"}), ("YARN cold", yarn), ("YARN warm", yarn)):
                data = yaml.safe_load((ROOT / "configs" / "images.yaml").read_text())
                data["spark"] = spark
                data["ingest"].update(input="hdfs:///bench/images")
                data["ingest"].pop("augment", None)
                slug = name.replace(" ", "_").replace("[", "").replace("]", "")
                data["dataset"]["path"] = f"hdfs:///bench/datasets/{slug}"
                data["train"].update(run_dir=f"hdfs:///bench/runs/{slug}", epochs=args.epochs, workers=2)
                config = work / f"{slug}.yaml"
                config.write_text(yaml.safe_dump(data, sort_keys=False))
                results[name] = chain(config, slug)
        finally:
            hadoop.stop(work / "cluster")
    print(f"# {10 * args.per_class} images, {args.epochs} epochs, 2 workers; machine: {os.cpu_count()} cores")
    print(f"cluster start {start_s:.0f} s; FsShell put of the images {put_s:.0f} s; "
          f"packed env + Spark jars to HDFS {setup_s:.0f} s")
    print("| step | " + " | ".join(results) + " | YARN warm / local[2] |")
    print("| --- |" + " --- |" * (len(results) + 1))
    for step in (*STEPS, "total"):
        row = {name: (sum(t.values()) if step == "total" else t[step]) for name, t in results.items()}
        print(f"| {step} | " + " | ".join(f"{v:.1f} s" for v in row.values())
              + f" | {row['YARN warm'] / row['local[2]']:.2f}x |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
