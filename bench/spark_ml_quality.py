"""Spark ML door, no settings: `KerasClassifier()`/`KerasRegressor()` against Spark ML's own one-liners, one run.

Four real tables that ship inside scikit-learn (no download): iris (150 rows, 3 classes),
wine (178 rows, 3 classes), breast cancer (569 rows, 2 classes) and diabetes (442 rows,
regression). Each becomes a Spark DataFrame of raw columns, assembled with `VectorAssembler`
(raw units, no scaling, as a Spark user writes it), split 70/30 with `randomSplit(seed=7)`.
On the same split:

- classification: `KerasClassifier()` (every param at its default) against Spark ML's
  `LogisticRegression()` (which standardises internally by default), test accuracy;
- regression: `KerasRegressor()` against `LinearRegression()`, test R².

    .venv/bin/python bench/spark_ml_quality.py
    .venv/bin/python bench/spark_ml_quality.py --splits 7,1,2,3,4 --sets iris,wine   # re-splits, with the mean
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="7", help="randomSplit seeds, comma-separated (7: the table's split)")
    parser.add_argument("--sets", default="iris,wine,breast cancer,diabetes")
    args = parser.parse_args()
    splits = [int(seed) for seed in args.splits.split(",")]
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression
    from sklearn import datasets

    from dltool.config.models import SparkSettings
    from dltool.ml import KerasClassifier, KerasRegressor
    from dltool.spark.session import spark_session

    spark = spark_session(SparkSettings(master="local[2]", conf={"spark.ui.enabled": False}))
    sets = {"iris": (datasets.load_iris, "classification"), "wine": (datasets.load_wine, "classification"),
            "breast cancer": (datasets.load_breast_cancer, "classification"),
            "diabetes": (datasets.load_diabetes, "regression")}  # fmt: skip
    sets = {name: sets[name] for name in args.sets.split(",")}
    rows, differences = [], {}
    with tempfile.TemporaryDirectory(prefix="dltool-sparkml-") as work:
        for name, (load, task) in sets.items():
            bunch = load(as_frame=True)
            frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_").replace("/", "_"))
            target = "target"
            columns = [c for c in frame.columns if c != target]
            df = spark.createDataFrame(frame.astype({c: "float64" for c in columns}))
            df = VectorAssembler(inputCols=columns, outputCol="features").transform(df).select("features", target)
            df = df.withColumnRenamed(target, "label")
            if task == "classification":
                df = df.withColumn("label", df["label"].cast("double"))
            for seed in splits:
                train, test = df.randomSplit([0.7, 0.3], seed=seed)
                train, test = train.cache(), test.cache()
                if task == "classification":
                    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
                    classic, dl = LogisticRegression(), KerasClassifier(workDir=f"{work}/fits")
                    metric, baseline_name = "accuracy", "LogisticRegression()"
                else:
                    evaluator = RegressionEvaluator(metricName="r2")
                    classic, dl = LinearRegression(), KerasRegressor(workDir=f"{work}/fits")
                    metric, baseline_name = "R²", "LinearRegression()"
                baseline = evaluator.evaluate(classic.fit(train).transform(test))
                started = time.perf_counter()
                ours = evaluator.evaluate(dl.fit(train).transform(test))
                seconds = time.perf_counter() - started
                where = f" (split {seed})" if len(splits) > 1 else ""
                rows.append(f"| {name}{where} | {train.count()} / {test.count()} | {metric} | {ours:.3f} | "
                            f"{baseline_name} {baseline:.3f} | {ours - baseline:+.3f} | {seconds:.0f} s |")
                differences.setdefault(name, []).append(ours - baseline)
                print(rows[-1], flush=True)
    print("| data | train / test rows | metric | dltool, no params | Spark ML, no params | difference | dltool fit + score |")
    print("| --- | ---: | --- | ---: | --- | ---: | ---: |")
    print("\n".join(rows))
    if len(splits) > 1:
        for name, values in differences.items():
            print(f"{name}: mean difference over {len(values)} splits {sum(values) / len(values):+.3f}")


if __name__ == "__main__":
    main()
