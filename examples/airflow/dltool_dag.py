"""An Airflow DAG that runs one dltool experiment a day: ingest -> train -> eval (quality gate) -> export.

Each step is the dltool command line in a BashOperator, so the DAG needs nothing from dltool but the
`dltool` executable (Airflow and dltool live in separate virtualenvs). Every step writes under
`{{ params.root }}/{{ ds }}/`, so a day's run owns its dataset, run dir and exported files.

- Exit codes: 0 done or already up to date; 1 a runtime failure (storage, Spark, a lost worker): retried,
  since every dltool verb is idempotent (ingest and train find their finished work, train resumes from
  its newest checkpoint); 2 a config or input error and 3 a missed quality gate (eval's --fail-under,
  export's --max-drop, ingest's max_bad_fraction) fail the task at once, because a retry cannot change them.
- XCom: each task pushes its command's JSON summary (the last line of `dltool ... --json`) as a dict,
  e.g. `ti.xcom_pull(task_ids="eval")["checkpoints"][0]["metrics"]["accuracy"]`.

Params (override them per run with `airflow dags trigger --conf '{...}'` or in the trigger form):
`dltool` (the executable), `config`, `root`, `min_accuracy` (eval's gate), `format` and `max_drop`
(export's). Tested with Apache Airflow 3.3 (`tests/integration/test_airflow.py`); the 2.x import of
BashOperator is kept for older installations.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

try:  # Airflow 3: operators live in the standard provider, exceptions in the task SDK
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.operators.bash import BashOperator

# dltool's exit codes that a retry cannot change.
FINAL = {2: "a config or input error", 3: "a quality gate was missed"}


class DltoolOperator(BashOperator):
    """One dltool verb with --json. Its summary (the command's last stdout line) goes to XCom as a dict; exit 2
    and 3 fail the task without retries, exit 1 is retried."""

    def __init__(self, *, verb: str, args: str, **kwargs):
        # stderr (progress, warnings, errors) streams to the task log as it comes; stdout is held back and its
        # last line printed after the command ends, so the summary is the last line Airflow sees whatever
        # Spark logs on the way out. Params reach the command as environment variables, quoted where used: a
        # param (from a trigger's --conf) is never read as shell code.
        command = (
            f'out=$("$DLTOOL_BIN" {verb} "$DLTOOL_CONFIG" {args} --json); rc=$?; '
            'printf "%s\\n" "$out" | tail -n 1; exit $rc'
        )
        super().__init__(bash_command=command, env=PARAMS_ENV, append_env=True, output_processor=_summary, **kwargs)

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException:
            process = self.subprocess_hook.sub_process
            code = process.returncode if process is not None else None
            if code in FINAL:
                raise AirflowFailException(f"dltool {self.task_id} exited {code}: {FINAL[code]}; not retried") from None
            raise


def _summary(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return {"status": "unparsed", "output": line}


# Every param the commands use, as an environment variable of the task (rendered by Jinja, not by the shell).
PARAMS_ENV = {
    "DLTOOL_BIN": "{{ params.dltool }}", "DLTOOL_CONFIG": "{{ params.config }}", "DAY": "{{ params.root }}/{{ ds }}",
    "MIN_ACCURACY": "{{ params.min_accuracy }}", "EXPORT_FORMAT": "{{ params.format }}", "MAX_DROP": "{{ params.max_drop }}",
}  # fmt: skip

with DAG(
    dag_id="dltool_experiment",
    description="dltool ingest -> train -> eval (gate) -> export",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one Spark application at a time on a small cluster
    params={
        "dltool": os.environ.get("DLTOOL_BIN", "dltool"),
        "config": os.environ.get("DLTOOL_CONFIG", "configs/csv.yaml"),
        "root": os.environ.get("DLTOOL_ROOT", "/tmp/dltool-airflow"),
        "min_accuracy": 0.7,
        "format": "tflite",
        "max_drop": 0.02,
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["dltool"],
) as dag:
    ingest = DltoolOperator(task_id="ingest", verb="ingest", args='--output "$DAY/dataset"')
    train = DltoolOperator(task_id="train", verb="train", args='--data "$DAY/dataset" --run-dir "$DAY/run" '
                           "{{ '--resume' if ti.try_number > 1 else '' }}")  # a retry continues from the last checkpoint
    evaluate = DltoolOperator(
        task_id="eval", verb="eval",
        args='--data "$DAY/dataset" --run-dir "$DAY/run" --fail-under "accuracy=$MIN_ACCURACY"',
    )  # fmt: skip
    export = DltoolOperator(
        task_id="export", verb="export",
        args='--data "$DAY/dataset" --run-dir "$DAY/run" --output "$DAY/export" '
        '--format "$EXPORT_FORMAT" --max-drop "accuracy=$MAX_DROP"',
    )  # fmt: skip
    ingest >> train >> evaluate >> export
