"""Spark ML benchmark: a dltool model's `transform` against `dltool predict` and plain Keras `predict`, one run.

The same trained classifier (an MLP on 16 float features, trained by `KerasClassifier.fit`)
scores the same N rows three ways on Spark local[2]: (a) Keras `model.predict` on the rows
held in memory as numpy, in this process (the ceiling); (b) `KerasClassificationModel.transform`
of a Parquet table (id, features array<float>) written back as Parquet (id, prediction,
probability), Spark's `predict_batch_udf`; (c) `dltool predict` of the same rows as a dltool
dataset, written as Parquet. (b) and (c) run twice: cold (first job in fresh Python workers)
and warm. (d) copies the table's three columns with Spark and no model: the floor any
Spark-side transform pays to read and write.

    .venv/bin/python bench/spark_ml.py --rows 200000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    args = parser.parse_args()

    started = time.perf_counter()
    from pyspark.sql import functions as F

    import dltool
    from dltool.config.models import SparkSettings
    from dltool.ml import KerasClassifier, write_dataset
    from dltool.spark.session import spark_session

    spark = spark_session(SparkSettings(master="local[2]", conf={"spark.ui.enabled": False}))
    spark.range(1).count()
    print(f"Spark session started in {time.perf_counter() - started:.1f}s")
    work = Path(tempfile.mkdtemp(prefix="dltool-bench-ml-"))
    try:
        values = F.array(*[F.randn(seed=i).cast("float") for i in range(16)])
        rows = spark.range(args.rows).select(F.col("id").cast("string").alias("id"), values.alias("features"))
        total = F.aggregate("features", F.lit(0.0).cast("double"), lambda acc, v: acc + v)
        rows = rows.withColumn("label", (total > 0).cast("double"))
        rows.write.parquet(str(work / "table"))
        table = spark.read.parquet(str(work / "table"))
        write_dataset(table, str(work / "dataset"), key_col="id", split=(0.0, 0.0, 1.0))
        model = KerasClassifier(epochs=2, keepDataset=True, workDir=str(work / "fits"),
                                train={"model": {"builtin": "mlp"}}).fit(table.limit(args.train_rows))  # fmt: skip
        print(f"trained on {args.train_rows} rows; model {model.getModelPath()}")

        ceiling = _keras_predict(table, model.getModelPath())
        print(f"(a) Keras predict in memory: {ceiling:,.0f} rows/s")

        def transform(n: int) -> float:
            clock = time.perf_counter()
            scored = model.transform(spark.read.parquet(str(work / "table")))
            scored.select("id", "prediction", "probability").write.mode("overwrite").parquet(str(work / f"transform{n}"))
            return args.rows / (time.perf_counter() - clock)

        run = model.getRunDir()
        config = {"name": "bench-ml", "dataset": {"path": run.rsplit("/", 1)[0] + "/dataset"}, "train": {"run_dir": run}}

        def predict(n: int) -> float:
            clock = time.perf_counter()
            result = dltool.predict(config, str(work / "dataset"), str(work / f"predict{n}"), overwrite=True)
            assert result.rows == args.rows
            return args.rows / (time.perf_counter() - clock)

        def copy(n: int) -> float:  # the floor of any Spark transform: read the table, write the same number of columns
            clock = time.perf_counter()
            frame = spark.read.parquet(str(work / "table"))
            frame.select("id", "label", "features").write.mode("overwrite").parquet(str(work / f"copy{n}"))
            return args.rows / (time.perf_counter() - clock)

        results = {}
        for n, state in enumerate(("cold", "warm")):
            results[f"transform {state}"] = transform(n)
            results[f"predict {state}"] = predict(n)
        results["copy"] = copy(0)
        print(f"\n| way | rows/s | x Keras predict | x dltool predict ({args.rows:,} rows, local[2]) |")
        print("| --- | ---: | ---: | ---: |")
        print(f"| (a) Keras `predict`, in memory | {ceiling:,.0f} | 1.00 | |")
        for state in ("cold", "warm"):
            t, p = results[f"transform {state}"], results[f"predict {state}"]
            print(f"| (b) `model.transform`, {state} | {t:,.0f} | {t / ceiling:.2f} | {t / p:.2f} |")
            print(f"| (c) `dltool predict`, {state} | {p:,.0f} | {p / ceiling:.2f} | 1.00 |")
        c = results["copy"]
        print(f"| (d) Spark Parquet read + write of 3 columns, no model | {c:,.0f} | {c / ceiling:.2f} | "
              f"{c / results['predict warm']:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()


def _keras_predict(table, model_path: str) -> float:
    """Rows per second of plain `model.predict` over every row in memory (loading and tracing excluded)."""
    import keras
    import numpy as np

    x = np.asarray([r.features for r in table.select("features").collect()], dtype=np.float32)
    model = keras.models.load_model(model_path, compile=False)
    model.predict(x[:256], batch_size=256, verbose=0)
    clock = time.perf_counter()
    model.predict(x, batch_size=256, verbose=0)
    return len(x) / (time.perf_counter() - clock)


if __name__ == "__main__":
    main()
