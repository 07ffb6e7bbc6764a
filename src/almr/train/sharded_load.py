"""The model of a run under torchrun, built so that no process ever holds all of its weights.

The architecture is built on the `meta` device (shapes, no storage), sharded by the trainer's
`parallelize` (FSDP2, and whatever layout it applies), given storage for this process's shards
only (`to_empty`), and filled from the directory's safetensors files with DCP's Hugging Face
storage reader, which reads exactly the slice of each tensor that this process holds and converts
it to the fp32 master dtype in place. What a process allocates for weights is its share of the
model plus one slice in flight, instead of the whole model (torchtitan loads checkpoints the same
way; measured in benchmarks/bench_sharded_load.py).

What `to_empty` cannot give back is restored before any weight is read: the non-persistent
buffers (the rotary `inv_freq`), recomputed from the config by the model's own weight init, and
checked. One process, `cpt.random_init` and directories without safetensors files keep the full
build (`model.build_model`) and shard it afterwards:

- `random_init`: transformers draws every weight from the global RNG, tensor after tensor, so the
  one-process values of a shard exist only by drawing the whole tensor; drawing it per shard would
  change the initial weights with the process count. Random init is the demo's small-model path.
- `.bin` files: PyTorch pickles, which cannot be read a slice at a time; a warning names the fix.
- keys the files do not hold under the model's names (a checkpoint transformers converts while it
  loads): the full load does the conversion; a warning says so.
"""

import copy
import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from transformers import AutoModelForCausalLM

from almr.train.config import ModelConfig
from almr.train.model import (
    LoadedModel,
    build_model,
    load_tokenizer,
    model_kwargs,
    model_path,
    read_hf_config,
    refusing_unreadable_model,
    shape_mismatch,
    stored_dtype,
    vocab_size,
)
from almr.train.parallel import Distributed

# The trainer's wrapping of a built model: activation checkpointing, compile, TP, FSDP2 (parallel.py's
# `parallelize` with the run's settings). It receives the model and the process layout.
Shard = Callable[[torch.nn.Module, Distributed], torch.nn.Module]

META = torch.device("meta")


def build_parallel_model(
    config: ModelConfig, dist_env: Distributed, shard: Shard, *, random_init: bool = False
) -> LoadedModel:
    """The run's model and tokenizer, sharded by `shard`: loaded shard by shard under torchrun,
    built whole on one process, with random weights, or from a directory with no safetensors."""
    if dist_env.world_size > 1 and not random_init:
        folder = _weights_folder(config)
        if folder is not None:
            loaded = _load_sharded(config, folder, dist_env, shard)
            if loaded is not None:
                return loaded
    loaded = build_model(config, random_init=random_init)
    loaded.model = shard(loaded.model, dist_env)
    return loaded


def _weights_folder(config: ModelConfig) -> Path | None:
    """The local folder of the model's safetensors files, or None (with a warning for `.bin`-only
    folders) when the full load has to read it."""
    path = model_path(config)
    local = Path(path).expanduser()
    if not local.is_dir():
        local = _hub_snapshot(config) or local
    if not local.is_dir():
        return None
    if any(local.glob("*.safetensors")):
        return local
    if any(local.glob("*.bin")):
        warnings.warn(
            f"model.name_or_path={path} holds its weights as PyTorch .bin files, which cannot be read a shard at a "
            "time: every process loads the whole model before sharding. Save it once as safetensors "
            "(AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder): transformers writes "
            "safetensors, safe_serialization=True before transformers 5) to load each process's shard only",
            stacklevel=3,
        )
    return None


