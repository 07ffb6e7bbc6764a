"""The training objective: the summed next-token cross-entropy of a batch, one function for the
training step and for validation, so that the two can never disagree on what a loss is."""

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

# Positions whose label is this do not count (padding, masked prompt tokens).
IGNORE_INDEX = -100


def summed_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    precision: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Sum over the labelled positions of −log p(label). `labels` are already the next-token
    targets (no shift here). The forward runs under `precision` (autocast or nothing); the
    cross-entropy always in fp32, so bf16 logits lose no accuracy in the loss."""
    with precision or nullcontext():
        logits = model(input_ids=input_ids, use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """How many positions of `labels` the loss counts."""
    return (labels != IGNORE_INDEX).sum()
