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
    return training_loss(model, input_ids, labels, precision)[0]


def training_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    precision: AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed cross-entropy as `summed_loss`, the router's weighted auxiliary loss or None). A
    mixture-of-experts model whose config asks for router logits (`output_router_logits`, as
    Mixtral and Qwen-MoE train) returns a load-balancing `aux_loss`; it comes back multiplied by
    the config's `router_aux_loss_coef`, the term transformers adds to its own loss."""
    with precision or nullcontext():
        out = model(input_ids=input_ids, use_cache=False)
    summed = F.cross_entropy(
        out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    aux = getattr(out, "aux_loss", None)
    if aux is None:
        return summed, None
    return summed, getattr(model.config, "router_aux_loss_coef", 0.0) * aux.float()


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """How many positions of `labels` the loss counts."""
    return (labels != IGNORE_INDEX).sum()