def _hub_snapshot(config: ModelConfig) -> Path | None:
    """The hub model's safetensors files in the local cache (downloaded once per node, under the hub's
    file locks; config and tokenizer come through transformers), or None when the hub cannot give
    them (the full load then says why)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            model_path(config), revision=config.revision, allow_patterns=["*.safetensors", "*.safetensors.index.json"]
        )
    except Exception:  # offline, unknown id, no access: the full load reports it with transformers' words
        return None
    return Path(folder)


def _load_sharded(config: ModelConfig, folder: Path, dist_env: Distributed, shard: Shard) -> LoadedModel | None:
    """Meta build, shard, allocate this process's part, fill it from `folder`'s safetensors; None
    (before anything is allocated) when the files lack some of the model's weights under its names
    or its buffers cannot be recomputed: the full load handles those."""
    path = model_path(config)
    hf_config = read_hf_config(config)
    rows, shipped = getattr(hf_config, "vocab_size", "?"), stored_dtype(hf_config)  # the build sets dtype to fp32
    with refusing_unreadable_model(path, rows):
        with META:
            model = AutoModelForCausalLM.from_config(hf_config, **model_kwargs(config))
        reader = HuggingFaceStorageReader(str(folder))
        stored = reader.read_metadata().state_dict_metadata
    tokenizer = load_tokenizer(config, vocab_size(model))
    names = _file_names(model, stored)
    if names is None or not _buffers_recomputable(model):
        return None
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if any(tuple(stored[file_name].size) != shapes[name] for name, file_name in names.items()):
        raise shape_mismatch(path, rows)
    # parallelize moves the model to dist_env.device before sharding; a meta model stays on meta until
    # to_empty gives it storage for its shards only
    model = shard(model, dataclasses.replace(dist_env, device=META))
    model.to_empty(device=dist_env.device)
    for owner in _buffer_owners(model):
        _recompute_buffers(model, owner)
    state = get_model_state_dict(model)  # this process's shards (DTensors), filled in place
    with refusing_unreadable_model(path, rows):
        try:
            dcp.load({file_name: state[name] for name, file_name in names.items()}, storage_reader=reader)
        except CheckpointException as err:  # a BaseException wrapping each rank's error: the first, as itself
            raise next(iter(err.failures.values()))[0] from None
    return LoadedModel(model, tokenizer, shipped)


def _file_names(model: torch.nn.Module, stored: dict[str, Any]) -> dict[str, str] | None:
    """The stored name of each of the model's weights (its own name, or without the base model's
    prefix as a bare `*Model` saves it); an output layer tied to the input embedding needs none.
    None, with a warning, when some weight is not stored under either name."""
    tied = _tied_names(model)
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    names: dict[str, str] = {}
    missing: list[str] = []
    for name in model.state_dict():
        bare = name.removeprefix(prefix)
        if name in stored or bare in stored:
            names[name] = name if name in stored else bare
        elif name not in tied:
            missing.append(name)
    if missing:
        warnings.warn(
            f"the safetensors files do not hold {len(missing)} of the model's weights under its names (first: "
            f"{missing[0]}); every process loads the whole model through transformers, which converts or "
            "initialises them. Save the model once with save_pretrained to load each process's shard only",
            stacklevel=4,
        )
        return None
    return names


def _tied_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of weights that are the same tensor as an earlier one (tied embeddings)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            tied.add(name)
        seen.setdefault(id(tensor), name)
    return tied


def _buffer_owners(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules holding buffers that no checkpoint stores (the rotary embedding's `inv_freq`)."""
    return [module for module in model.modules() if getattr(module, "_non_persistent_buffers_set", None)]


def _buffers_recomputable(model: torch.nn.Module) -> bool:
    """Whether the model's own init recomputes every non-persistent buffer: tried on a CPU copy of
    each (small) owner before anything is allocated for the model; warns when not."""
    for owner in _buffer_owners(model):
        trial = copy.deepcopy(owner).to_empty(device="cpu")
        if any(True for _ in owner.parameters(recurse=False)) or _recompute_buffers(model, trial):
            warnings.warn(
                f"{type(owner).__name__} holds buffers that a sharded load cannot recompute; every process loads "
                "the whole model through transformers",
                stacklevel=4,
            )
            return False
    return True


def _recompute_buffers(model: torch.nn.Module, owner: torch.nn.Module) -> list[str]:
    """Fill `owner`'s non-persistent buffers with what `from_pretrained` puts there: the model's own
    weight init computes them from the config. NaN first, so one the init leaves is caught (returned)
    instead of trained on with whatever memory `to_empty` got."""
    names = [n for n in owner._non_persistent_buffers_set if owner._buffers.get(n) is not None]
    with torch.no_grad():
        for name in names:
            if owner._buffers[name].is_floating_point():
                owner._buffers[name].fill_(float("nan"))
        model._init_weights(owner)  # type: ignore[operator]
    # an integer buffer cannot be marked: whether the init sets it is unknown, so it counts as left
    return [n for n in names if not owner._buffers[n].is_floating_point() or bool(owner._buffers[n].isnan().any())]
