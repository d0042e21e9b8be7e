"""Tensor <-> Arrow encoding (codec.py), the Parquet shard writer (writer.py) and the feed into TensorFlow (feed.py).

The package imports none of them: storage.manifest needs the codec without the writer, which needs storage.
"""
