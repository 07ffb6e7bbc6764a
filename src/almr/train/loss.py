"""The training objective: the summed next-token cross-entropy of a batch, one function for the
training step and for validation, so that the two can never disagree on what a loss is."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F

from almr.train.chunked_ce import linear_cross_entropy

# Positions whose label is this do not count (padding, masked prompt tokens).
IGNORE_INDEX = -100

# Config fields of architectures that transform the logits after the output projection (soft-capping,
# scaling): the chunked loss, which computes the softmax of the plain projection, does not apply to them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")


def summed_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    precision: AbstractContextManager | None = None,
    chunk_tokens: int = 0,
) -> torch.Tensor:
    """Sum over the labelled positions of −log p(label). `labels` are already the next-token
    targets (no shift here). The forward runs under `precision` (autocast or nothing); the
    cross-entropy always in fp32, so bf16 logits lose no accuracy in the loss."""
    return training_loss(model, input_ids, labels, precision, chunk_tokens)[0]


def training_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    precision: AbstractContextManager | None = None,
    chunk_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed cross-entropy as `summed_loss`, the router's weighted auxiliary loss or None). A
    mixture-of-experts model whose config asks for router logits (`output_router_logits`, as
    Mixtral and Qwen-MoE train) returns a load-balancing `aux_loss`; it comes back multiplied by
    the config's `router_aux_loss_coef`, the term transformers adds to its own loss.

    With `chunk_tokens` > 0 the output projection and the cross-entropy are one chunked step
    (`chunked_ce.linear_cross_entropy`): the full logits are never materialised. It runs inside the
    model's own forward, in place of its output layer, so that FSDP's hooks gather that layer's
    weight as they do for the plain path; `chunked_loss_unsupported` names the models it refuses."""
    head = model.get_output_embeddings() if chunk_tokens else None
    with precision or nullcontext(), _output_layer_computes_loss(head, labels, chunk_tokens):
        out = model(input_ids=input_ids, use_cache=False)
    if head is not None:
        summed = out.logits
        if summed.ndim != 0:
            raise RuntimeError(
                f"{type(model).__name__} did not call its output layer as the chunked loss expects; set "
                "cpt.loss_chunk_tokens=0"
            )
    else:
        summed = F.cross_entropy(
            out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    aux = getattr(out, "aux_loss", None)
    if aux is None:
        return summed, None
    return summed, getattr(model.config, "router_aux_loss_coef", 0.0) * aux.float()


def chunked_loss_unsupported(model: torch.nn.Module) -> str | None:
    """Why the chunked loss cannot replace this model's output layer (None: it can): the output
    layer must be a bias-free Linear whose logits the model returns unchanged."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return f"its output layer is {type(head).__name__}, not a Linear"
    if head.bias is not None:
        return "its output layer has a bias"
    config = getattr(model, "config", None)
    for key in _LOGIT_TRANSFORMS:
        value = getattr(config, key, None)
        if value not in (None, 1, 1.0):
            return f"its config transforms the logits after the output layer ({key}={value})"
    return None


@contextmanager
def _output_layer_computes_loss(head: torch.nn.Module | None, labels: torch.Tensor, chunk: int) -> Iterator[None]:
    """While the block runs, `head` (the model's output Linear) returns the summed loss of its
    input hidden states against `labels` instead of logits."""
    if head is None:
        yield
        return

    def loss_instead_of_logits(hidden: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(hidden, head.weight, labels, chunk, IGNORE_INDEX)

    head.forward = loss_instead_of_logits
    try:
        yield
    finally:
        del head.forward


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """How many positions of `labels` the loss counts."""
    return (labels != IGNORE_INDEX).sum()
