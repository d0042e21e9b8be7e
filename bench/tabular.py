"""The `tabular` built-in alone on re-splits of real tables: its variants against logistic (ridge) regression and
HistGradientBoosting, every model on the same rows.

bench/quality.py scores the whole tool on one split, where 80 test rows make one car a point
of R². Here each table is ingested once by dltool (`numeric: auto, categorical: auto`, the
label only), then its rows are shuffled into `--splits` new 70/10/20 splits; on each, every
variant of `train.model.args` is built by dltool (`build_model`, sized batch and epochs,
early stopping on the validation loss, best epoch kept) and trained by a plain Keras `fit` in
this process, and the baselines are fitted on the same dltool features. Prints each table's
mean test accuracy (R² for regression) and each variant's difference to the best baseline.

    pip install -e '.[bench]'
    .venv/bin/python bench/tabular.py                                    # default against one MLP
    .venv/bin/python bench/tabular.py --sets mpg,weather --splits 8 \\
        --variants '{"default": {}, "8 members": {"ensemble": 8}}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from quality import SETS, _table, experiment, load_split, table_rows


def _sklearn_table(root: Path, name: str, regression: bool):
    """A table that ships inside scikit-learn, as CSV with its label in `target`."""
    from sklearn import datasets

    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    if not regression:
        frame["target"] = frame["target"].astype(str)
    return _table(root, name, frame, "target", "regression" if regression else "classification")


TABLES = {**{n: SETS[n] for n in ("cars", "mpg", "weather", "penguins", "cancer")},
          "diabetes": lambda root: _sklearn_table(root, "diabetes", True),
          "iris": lambda root: _sklearn_table(root, "iris", False),
          "wine": lambda root: _sklearn_table(root, "wine", False)}  # fmt: skip


def score(config, manifest, args: dict, seed: int, data: dict) -> float:
    """`tabular` with `args`, sized and trained as dltool would, under a plain Keras fit; the test metric."""
    import keras
    import tensorflow as tf

    from dltool.train.metrics import members_loss, per_example_loss_fn
    from dltool.train.model import build_model, build_optimizer, training_view
    from dltool.train.sizing import sized

    (x, y), (vx, vy), (tx, ty) = data["train"], data["val"], data["test"]
    regression = manifest.label.kind == "regression"
    train = sized(config.train, len(x))
    spec = train.model.model_copy(update={"builtin": "tabular", "args": args})
    train = train.model_copy(update={"seed": seed, "model": spec})
    batch = train.global_batch_size
    scale = [float(y.mean()), float(y.std())] if regression else None
    model = build_model(train, manifest, scale)
    loss = per_example_loss_fn("mse" if regression else "sparse_categorical_crossentropy", manifest.label.classes or 0,
                               0.0)  # fmt: skip
    view = training_view(model, manifest)  # each member trained on its own loss, as dltool's workers train them

    def fit_loss(labels, outputs):
        """The model's loss, or each member's own (outputs [batch, members, ...]) averaged."""
        labels = tf.reshape(labels, [-1])
        return loss(labels, outputs) if view is None else tf.reduce_mean(members_loss(loss, labels, outputs))

    fitted = model if view is None else keras.Model(view.inputs, view.outputs[1])
    fitted.compile(optimizer=build_optimizer(train, max(1, len(x) // batch)), loss=fit_loss)

    class PredictionLoss(keras.callbacks.Callback):
        """The validation loss of the model's prediction (the members' mean), which dltool's workers stop on."""

        def on_epoch_end(self, epoch, logs=None):
            logs["val_prediction_loss"] = float(tf.reduce_mean(loss(vy, model(vx, training=False))))

    best = keras.callbacks.EarlyStopping(monitor="val_prediction_loss", mode="min",
                                         patience=train.early_stopping.patience, restore_best_weights=True)
    fitted.fit(x, y.astype(np.float32) if regression else y, batch_size=batch, epochs=train.epochs,
               callbacks=[PredictionLoss(), best], verbose=0)  # fmt: skip
    p = model.predict(tx, verbose=0, batch_size=512)
    if regression:
        return float(1 - ((ty - p.reshape(-1)) ** 2).sum() / ((ty - ty.mean()) ** 2).sum())
    return float((p.argmax(axis=1) == ty).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(TABLES))
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--variants", type=json.loads, default={"default": {}, "one MLP": {"ensemble": 1}},
                        help="JSON: name -> train.model.args of tabular")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_tabular")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session
    from dltool.storage import Manifest, open_location

    started = time.perf_counter()
    spark, summary = None, []
    for name in args.sets.split(","):
        _, ingest, _ = TABLES[name](work)
        config = ExperimentConfig.model_validate(experiment(name, work, ingest, {}, 1, 0, False))
        spark = spark or spark_session(config.spark)
        run_ingest(config, overwrite=True, progress=False)
        dataset = Path(config.dataset.path)
        manifest = Manifest.read(open_location(str(dataset)))
        parts = [load_split(dataset, split) for split in ("train", "val", "test")]
        x = np.concatenate([p[0] for p in parts]).astype(np.float32)
        y = np.concatenate([p[1] for p in parts])
        regression = manifest.label.kind == "regression"
        rows: dict[str, list[float]] = {}
        for split in range(args.splits):
            order = np.random.default_rng(split).permutation(len(y))
            cut = [int(0.7 * len(y)), int(0.8 * len(y))]
            data = {s: (x[i], y[i]) for s, i in zip(("train", "val", "test"), np.split(order, cut))}
            for row, value in table_rows(data, regression).items():
                rows.setdefault(row, []).append(value)
            for variant, model_args in args.variants.items():
                rows.setdefault(variant, []).append(score(config, manifest, model_args, split, data))
            print(f"{name} split {split}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rows.items()), flush=True)
        means = {row: statistics.mean(values) for row, values in rows.items()}
        best = max(means[row] for row in means if row not in args.variants)
        summary.append((name, len(y), "R²" if regression else "accuracy", best, means))
    print(f"\n{args.splits} re-splits 70/10/20 per table, mean test metric; variant - best of LR (ridge) and HGB")
    print("| table | rows | metric | LR (ridge) | HGB | " + " | ".join(args.variants) + " |")
    print("| --- | ---: | --- | ---: | ---: |" + " ---: |" * len(args.variants))
    for name, n, metric, best, means in summary:
        linear = next(v for k, v in means.items() if k.endswith("regression"))
        variants = " | ".join(f"{means[v]:.3f} ({means[v] - best:+.3f})" for v in args.variants)
        print(f"| {name} | {n} | {metric} | {linear:.3f} | {means['sklearn HistGradientBoosting']:.3f} | {variants} |")
    print(f"total {time.perf_counter() - started:.0f}s")
    if spark is not None:
        spark.stop()


if __name__ == "__main__":
    main()
