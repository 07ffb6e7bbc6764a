"""Processes, devices and how a built model is wrapped for them. The model code never looks at
the world size: `parallelize` is applied from outside, after the model is built.

Under torchrun (WORLD_SIZE > 1) the processes join one process group (NCCL on GPUs, gloo on CPUs)
and form a 1-D data-parallel device mesh; FSDP2 shards every decoder layer and then the root.
Several nodes are the same code: torchrun's rendezvous provides the environment.
"""

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard

from almr.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh | None  # None: one process, nothing is sharded

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Distributed:
    """Join the torchrun process group when there is one; pick the device of this process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("cpt.device=cuda but no CUDA device is visible; set cpt.device=cpu or auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    mesh = None
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
        mesh = init_device_mesh(dev.type, (world_size,), mesh_dim_names=("dp",))
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, mesh=mesh)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a Hugging Face model: the classes it names in `_no_split_modules`."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} names no decoder-layer class in _no_split_modules, so it cannot be "
            "sharded or checkpointed per layer; use a transformers causal LM (Llama, Qwen, Mistral, ...)"
        )
    return layers


def parallelize(
    model: torch.nn.Module, dist_env: Distributed, *, gradient_checkpointing: bool, compile: bool
) -> torch.nn.Module:
    """Activation checkpointing, compile, then FSDP2, in that fixed order (torchtitan's)."""
    model.to(dist_env.device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile:
        for layer in decoder_layers(model):
            layer.compile()  # in place: parameter names, and so checkpoints, stay unchanged
    if dist_env.mesh is not None:
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=dist_env.mesh)
        fully_shard(model, mesh=dist_env.mesh)
    return model


def autocast_for(dtype: str, device: torch.device) -> AbstractContextManager:
    """The precision context of the forward pass: bf16 autocast over fp32 master weights for
    `model.dtype: bfloat16`, nothing for float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the data-parallel processes (a no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
