"""Phase one of a vocabulary extension (`cpt.train_new_rows_from`): only the embedding and output
rows of the new tokens learn; every other weight, and the old rows, stay exactly as they were.

The rest of the model is frozen (`requires_grad` off, so it has no gradient and no optimizer
state); the embedding and output matrices train, with the gradient of their old rows zeroed after
each backward (`zero_old_rows`). Adam's update of a row whose gradients were all zero is zero, and
the run's weight decay is off (decoupled decay would shrink the old rows), so the old rows come out
bit-identical. Phase two is an ordinary CPT run from this run's export."""

import math

import torch
from torch.distributed.tensor import DTensor

from almr.errors import ConfigError


def embedding_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The input and output embedding matrices (one when tied). Fetch them again after FSDP2 has
    sharded the model: it replaces every parameter with a sharded one."""
    matrices: list[torch.nn.Parameter] = []
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None and all(module.weight is not m for m in matrices):
            matrices.append(module.weight)
    return matrices


def train_only_new_rows(model: torch.nn.Module, first: int) -> None:
    """Freeze all but the embedding matrices (before sharding: FSDP2 keeps `requires_grad`)."""
    matrices = embedding_matrices(model)
    rows = matrices[0].shape[0]
    if not 0 < first < rows:
        raise ConfigError(
            f"cpt.train_new_rows_from={first}: the model has {rows} embedding rows, so the new tokens' rows must "
            f"start between 1 and {rows - 1}; use the first_new_id of the extension (vocab extend's extension.json)"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(any(parameter is m for m in matrices))


def zero_old_rows(matrices: list[torch.nn.Parameter], first: int) -> None:
    """Zero the gradient of rows < `first` of each matrix; a matrix sharded by rows (FSDP2's
    Shard(0), torch.chunk sizes) zeroes the part of those rows this process holds."""
    for matrix in matrices:
        grad = matrix.grad
        if grad is None:
            continue
        if isinstance(grad, DTensor):
            mesh = grad.device_mesh
            rows, world = grad.shape[0], mesh.size()
            offset = mesh.get_local_rank() * math.ceil(rows / world)
            local = grad.to_local()
            local[: max(0, min(first - offset, local.shape[0]))] = 0
        else:
            grad[:first] = 0
