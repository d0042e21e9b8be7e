"""How dltool starts a local Spark session: warm Python workers, one worker pool for RDD and SQL jobs,
no web UI, and TensorFlow loading without Keras's optional imports. Each runs in a fresh process
(the suite's shared session is already started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, os, sys, time
from dltool.config.models import SparkSettings
from dltool.spark.session import WARM_UP_GROUP, spark_session

from pyspark.sql import SparkSession

# A command of RDD jobs only (eval, train) starts the context without the SQL session ...
spark = spark_session(SparkSettings(master="local[2]"), warm=("dltool.transforms.image", "cv2"), sql=False)
sc = spark.sparkContext
without_sql = SparkSession.getActiveSession() is None and type(spark).__name__ == "ContextOnly"
tracker = sc.statusTracker()
deadline = time.time() + 120
while time.time() < deadline:  # the warm-up job runs on its own thread; wait for it to finish
    jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup(WARM_UP_GROUP)]
    if jobs and all(j is not None and j.status == "SUCCEEDED" for j in jobs):
        break
    time.sleep(0.2)

def probe(_):
    import os, sys
    yield (os.getpid(), "cv2" in sys.modules and "dltool.transforms.image" in sys.modules)

def arrow(batches):
    import os
    import pyarrow as pa
    for _ in batches:
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()]})

rdd = sc.parallelize(range(2), 2).mapPartitions(probe).collect()
# ... and a later one that needs SQL builds the session on the same context and workers
spark = spark_session(SparkSettings(master="local[2]"))
sql = [r["pid"] for r in spark.range(2).repartition(2).mapInArrow(arrow, "pid long").collect()]
print(json.dumps({"rdd": rdd, "sql": sql, "ui": sc.uiWebUrl, "warm_jobs": len(tracker.getJobIdsForGroup(WARM_UP_GROUP)),
                  "without_sql": without_sql, "same_context": spark.sparkContext is sc}))
"""


def _run(code: str) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_local_session_starts_warm_workers_shared_by_rdd_and_sql_jobs_and_sql_only_when_asked():
    seen = _run(PROBE)
    assert seen["warm_jobs"] == 1 and seen["ui"] is None
    assert seen["without_sql"] and seen["same_context"]
    pids = {pid for pid, _ in seen["rdd"]}
    assert all(warm for _, warm in seen["rdd"])  # the tasks ran in workers that had imported the reader's modules
    assert set(seen["sql"]) <= pids  # the SQL job reused those workers: one pool, one daemon


def test_tensorflow_loads_without_kerass_optional_imports_which_still_import_afterwards():
    code = """
import json, sys
from dltool.tfenv import KERAS_EXTRAS, import_tensorflow_quietly
import_tensorflow_quietly()
import keras
held = [name for name in KERAS_EXTRAS if name in sys.modules]
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
shape = list(model.predict(__import__("numpy").zeros((4, 3)), verbose=0).shape)
import pandas, sklearn, matplotlib
print(json.dumps({"held": held, "shape": shape, "after": [name in sys.modules for name in KERAS_EXTRAS]}))
"""
    seen = _run(code)
    assert seen == {"held": [], "shape": [4, 2], "after": [True, True, True]}
