"""Distributed training: model building, workers, checkpoints and the run launcher."""
