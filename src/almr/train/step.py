"""One optimizer step of a language-model stage, gradient accumulation in plain sight."""

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from almr.train.loss import target_count, training_loss
from almr.train.parallel import Distributed, all_reduce_sum


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean next-token loss over the global batch
    grad_norm: float  # before clipping
    lr: float  # the learning rate this step used
    aux_loss: float | None = None  # MoE: the weighted router loss, mean over the batch's tokens


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    dist_env: Distributed,
    precision: AbstractContextManager,
    grad_clip: float,
    after_backward: Callable[[], None] | None = None,
    loss_chunk_tokens: int = 0,
) -> StepResult:
    """Forward and backward over this process's micro-batches, then clip, step and zero.

    The loss is normalized by the labelled tokens of the whole global batch, counted before any
    backward, so that accumulation over micro-batches and processes gives the gradient of one
    large batch. A mixture-of-experts model's weighted router loss (`training_loss`) is added per
    micro-batch in proportion to its labelled tokens: the objective is the mean cross-entropy plus
    the token-weighted mean of the router loss, and the reported loss stays the cross-entropy.
    `loss_chunk_tokens` > 0 computes the loss chunked (`loss.training_loss`); the trainer passes 0
    under tensor parallelism.

    Under tensor parallelism the tp ranks of one replica run the same micro-batches and compute the
    same loss: token counts and losses are summed over the data-parallel group only."""
    device, group = dist_env.device, dist_env.dp_group
    local = sum(target_count(b["labels"]) for b in micro_batches)
    global_tokens = all_reduce_sum(torch.as_tensor(local, dtype=torch.float32, device=device), group)
    loss_sum = torch.zeros((), device=device)
    aux_sum: torch.Tensor | None = None
    for i, micro in enumerate(micro_batches):
        if isinstance(model, FSDPModule):
            model.set_requires_gradient_sync(i == len(micro_batches) - 1)  # reduce-scatter once per step
        input_ids = micro["input_ids"].to(device, non_blocking=True)
        labels = micro["labels"].to(device, non_blocking=True)
        loss, aux = training_loss(model, input_ids, labels, precision, loss_chunk_tokens)
        objective = loss
        if aux is not None:
            weighted = aux * target_count(labels)
            objective = loss + weighted
            aux_sum = weighted.detach() + (aux_sum if aux_sum is not None else 0.0)
        # FSDP averages gradients over the data-parallel replicas; their count turns that into a sum.
        (objective * (dist_env.dp_size / global_tokens)).backward()
        loss_sum += loss.detach()
    if after_backward is not None:  # e.g. keep frozen rows frozen (new_rows.zero_old_rows)
        after_backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    if isinstance(grad_norm, DTensor):
        grad_norm = grad_norm.full_tensor()
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    aux_mean = None if aux_sum is None else (all_reduce_sum(aux_sum, group) / global_tokens).item()
    return StepResult(loss=(all_reduce_sum(loss_sum, group) / global_tokens).item(), grad_norm=grad_norm.item(), lr=lr,
                      aux_loss=aux_mean)  # fmt: skip
