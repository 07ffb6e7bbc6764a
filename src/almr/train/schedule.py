"""The learning-rate schedule as a pure function of the optimizer step.

Steps are 0-based: step s is the (s+1)-th optimizer update of a run of `total_steps`.

- warmup: steps 0 … W−1 rise linearly to the peak, lr·(s+1)/W (step W−1 is at the peak; no
  step is wasted at lr 0);
- linear / cosine: from step W (at the peak) to the last step S−1 (at min_lr = min_lr_ratio·lr),
  progress p = (s−W)/(S−W−1), factor 1−p or ½(1+cos πp);
- wsd (warmup-stable-decay): the peak until the last D = round(decay_fraction·S) steps (at least 1),
  then a linear decay whose last step S−1 is at min_lr; the decay never starts inside the warmup;
- a run with a single step after warmup keeps that step at the peak.
"""

import math

from almr.errors import ConfigError
from almr.train.config import ScheduleConfig


def lr_factor(step: int, total_steps: int, schedule: ScheduleConfig) -> float:
    """The learning rate at `step` as a fraction of the peak (1.0 = peak)."""
    if total_steps < 1:
        raise ConfigError(f"a schedule needs at least one step, got total_steps={total_steps}")
    warmup = schedule.warmup_steps
    if warmup >= total_steps:
        raise ConfigError(
            f"cpt.schedule.warmup_steps={warmup} leaves no step after warmup in a run of {total_steps} steps; "
            f"set warmup_steps below {total_steps}"
        )
    floor = schedule.min_lr_ratio
    step = min(max(step, 0), total_steps - 1)
    if step < warmup:
        return (step + 1) / warmup
    if total_steps - warmup == 1:
        return 1.0  # a single step after warmup stays at the peak, whatever the decay
    if schedule.kind == "wsd":
        decay = max(1, round(schedule.decay_fraction * total_steps))
        start = max(warmup, total_steps - decay)
        if step < start:
            return 1.0
        progress = (step - start + 1) / (total_steps - start)
        return floor + (1.0 - floor) * (1.0 - progress)
    span = total_steps - warmup - 1
    progress = (step - warmup) / span if span > 0 else 0.0
    shape = 1.0 - progress if schedule.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1.0 - floor) * shape


def lr_at(step: int, total_steps: int, peak_lr: float, schedule: ScheduleConfig) -> float:
    """The learning rate at `step`."""
    return peak_lr * lr_factor(step, total_steps, schedule)
