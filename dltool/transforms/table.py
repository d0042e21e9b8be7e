"""Fitted table preprocessing: imputation, category slots, scaling, applied to Arrow batches with numpy.

A table reader fits a `Preprocess` on the train split in one Spark aggregation; the shard
writer tasks apply it to each Arrow batch as it streams to Parquet, and predict applies the
training dataset's saved copy (`_preprocess.json`) to raw rows. One code path computes the
features in both cases, so a model sees at predict time exactly what it was trained on.

Feature layout: numeric columns (missing values filled), then each categorical column as
one-hot slots `col=value` in alphabetical order plus `col=<other>` (missing or unseen), or
as one slot holding the category index (`<other>` is the last index), then the vector
columns' values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

OTHER = "<other>"


@dataclass(frozen=True)
class Preprocess:
    numeric: dict[str, float]  # column -> the value that fills a missing one (train mean, median or mode)
    categorical: dict[str, list[str]]  # column -> its train vocabulary, sorted
    encoding: str  # onehot | index
    vectors: dict[str, int]  # column -> number of values
    labels: list[str] | None = None  # the class vocabulary (classification)
    scale: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]} per slot, when standardised
    version: int = 1
    names: list[str] = field(init=False)

    def __post_init__(self):
        names = list(self.numeric)
        for column, vocab in self.categorical.items():
            names += [f"{column}={v}" for v in vocab] + [f"{column}={OTHER}"] if self.encoding == "onehot" else [column]
        names += [f"{c}[{i}]" for c, n in self.vectors.items() for i in range(n)]
        object.__setattr__(self, "names", names)

    @property
    def width(self) -> int:
        return len(self.names)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("names")
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Preprocess":
        return cls(**{k: v for k, v in data.items() if k != "names"})

    def with_scale(self, moments: np.ndarray) -> "Preprocess":
        """This preprocessing, standardising each slot by the train moments [count, sum, sum of squares]."""
        count, total, squares = moments
        mean = total / np.maximum(count, 1)
        std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean * mean, 0.0))
        return Preprocess(**{**self.to_json(), "scale": {"mean": mean.tolist(), "std": std.tolist()}})

    def features(self, batch, scaled: bool = True) -> np.ndarray:
        """The [rows, width] float32 features of an Arrow batch holding the typed source columns."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = batch.num_rows
        out = np.zeros((rows, self.width), np.float32)
        at = 0
        for column, fill in self.numeric.items():
            out[:, at] = pc.fill_null(batch.column(column).cast(pa.float64()), fill).to_numpy(zero_copy_only=False)
            at += 1
        for column, vocab in self.categorical.items():
            index = pc.index_in(batch.column(column), value_set=pa.array(vocab, pa.string()))
            index = pc.fill_null(index, len(vocab)).to_numpy(zero_copy_only=False)
            if self.encoding == "onehot":
                out[np.arange(rows), at + index] = 1.0
                at += len(vocab) + 1
            else:
                out[:, at] = index
                at += 1
        for column, size in self.vectors.items():
            values = batch.column(column).combine_chunks() if hasattr(batch.column(column), "combine_chunks") else batch.column(column)
            flat = pc.list_flatten(values).cast(pa.float64()).to_numpy(zero_copy_only=False)
            out[:, at : at + size] = flat.reshape(rows, size)
            at += size
        if scaled and self.scale is not None:
            std = np.asarray(self.scale["std"])
            out = ((out - np.asarray(self.scale["mean"])) / np.where(std > 0, std, 1.0)).astype(np.float32)
        return out

    def label_index(self, column) -> np.ndarray:
        """Class indexes of a label column (every value is in the vocabulary: the fit saw all rows)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.index_in(column, value_set=pa.array(self.labels, pa.string())).to_numpy(zero_copy_only=False)


def moments(features: np.ndarray) -> np.ndarray:
    """[count, sum, sum of squares] per column, as float64: add them up across batches."""
    values = features.astype(np.float64)
    return np.stack([np.full(values.shape[1], values.shape[0], np.float64), values.sum(0), (values * values).sum(0)])
