"""Training settings nobody set, sized to the data: the same for the CLI, the Python API and Spark ML.

A fixed 10 epochs of 32 gives a 150-row table 40 optimizer steps and an underfit model, and
stops a 400-row table while its validation loss still falls. So when the config leaves them
out, the batch is about 1/32 of the train rows (8 to 64), the epochs give at least MIN_STEPS
optimizer steps (10 to MAX_EPOCHS epochs; for `tabular`, TABLE_MIN_STEPS and at least TABLE_EPOCHS
epochs where TABLE_EXAMPLES examples allow), and early stopping on `train.monitor` ends the run
once it stops improving; `final: best` (the default) keeps the best epoch. What a user sets is kept.

A validation split of fewer than MIN_VAL_ROWS rows (a 10% split of a 150-row table holds 2 to
15, of a 500-row table about 40) cannot pick an epoch: its loss can rise from the first epoch
while the model learns (iris, measured: seeds 1 and 2 stopped at epochs 12 and 11, keeping
epochs 2 and 1, test accuracy 0.784 and 0.804, where training through gave 0.941 for all three
seeds). Such a run trains its
sized epochs without early stopping and keeps the last one, unless the config says otherwise.
"""

from __future__ import annotations

import math

from dltool.config.models import EarlyStoppingSettings, TrainSettings

MIN_STEPS = 1000  # optimizer steps a run gets at least when its epochs are left to dltool
# The table model takes a step in milliseconds, and needs more steps to cut its columns at sharp thresholds as
# trees do: 5 stocks told apart by date and price scored 0.710 with 1,000 steps, 0.799 with 2,000 (3 seeds)
# against HistGradientBoosting's 0.806. 4,000 gave 0.817 there but 0.761 on Seattle's weather (0.770 with
# 2,000): the cosine rate is still high where early stopping ends a long run (docs/benchmarks.md, "Tables:
# dates as people write them"). Only where early stopping keeps the best epoch.
TABLE_MIN_STEPS = 2000
# A table of thousands of rows met the 10-epoch floor before its step count, and stopped while its validation loss
# still fell (storms, 13,649 train rows: 0.906 at 10 epochs, 0.939 at 40, 0.947 at 80, where early stopping ended
# at epoch 64; HistGradientBoosting 0.948). A table's floor is TABLE_EPOCHS as far as TABLE_EXAMPLES examples go:
# diamonds' 37,758 rows get 29 (R² 0.974 at 10, 0.979 at 29, HGB 0.980); at 52 early stopping ended the run at
# epoch 18 while the cosine rate was still high (0.958). A table of 110,000 rows or more keeps 10.
TABLE_EPOCHS, TABLE_EXAMPLES = 80, 1_100_000
MIN_EPOCHS, MAX_EPOCHS = 10, 300
MIN_BATCH, MAX_BATCH = 8, 64
MIN_PATIENCE = 10
# Fewer validation rows than this do not choose the epoch to keep. At 42 (R's CPS1985 wages, 369 train rows) the
# first epoch's loss was the least by chance (11.7 against 11.9-12.6 for the next ten, where the train loss fell from
# 30 to 17): R² 0.225, where training its sized epochs through gave 0.338 (ridge 0.330); mpg's 39 rows 0.864 -> 0.877
# and Carseats' 40 rows 0.805 -> 0.813 the same way (docs/benchmarks.md).
MIN_VAL_ROWS = 50


def sized_batch(train_rows: int) -> int:
    """The global batch for `train_rows` rows: a power of two near rows/32, from MIN_BATCH to MAX_BATCH."""
    return min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(1, train_rows // 32)))))


def sized(train: TrainSettings, train_rows: int, workers: int = 1, val_rows: int | None = None) -> TrainSettings:
    """`train` with the batch, the epochs and early stopping sized to `train_rows` where the config left them out.

    Early stopping is added only with sized epochs: a user who names the epochs gets them all.
    With sized epochs and 1 to MIN_VAL_ROWS - 1 `val_rows`, there is no early stopping and the
    last epoch is kept (`final: last`) unless the config sets `final`. The batch is rounded up to
    split evenly over `workers`.
    """
    update: dict = {}
    batch = train.global_batch_size or (train.per_worker_batch_size or 0) * workers
    if not batch:
        batch = -(-sized_batch(train_rows) // workers) * workers
        update["global_batch_size"] = batch
    if train.epochs is None:
        steps = train.steps_per_epoch or max(1, train_rows // batch)
        few = val_rows is not None and 0 < val_rows < MIN_VAL_ROWS
        table = train.model.kind == "builtin" and train.model.builtin == "tabular" and (val_rows or 0) >= MIN_VAL_ROWS
        floor = max(MIN_EPOCHS, min(TABLE_EPOCHS, TABLE_EXAMPLES // max(1, train_rows))) if table else MIN_EPOCHS
        epochs = min(MAX_EPOCHS, max(floor, math.ceil((TABLE_MIN_STEPS if table else MIN_STEPS) / steps)))
        update["epochs"] = epochs
        if train.early_stopping is None and not few:
            update["early_stopping"] = EarlyStoppingSettings(patience=max(MIN_PATIENCE, epochs // 10))
        if few and "final" not in train.model_fields_set:
            update["final"] = "last"
    return train.model_copy(update=update) if update else train
