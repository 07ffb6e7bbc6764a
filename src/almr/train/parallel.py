"""Processes, devices and how a built model is wrapped for them. The model code never looks at
the world size: `parallelize` is applied from outside, after the model is built.

Under torchrun (WORLD_SIZE > 1) the processes join one process group (NCCL on GPUs, gloo on CPUs,
with `parallel.timeout_minutes` as the collective timeout) and form a 2-D device mesh
("dp", "tp") = (WORLD_SIZE / tensor_parallel, tensor_parallel), torchtitan's layout: ranks
dp·tp … dp·tp + tp − 1 hold one copy of the model split tensor-parallel, and FSDP2 shards each
such copy over the "dp" dimension. All tp ranks of one dp group read the same batch.

`parallelize` applies, in torchtitan's order: the tensor-parallel plan (`tensor_parallel_plan`:
Megatron column/row splits of embedding, attention, MLP and output layer), activation
checkpointing, per-layer `torch.compile`, then FSDP2 (`fully_shard` on every decoder layer, then
the root) with a bf16 `MixedPrecisionPolicy` when the run trains in bfloat16. Several nodes are
the same code: torchrun's rendezvous provides the environment.
"""

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, distribute_module
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from almr.errors import ConfigError
from almr.train.config import ParallelConfig

# model_type (config.json) of the decoder families whose module names the tensor-parallel plan knows:
# model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
# mlp.{gate,up,down}_proj}, model.norm, lm_head.
TENSOR_PARALLEL_FAMILIES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh | None  # ("dp", "tp") under torchrun; None: one process, nothing is sharded
    tensor_parallel: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_size(self) -> int:
        """Data-parallel replicas: how many different batches one step reads at a time."""
        return self.world_size // self.tensor_parallel

    @property
    def dp_rank(self) -> int:
        """Which of them this process belongs to (the mesh is row-major: rank = dp_rank·tp + tp_rank)."""
        return self.rank // self.tensor_parallel

    @property
    def dp_mesh(self) -> DeviceMesh | None:
        return None if self.mesh is None else self.mesh["dp"]

    @property
    def tp_mesh(self) -> DeviceMesh | None:
        return None if self.mesh is None or self.tensor_parallel == 1 else self.mesh["tp"]

    @property
    def dp_group(self) -> dist.ProcessGroup | None:
        """The processes whose sums make a global-batch total (each tp group counted once)."""
        return None if self.mesh is None else self.mesh.get_group("dp")


_current: Distributed | None = None  # the layout an earlier init_distributed of this process set up


