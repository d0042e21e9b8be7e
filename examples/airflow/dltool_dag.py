"""An Airflow DAG that runs one dltool experiment every day on data that grows: the daily loop.

    ingest (incremental) -> train (warm start) -> eval (gate against the parent) -> export -> promote

- ingest: one dataset, `{{ params.root }}/dataset`, that grows. A day whose input holds new, changed or
  removed files adds a version with only those files decoded (`dltool inspect DATASET --versions`); a day
  with the same input is `up_to_date`. (Image and audio datasets grow this way; a table whose input
  changed needs `--overwrite`, docs/guide.md "Growing datasets".)
- train: a run dir per day, `{{ params.root }}/runs/{{ ds }}/run`. When an earlier day's model passed its
  gate (the champion, named in `{{ params.root }}/champion`), the new model starts from its weights
  (`--warm-start`) for `warm_epochs` epochs; the first day trains from scratch with the config's settings.
  The day's parent is fixed by its first try (`runs/{{ ds }}/parent`), so retries and reruns of a day
  find their finished work.
- eval: the gate. With a parent: `accuracy=parent-{{ params.max_regression }}`, the parent scored on the same
  test split in the same job; without one: `accuracy={{ params.min_accuracy }}`.
- export: only a model that passed; promote then makes it the champion the next day starts from.

Each step is the dltool command line in a BashOperator, so the DAG needs nothing from dltool but the
`dltool` executable (Airflow and dltool live in separate virtualenvs).

- Exit codes: 0 done or already up to date; 1 a runtime failure (storage, Spark, a lost worker): retried,
  since every dltool verb is idempotent (ingest and train find their finished work, train resumes from
  its newest checkpoint); 2 a config or input error and 3 a missed quality gate (eval's --fail-under,
  export's --max-drop, ingest's max_bad_fraction) fail the task at once, because a retry cannot change them.
- XCom: each task pushes its command's JSON summary (the last line of `dltool ... --json`) as a dict,
  e.g. `ti.xcom_pull(task_ids="eval")["checkpoints"][0]["metrics"]["accuracy"]`.

Params (override them per run with `airflow dags trigger --conf '{...}'` or in the trigger form):
`dltool` (the executable), `config`, `root`, `min_accuracy` (the first model's gate), `max_regression` (a
later model's, against its parent), `warm_epochs`, `format` and `max_drop` (export's). Tested with Apache
Airflow 3.3 (`tests/integration/test_airflow.py`); the 2.x import of BashOperator is kept for older installations.
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

    def __init__(self, *, verb: str, args: str, prelude: str = "", **kwargs):
        # stderr (progress, warnings, errors) streams to the task log as it comes; stdout is held back and its
        # last line printed after the command ends, so the summary is the last line Airflow sees whatever
        # Spark logs on the way out. Params reach the command as environment variables, quoted where used: a
        # param (from a trigger's --conf) is never read as shell code.
        command = (
            f'{prelude}out=$("$DLTOOL_BIN" {verb} "$DLTOOL_CONFIG" {args} --json); rc=$?; '
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
    "DLTOOL_BIN": "{{ params.dltool }}", "DLTOOL_CONFIG": "{{ params.config }}", "ROOT": "{{ params.root }}",
    "DAY": "{{ params.root }}/runs/{{ ds }}", "MIN_ACCURACY": "{{ params.min_accuracy }}",
    "MAX_REGRESSION": "{{ params.max_regression }}", "WARM_EPOCHS": "{{ params.warm_epochs }}",
    "EXPORT_FORMAT": "{{ params.format }}", "MAX_DROP": "{{ params.max_drop }}",
}  # fmt: skip

# The parent: the champion (the run dir of the last model that passed its gate) when the day's first try began,
# kept in $DAY/parent so that every retry and rerun of the day trains and gates against the same model.
PARENT = ('[ -f "$DAY/parent" ] || { mkdir -p "$DAY" && cat "$ROOT/champion" > "$DAY/parent" 2>/dev/null '
          '|| : > "$DAY/parent"; }; PARENT=$(cat "$DAY/parent"); ')
# The gate: no worse than the parent (scored on the same rows), or the first model's minimum.
GATE = 'if [ -n "$PARENT" ]; then GATE="accuracy=parent-$MAX_REGRESSION"; else GATE="accuracy=$MIN_ACCURACY"; fi; '

with DAG(
    dag_id="dltool_experiment",
    description="the daily loop: incremental ingest -> warm-start train -> eval (gate vs parent) -> export",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one Spark application at a time on a small cluster; days run in order
    params={
        "dltool": os.environ.get("DLTOOL_BIN", "dltool"),
        "config": os.environ.get("DLTOOL_CONFIG", "configs/images.yaml"),
        "root": os.environ.get("DLTOOL_ROOT", "/tmp/dltool-airflow"),
        "min_accuracy": 0.7,
        "max_regression": 0.01,
        "warm_epochs": 3,
        "format": "tflite",
        "max_drop": 0.02,
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["dltool"],
) as dag:
    ingest = DltoolOperator(task_id="ingest", verb="ingest", args='--data "$ROOT/dataset"')
    train = DltoolOperator(
        task_id="train", verb="train", prelude=PARENT,
        args='--data "$ROOT/dataset" --run-dir "$DAY/run" ${PARENT:+--warm-start "$PARENT" --epochs "$WARM_EPOCHS"} '
        "{{ '--resume' if ti.try_number > 1 else '' }}",  # a retry continues from the last checkpoint
    )  # fmt: skip
    evaluate = DltoolOperator(
        task_id="eval", verb="eval", prelude=PARENT + GATE,
        args='--data "$ROOT/dataset" --run-dir "$DAY/run" --fail-under "$GATE"',
    )  # fmt: skip
    export = DltoolOperator(
        task_id="export", verb="export",
        args='--data "$ROOT/dataset" --run-dir "$DAY/run" --output "$DAY/export" '
        '--format "$EXPORT_FORMAT" --max-drop "accuracy=$MAX_DROP"',
    )  # fmt: skip
    promote = BashOperator(  # the next day starts from this model; written whole, then renamed into place
        task_id="promote", env=PARAMS_ENV, append_env=True, do_xcom_push=False,
        bash_command='printf "%s" "$DAY/run" > "$ROOT/champion.tmp" && mv "$ROOT/champion.tmp" "$ROOT/champion"',
    )  # fmt: skip
    ingest >> train >> evaluate >> export >> promote
