"""Tensor <-> Arrow encoding and the Parquet shard writer."""

from dltool.shards.codec import TensorSpec, decode_tensors, encode_tensors
from dltool.shards.writer import ShardWriter, shard_schema

__all__ = ["ShardWriter", "TensorSpec", "decode_tensors", "encode_tensors", "shard_schema"]
