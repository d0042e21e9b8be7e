"""A Spark ML Pipeline on a table: impute, index, assemble, then a dltool Keras classifier; save, load, score.

    .venv/bin/python examples/spark_ml/tabular_pipeline.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["age", "income", "tenure_months", "monthly_spend", "support_calls"]


def main(spark, workdir: str) -> dict:
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import Imputer, IndexToString, StandardScaler, StringIndexer, VectorAssembler

    from dltool.ml import KerasClassifier

    customers = spark.read.csv(str(ROOT / "sample_data/tabular/customers.csv"), header=True, inferSchema=True)
    train, test = customers.randomSplit([0.8, 0.2], seed=7)

    pipeline = Pipeline(stages=[
        Imputer(inputCols=NUMERIC, outputCols=NUMERIC, strategy="median"),
        StringIndexer(inputCols=["plan", "region"], outputCols=["plan_index", "region_index"], handleInvalid="keep"),
        VectorAssembler(inputCols=[*NUMERIC, "plan_index", "region_index"], outputCol="features"),
        StringIndexer(inputCol="churn", outputCol="label"),  # the class names travel in the column's metadata
        KerasClassifier(epochs=30, learningRate=0.005, batchSize=32, patience=8, validationFraction=0.2,
                        workDir=f"{workdir}/fits",
                        train={"model": {"layers": [{"Dense": {"units": 32, "activation": "relu"}},
                                                    {"Dense": {"units": 16, "activation": "relu"}}]}}),
    ])  # fmt: skip
    model = pipeline.fit(train)
    keras_model = model.stages[-1]
    print(f"trained {keras_model.trainingSummary.epochs_done} epochs; classes {keras_model.getClasses()}; "
          f"run dir {keras_model.getRunDir()}")

    scored = model.transform(test)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(scored)
    # For scale: Spark ML's logistic regression on the same features and split.
    baseline = Pipeline(stages=[*pipeline.getStages()[:-1], StandardScaler(inputCol="features", outputCol="scaled"),
                                LogisticRegression(featuresCol="scaled")]).fit(train).transform(test)  # fmt: skip
    print(f"test accuracy {accuracy:.3f} (logistic regression: "
          f"{MulticlassClassificationEvaluator(metricName='accuracy').evaluate(baseline):.3f})")

    model.write().overwrite().save(f"{workdir}/churn-pipeline")
    loaded = PipelineModel.load(f"{workdir}/churn-pipeline")
    # Score a table with the loaded pipeline; IndexToString names each prediction from the model's classes.
    named = IndexToString(inputCol="prediction", outputCol="predicted_churn")
    again = named.transform(loaded.transform(test))
    again.select("customer_id", "churn", "predicted_churn", "probability").show(5, truncate=False)
    return {"model": model, "loaded": loaded, "test": test, "accuracy": accuracy, "scored": scored, "named": again}


if __name__ == "__main__":
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment's Python
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    main(spark, sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "out/spark_ml"))