def init_distributed(device: str = "auto", parallel: ParallelConfig | None = None) -> Distributed:
    """Join the torchrun process group when there is one; pick the device of this process; lay the
    processes out as `parallel` says (tensor-parallel degree, timeout). Called again in the same
    process without `parallel` (the trainer after its stage), it returns the layout already set up."""
    global _current
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if parallel is None and _current is not None and dist.is_initialized():
        return _current
    parallel = parallel or ParallelConfig()
    check_world(parallel, world_size)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("cpt.device=cuda but no CUDA device is visible; set cpt.device=cpu or auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    mesh = None
    tp = parallel.tensor_parallel
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None,
                                    timeout=timedelta(minutes=parallel.timeout_minutes))  # fmt: skip
        mesh = init_device_mesh(dev.type, (world_size // tp, tp), mesh_dim_names=("dp", "tp"))
    _current = Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, mesh=mesh,
                           tensor_parallel=tp)  # fmt: skip
    return _current


def check_world(parallel: ParallelConfig, world_size: int) -> None:
    """Refuse a process count other than the multi-GPU layout the config declares, before any model
    is read (a config that declares one GPU, the default, runs on any number of processes). The
    declared count is a multiple of tensor_parallel (ParallelConfig checks it), so every count that
    passes splits into whole tensor-parallel groups."""
    started = f"torchrun started {world_size} (WORLD_SIZE)" if world_size > 1 else "this is one process (no torchrun)"
    declared = parallel.world_size
    if declared > 1 and declared != world_size:
        raise ConfigError(
            f"parallel.nodes × parallel.gpus_per_node = {parallel.nodes} × {parallel.gpus_per_node} = {declared} "
            f"processes, but {started}; start {declared} (torchrun --nnodes {parallel.nodes} --nproc_per_node "
            f"{parallel.gpus_per_node}) or set parallel.nodes and parallel.gpus_per_node to the GPUs you have"
        )


def check_tensor_parallel(config: Any, tensor_parallel: int) -> None:
    """Refuse a Hugging Face model config that `tensor_parallel` ranks cannot split: a family without
    a plan, or attention heads, key/value heads or the MLP width not divisible by the degree. Needs
    only config.json, so it runs before any weights are read."""
    if tensor_parallel == 1:
        return
    family = getattr(config, "model_type", None)
    if family not in TENSOR_PARALLEL_FAMILIES:
        raise ConfigError(
            f"parallel.tensor_parallel={tensor_parallel}: no tensor-parallel plan for model_type {family!r}; "
            f"supported families: {', '.join(TENSOR_PARALLEL_FAMILIES)}. Set parallel.tensor_parallel=1 (FSDP "
            "alone shards any model)"
        )
    for key in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        value = getattr(config, key, None)
        if value is not None and value % tensor_parallel:
            raise ConfigError(
                f"parallel.tensor_parallel={tensor_parallel} does not divide the model's {key}={value} "
                f"(config.json); set parallel.tensor_parallel to a divisor of {value}"
            )


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


class ReplicatedParallel(ParallelStyle):
    """A module every tp rank runs whole on the whole sequence (the RMSNorms): its parameters become
    Replicate DTensors on the tp mesh, so that all parameters share the 2-D mesh (one gradient-norm
    clip, one DCP layout); inputs and outputs stay plain tensors. torchtitan's `NoParallel`."""

    def _apply(self, module: torch.nn.Module, device_mesh: DeviceMesh) -> torch.nn.Module:
        return distribute_module(module, device_mesh, input_fn=self._inputs, output_fn=self._outputs)

    @staticmethod
    def _inputs(module: torch.nn.Module, inputs: tuple[Any, ...], mesh: DeviceMesh) -> tuple[Any, ...]:
        return tuple(DTensor.from_local(x, mesh, (Replicate(),), run_check=False)
                     if isinstance(x, torch.Tensor) and not isinstance(x, DTensor) else x for x in inputs)  # fmt: skip

    @staticmethod
    def _outputs(module: torch.nn.Module, outputs: Any, mesh: DeviceMesh) -> Any:
        return outputs.to_local() if isinstance(outputs, DTensor) else outputs


def tensor_parallel_plan(model: torch.nn.Module) -> dict[str, ParallelStyle]:
    """torchtitan's Llama plan in Hugging Face module names, without sequence parallelism. Attention
    and MLP are Megatron splits (q/k/v and gate/up by output column, o and down by input row, so
    each rank holds whole heads and one all-reduce ends each block); the embedding is split by
    vocabulary row, the output layer by vocabulary column and returns whole logits (every tp rank
    computes the same loss). The RMSNorms run replicated, not sequence-parallel: a Hugging Face model
    derives position ids and the causal mask from the embedding output's shape, and DTensor's
    sequence split needs lengths divisible by the degree, which log-likelihood scoring and decoding
    (one token a step) do not have; the cost is the norms' activations held whole on every tp rank."""
    layers = decoder_layers(model)
    plan: dict[str, ParallelStyle] = {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
        "model.norm": ReplicatedParallel(),
        "lm_head": ColwiseParallel(output_layouts=Replicate()),
    }
    names = {id(module): name for name, module in model.named_modules()}
    for layer in layers:
        prefix = names[id(layer)]
        plan.update({
            f"{prefix}.input_layernorm": ReplicatedParallel(),
            f"{prefix}.self_attn.q_proj": ColwiseParallel(),
            f"{prefix}.self_attn.k_proj": ColwiseParallel(),
            f"{prefix}.self_attn.v_proj": ColwiseParallel(),
            f"{prefix}.self_attn.o_proj": RowwiseParallel(),
            f"{prefix}.post_attention_layernorm": ReplicatedParallel(),
            f"{prefix}.mlp.gate_proj": ColwiseParallel(),
            f"{prefix}.mlp.up_proj": ColwiseParallel(),
            f"{prefix}.mlp.down_proj": RowwiseParallel(),
        })  # fmt: skip
    return plan


def apply_tensor_parallel(model: torch.nn.Module, tp_mesh: DeviceMesh) -> None:
    """Split `model` over `tp_mesh` in place. The attention modules read their head counts from the
    local projection widths (`view(*shape, -1, head_dim)`), so only the GQA ratio, which the split
    keeps, is read from the config. Tied input/output embeddings stay tied: both are split by
    vocabulary row (Shard(0)), so the output layer reuses the embedding's shard."""
    check_tensor_parallel(model.config, tp_mesh.size())
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    parallelize_module(model, tp_mesh, tensor_parallel_plan(model))
    if tied:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight


def parallelize(
    model: torch.nn.Module, dist_env: Distributed, *, gradient_checkpointing: bool, compile: bool,
    dtype: str = "float32",
) -> torch.nn.Module:  # fmt: skip
    """Tensor parallelism, activation checkpointing, compile, then FSDP2, in that fixed order
    (torchtitan's). `dtype` bfloat16: FSDP gathers the parameters in bf16 and reduces gradients in
    fp32 over fp32 master shards (`MixedPrecisionPolicy`); one process uses `autocast_for` instead."""
    model.to(dist_env.device)
    if dist_env.tp_mesh is not None:
        apply_tensor_parallel(model, dist_env.tp_mesh)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile:
        for layer in decoder_layers(model):
            layer.compile()  # in place: parameter names, and so checkpoints, stay unchanged
    if dist_env.dp_mesh is not None:
        policy = mixed_precision_policy(dtype)
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=dist_env.dp_mesh, mp_policy=policy)
        fully_shard(model, mesh=dist_env.dp_mesh, mp_policy=policy)
    return model


