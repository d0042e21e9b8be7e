"""The example Airflow DAG (examples/airflow/dltool_dag.py) run by a real Apache Airflow, installed in its own
virtualenv by .ci/airflow, with a SQLite metadata DB: `airflow dags test` of its daily loop on a folder of
images that grows. Day one ingests and trains from scratch behind an absolute gate; day two adds files, so
ingest adds version 2, train starts from day one's model and eval gates against it; the same day again with
a gate it cannot meet fails eval without a retry (ingest and train are up to date, export never runs)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DAG_ID = "dltool_experiment"
DAY = "2026-12-02"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """Run `airflow ARGS` against a fresh AIRFLOW_HOME with the example DAG folder: (exit code, output)."""
    venv = subprocess.run(["bash", str(ROOT / ".ci" / "airflow")], capture_output=True, text=True)
    if venv.returncode != 0:
        pytest.fail(f"could not install Apache Airflow: {venv.stderr[-2000:]}")
    executable = Path(venv.stdout.strip()) / "bin" / "airflow"
    home = tmp_path_factory.mktemp("airflow")
    shutil.copytree(ROOT / "sample_data" / "images", home / "images")  # the input that grows
    config = yaml.safe_load((ROOT / "configs" / "images.yaml").read_text())
    config["ingest"]["input"] = str(home / "images")
    config["train"]["epochs"] = 12
    (home / "images.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "examples" / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DLTOOL_BIN": str(Path(sys.executable).parent / "dltool"),
        "DLTOOL_CONFIG": str(home / "images.yaml"),
        "DLTOOL_ROOT": str(home / "loop"),
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


def test_the_daily_loop_grows_the_dataset_continues_the_model_and_stops_at_a_missed_gate(airflow):
    loop = airflow.home / "loop"
    tasks = ("ingest", "train", "eval", "export", "promote")
    code, output = airflow("dags", "test", DAG_ID, "2026-12-01")
    assert code == 0, output[-4000:]
    states, xcoms = _tasks(airflow.home)
    assert states == {task: ("success", 1) for task in tasks}
    assert xcoms["ingest"]["status"] == "written" and xcoms["ingest"]["version"] == 1
    assert xcoms["train"]["status"] == "completed" and "parent" not in xcoms["train"]
    first = xcoms["eval"]["checkpoints"][0]["metrics"]["accuracy"]
    assert xcoms["eval"]["gates"] == [{"metric": "accuracy", "rule": ">=", "threshold": 0.7, "value": first,
                                       "passed": True}]  # fmt: skip
    assert (loop / "champion").read_text() == str(loop / "runs" / "2026-12-01" / "run")

    # Day two: 40 new images. Only they are decoded (version 2); the model continues from day one's.
    for i, source in enumerate(sorted((airflow.home / "images").rglob("*.png"))[:40]):
        shutil.copy(source, source.with_name(f"day2-{i:02d}.png"))
    code, output = airflow("dags", "test", DAG_ID, DAY, "--conf", json.dumps({"max_regression": 0.1}))
    assert code == 0, output[-4000:]
    states, xcoms = _tasks(airflow.home)
    assert states == {task: ("success", 1) for task in tasks}
    assert xcoms["ingest"]["status"] == "updated" and xcoms["ingest"]["version"] == 2
    assert sum(xcoms["ingest"]["changes"]["added"].values()) == 40
    parent = xcoms["train"]["parent"]
    assert parent["model"] == str(loop / "runs" / "2026-12-01" / "run" / "model" / "model.keras")
    assert parent["dataset_version"] == 1 and xcoms["train"]["dataset_version"] == 2 and xcoms["train"]["epochs_done"] == 3
    scored = xcoms["eval"]["parent"]["metrics"]["accuracy"]  # day one's model on version 2's test split
    gate = xcoms["eval"]["gates"][0]
    assert gate["threshold"] == pytest.approx(scored - 0.1) and gate["passed"] and xcoms["eval"]["dataset_version"] == 2
    stored = json.loads((loop / "runs" / DAY / "run" / "eval" / "test" / "eval.json").read_text())
    assert stored["parent"]["metrics"]["accuracy"] == scored
    assert [f["format"] for f in xcoms["export"]["formats"]] == ["keras", "tflite"]
    assert (loop / "champion").read_text() == str(loop / "runs" / DAY / "run")

    # The same day again with a gate no model meets (beat the parent by 2): the finished steps are no-ops, eval
    # fails once (exit 3 is not retried although the DAG sets retries), export never runs.
    code, output = airflow("dags", "test", DAG_ID, DAY, "--conf", json.dumps({"max_regression": -2}))
    assert code != 0
    assert "dltool eval exited 3: a quality gate was missed; not retried" in output
    states, xcoms = _tasks(airflow.home)
    assert states["ingest"] == states["train"] == ("success", 1)
    assert xcoms["ingest"]["status"] == xcoms["train"]["status"] == "up_to_date"
    assert states["eval"] == ("failed", 1)
    assert states["export"][0] == "upstream_failed" and "eval" not in xcoms and "export" not in xcoms
    assert xcoms["train"]["parent"]["model"] == parent["model"]  # the day's parent, fixed by its first try


def test_a_hostile_param_reaches_dltool_as_text_never_as_shell_code(airflow):
    marker = airflow.home / "PWNED"
    hostile = f'/nonexistent/x.yaml"; touch {marker}; echo "$(touch {marker})'
    code, output = airflow("dags", "test", DAG_ID, "2026-12-03", "--conf", json.dumps({"config": hostile}))
    assert code != 0
    assert not marker.exists()
    assert "dltool ingest exited 2: a config or input error; not retried" in output
    assert "x.yaml\"; touch" in output  # the whole value, one argument: "config file not found"
    states, _ = _tasks(airflow.home)
    assert states["ingest"] == ("failed", 1)
