"""The learning-rate schedule of `train.schedule`: constant, step or cosine, after a linear warm-up.

Imports Keras at module level (the class must subclass a Keras base), so import it lazily.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dltool")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at optimizer step `step` (0-based: update k uses the rate at step k).

    Warm-up rises linearly from 0 at step 0 to `peak` at `warmup_steps`. After that:
    constant keeps `peak`; step multiplies it by `factor` every `step_size` steps, counted
    from step 0 so boundaries fall on whole epochs as the user wrote them; cosine decays from
    `peak` at the end of warm-up to `min_fraction * peak` at `total_steps`, then stays there.
    """

    def __init__(
        self,
        peak: float,
        kind: str = "constant",
        warmup_steps: int = 0,
        total_steps: int = 1,
        step_size: int = 1,
        factor: float = 0.1,
        min_fraction: float = 0.0,
    ):
        if kind not in ("constant", "step", "cosine"):
            raise ValueError(f"unknown schedule kind {kind!r}")
        self.peak = float(peak)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.step_size = max(1, int(step_size))
        self.factor = float(factor)
        self.min_fraction = float(min_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.kind == "step":
            rate = self.peak * ops.power(self.factor, ops.floor(step / self.step_size))
        elif self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            rate = self.peak * (self.min_fraction + (1.0 - self.min_fraction) * cosine)
        else:
            rate = ops.full((), self.peak, dtype="float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, step / self.warmup_steps)
        return rate

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "kind": self.kind,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "step_size": self.step_size,
            "factor": self.factor,
            "min_fraction": self.min_fraction,
        }
