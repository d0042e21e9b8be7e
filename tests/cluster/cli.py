"""Run the real dltool CLI in its own process: its own Spark application on the cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def dltool(env: dict, *args) -> tuple[int, dict | None, str]:
    """Exit code, the --json summary and the end of stderr of one dltool command."""
    result = subprocess.run([sys.executable, "-m", "dltool.cli", *map(str, args), "--json"], env=env,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    summary = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, summary, result.stderr[-3000:]


def start(env: dict, *args, **popen) -> subprocess.Popen:
    """One dltool command started in the background (stdout and stderr as text pipes unless given)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "dltool.cli", *map(str, args)], env=env, text=True, **popen)


def process_pids(*needles: bytes) -> list[int]:
    """PIDs of running processes whose command line contains every needle."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            pids.append(int(entry.name))
    return pids


def spark_submit(master: str, env: dict, *args) -> tuple[int, dict | None, str]:
    """dltool's entry script (python -m dltool.where) under the pip pyspark's spark-submit; like dltool()."""
    import pyspark

    home = Path(pyspark.__file__).parent
    script = subprocess.run([sys.executable, "-m", "dltool.where"], capture_output=True, text=True, check=True)
    env = {**env, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [str(home / "bin" / "spark-submit"), "--master", master, "--conf", "spark.executor.memory=1g",
         script.stdout.strip(), *map(str, args), "--json"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    out = result.stdout
    summary = json.loads(out[out.index("{") :]) if "{" in out else None  # spark-submit may print before it
    return result.returncode, summary, result.stderr[-3000:]
