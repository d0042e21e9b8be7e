"""An image dataset ingested by dltool, loaded as a DataFrame and fitted with a Keras classifier in Spark ML.

    .venv/bin/python examples/spark_ml/image_dataset.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(spark, workdir: str, dataset: str | None = None) -> dict:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    import dltool
    from dltool.ml import KerasClassifier

    if dataset is None:  # the sample digits: 32x32 RGB images in class folders
        dataset = f"{workdir}/digits"
        dltool.ingest(ROOT / "configs/images.yaml", dataset__path=dataset)
    train = dltool.load_dataset(dataset, split="train")  # features: array<float>; label: classes as ML attributes
    test = dltool.load_dataset(dataset, split="test")
    classifier = KerasClassifier(featuresShape=[32, 32, 3], epochs=4, learningRate=0.002, workDir=f"{workdir}/fits",
                                 train={"model": {"builtin": "small_cnn"}, "monitor": "val_accuracy"})  # fmt: skip
    model = classifier.fit(train)
    scored = model.transform(test)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(scored)
    print(f"{model.numClasses} classes {model.getClasses()}; test accuracy {accuracy:.3f} on {test.count()} images")
    return {"model": model, "accuracy": accuracy, "test": test}


if __name__ == "__main__":
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment's Python
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    main(spark, sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "out/spark_ml"))
