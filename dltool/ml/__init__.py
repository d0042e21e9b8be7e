"""Spark ML stages over dltool's trainer (docs/spark-ml.md): Keras Estimators and Models, datasets as DataFrames.

    from dltool.ml import KerasClassifier
    model = KerasClassifier(epochs=10, learningRate=1e-3).fit(train_df)
    scored = model.transform(test_df)   # prediction, probability, rawPrediction
"""

from dltool.ml.dataset import read_dataset, write_dataset
from dltool.ml.keras import KerasClassificationModel, KerasClassifier, KerasRegressionModel, KerasRegressor

__all__ = ["KerasClassificationModel", "KerasClassifier", "KerasRegressionModel", "KerasRegressor", "read_dataset",
           "write_dataset"]  # fmt: skip
