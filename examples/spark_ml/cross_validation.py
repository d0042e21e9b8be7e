"""Cross-validation of a dltool classifier's learning rate with Spark ML's CrossValidator.

    .venv/bin/python examples/spark_ml/cross_validation.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["age", "income", "tenure_months", "monthly_spend", "support_calls"]


def main(spark, workdir: str) -> dict:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import Imputer, StringIndexer, VectorAssembler
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    from dltool.ml import KerasClassifier

    customers = spark.read.csv(str(ROOT / "sample_data/tabular/customers.csv"), header=True, inferSchema=True)
    customers = Imputer(inputCols=NUMERIC, outputCols=NUMERIC, strategy="median").fit(customers).transform(customers)
    customers = VectorAssembler(inputCols=NUMERIC, outputCol="features").transform(customers)
    customers = StringIndexer(inputCol="churn", outputCol="label").fit(customers).transform(customers)

    classifier = KerasClassifier(epochs=8, batchSize=32, workDir=f"{workdir}/fits", train={"monitor": "val_accuracy"})
    grid = ParamGridBuilder().addGrid(classifier.learningRate, [1e-5, 1e-2]).build()
    search = CrossValidator(estimator=classifier, estimatorParamMaps=grid, numFolds=2, seed=3, parallelism=2,
                            evaluator=MulticlassClassificationEvaluator(metricName="accuracy"))  # fmt: skip
    fitted = search.fit(customers)
    for params, accuracy in zip(grid, fitted.avgMetrics, strict=True):
        print(f"learning rate {params[classifier.learningRate]:g}: mean accuracy {accuracy:.3f} over 2 folds")
    best = fitted.bestModel
    print(f"best: learning rate {best.getLearningRate():g}")
    return {"fitted": fitted, "grid": grid, "classifier": classifier, "best": best}


if __name__ == "__main__":
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment's Python
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    main(spark, sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "out/spark_ml"))
