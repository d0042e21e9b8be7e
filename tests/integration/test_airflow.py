"""The example Airflow DAG (examples/airflow/dltool_dag.py) run by a real Apache Airflow, installed in its own
virtualenv by .ci/airflow, with a SQLite metadata DB: `airflow dags test` on the sample CSV config, once with a
gate it meets (every task succeeds, the XCom holds eval's accuracy) and once, for the same day, with a gate
it cannot meet (ingest and train are up to date, eval fails without a retry, export never runs)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DAG_ID = "dltool_experiment"
DAY = "2026-12-01"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """Run `airflow ARGS` against a fresh AIRFLOW_HOME with the example DAG folder: (exit code, output)."""
    venv = subprocess.run(["bash", str(ROOT / ".ci" / "airflow")], capture_output=True, text=True)
    if venv.returncode != 0:
        pytest.fail(f"could not install Apache Airflow: {venv.stderr[-2000:]}")
    executable = Path(venv.stdout.strip()) / "bin" / "airflow"
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "examples" / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DLTOOL_BIN": str(Path(sys.executable).parent / "dltool"),
        "DLTOOL_CONFIG": str(ROOT / "configs" / "csv.yaml"),
        "DLTOOL_ROOT": str(home / "runs"),
    }

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run([str(executable), *args], env=env, cwd=home, capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr

    code, output = run("db", "migrate")
    assert code == 0, output[-3000:]
    run.home = home
    return run


def _tasks(home: Path) -> tuple[dict, dict]:
    """The newest DAG run's task states {task: (state, try_number)} and XCom return values {task: summary}."""
    with sqlite3.connect(home / "airflow.db") as db:
        (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)).fetchone()
        states = {task: (state, tries) for task, state, tries in db.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id))}  # fmt: skip
        xcoms = {task: json.loads(value) for task, value in db.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'", (DAG_ID, run_id))}  # fmt: skip
    return states, {task: json.loads(value) if isinstance(value, str) else value for task, value in xcoms.items()}


def test_the_dag_runs_every_step_then_stops_at_a_missed_gate(airflow):
    code, output = airflow("dags", "test", DAG_ID, DAY)
    assert code == 0, output[-4000:]
    states, xcoms = _tasks(airflow.home)
    assert states == {task: ("success", 1) for task in ("ingest", "train", "eval", "export")}
    day = airflow.home / "runs" / DAY
    assert xcoms["ingest"]["status"] == "written" and xcoms["ingest"]["dataset"] == str(day / "dataset")
    assert xcoms["train"]["status"] == "completed"
    accuracy = xcoms["eval"]["checkpoints"][0]["metrics"]["accuracy"]
    stored = json.loads((day / "run" / "eval" / "test" / "eval.json").read_text())
    assert accuracy == stored["checkpoints"][0]["metrics"]["accuracy"] and accuracy >= 0.7  # the DAG's default gate
    assert xcoms["eval"]["passed"] is True
    assert [f["format"] for f in xcoms["export"]["formats"]] == ["keras", "tflite"]
    assert (day / "export" / "export.json").exists()

    # The same day again with a gate no model meets: the finished steps are no-ops, eval fails once (exit 3 is
    # not retried although the DAG sets retries), export never runs.
    code, output = airflow("dags", "test", DAG_ID, DAY, "--conf", json.dumps({"min_accuracy": 1.01}))
    assert code != 0
    assert "dltool eval exited 3: a quality gate was missed; not retried" in output
    states, xcoms = _tasks(airflow.home)
    assert states["ingest"] == states["train"] == ("success", 1)
    assert xcoms["ingest"]["status"] == xcoms["train"]["status"] == "up_to_date"
    assert states["eval"] == ("failed", 1)
    assert states["export"][0] == "upstream_failed" and "eval" not in xcoms and "export" not in xcoms


def test_a_hostile_param_reaches_dltool_as_text_never_as_shell_code(airflow):
    marker = airflow.home / "PWNED"
    hostile = f'/nonexistent/x.yaml"; touch {marker}; echo "$(touch {marker})'
    code, output = airflow("dags", "test", DAG_ID, "2026-12-02", "--conf", json.dumps({"config": hostile}))
    assert code != 0
    assert not marker.exists()
    assert "dltool ingest exited 2: a config or input error; not retried" in output
    assert "x.yaml\"; touch" in output  # the whole value, one argument: "config file not found"
    states, _ = _tasks(airflow.home)
    assert states["ingest"] == ("failed", 1)