def mixed_precision_policy(dtype: str) -> MixedPrecisionPolicy:
    """bf16 compute over fp32 master shards: each layer's weights are all-gathered already in bf16
    (half the traffic) and freed after use, gradients reduce-scattered in fp32. Under autocast the
    fp32 weights were gathered whole and autograd kept autocast's bf16 copy of every layer until
    backward: a full bf16 model on every GPU, whatever the number of GPUs."""
    if dtype == "bfloat16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def autocast_for(dtype: str, dist_env: Distributed) -> AbstractContextManager:
    """The precision context of the forward pass. bf16 autocast over fp32 weights for one process
    (nothing is sharded there, so autocast's bf16 copy of the weights costs what one bf16 model
    costs, next to the fp32 weights, gradients and Adam moments it holds anyway); nothing under
    FSDP, whose mixed-precision policy (`parallelize`) casts, and nothing for float32."""
    if dtype != "bfloat16" or dist_env.mesh is not None:
        return nullcontext()
    return torch.autocast(dist_env.device.type, dtype=torch.bfloat16)


def all_reduce_sum(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sum over the processes of `group` (default: all; `Distributed.dp_group` for a total over the
    global batch, each tensor-parallel group counted once); a no-op on one process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def data_parallel_rank() -> tuple[int, int, dist.ProcessGroup | None]:
    """(dp_rank, dp_size, dp_group) of this process: how evaluation splits its work so that the
    ranks of one tensor-parallel group run the same inputs; (rank, world, None) when no layout was
    set up by `init_distributed`, (0, 1, None) in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1, None
    if _current is None or _current.mesh is None:
        return dist.get_rank(), dist.get_world_size(), None
    return _current.dp_rank, _current.dp_size, _current.dp_group


def close_distributed() -> None:
    global _current
    _current = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
