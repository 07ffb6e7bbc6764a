"""Checkpoints: a dict of objects that keep state, saved and loaded with torch.distributed.checkpoint
(one process or many), plus a Hugging Face export. Nothing here knows what model is trained.

A checkpoint is a folder `checkpoints/step_00000123/` holding
  state/      torch.distributed.checkpoint files (model, optimizer, schedule, loader, train state, RNG)
  hf/         safetensors + config.json + tokenizer: loads with transformers and vLLM as is
  config.yaml the resolved config of the run
  complete    written last; a folder without it is not a checkpoint.
It is written as `step_00000123.tmp/`, synced to disk, marked complete and renamed, so a crash at any
moment leaves either the whole checkpoint or none; the previous one stays usable. Old checkpoints
are pruned by renaming them to `step_N.deleting/` (atomic) before deleting them; `recover()`, run
when a run resumes, removes whatever a crash left (`.tmp`, `.deleting`, a folder without
`complete`) and prunes again, so a kill at any moment leaves no orphan behind.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from almr.durable import atomic_write_text, fsync_dir, fsync_tree
from almr.errors import AlmrError

COMPLETE = "complete"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class ModelAndOptimizer(Stateful):
    """Model and optimizer state in the layout torch.distributed.checkpoint reshards: fully
    qualified parameter names, sharded tensors stay sharded (FSDP2) and plain ones stay plain."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optim_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_state_dict(
            self.model, self.optimizer, model_state_dict=state_dict["model"], optim_state_dict=state_dict["optim"]
        )


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


class Checkpointer:
    """Writes, finds, loads and prunes the checkpoints under `root`. Every rank calls `save` and
    `load` (they are collective); rank 0 alone writes the small files, renames and deletes."""

    def __init__(self, root: Path, keep_last: int, rank: int = 0, every_steps: int = 0) -> None:
        self.root = Path(root)
        self.keep_last = keep_last
        self.is_writer = rank == 0
        self.every_steps = every_steps

    def should_save(self, step: int, last_step: int) -> bool:
        """Every `every_steps` steps (0: never in between) and always after the last one."""
        return step == last_step or bool(self.every_steps and step % self.every_steps == 0)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / COMPLETE).is_file():
                found.append((int(match.group(1)), child))
        return [path for _, path in sorted(found)]

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any], write_files: Callable[[Path], None], meta: dict[str, Any]) -> Path:
        """Save `state` (objects with state_dict/load_state_dict, or plain values) for `step`;
        `write_files(folder)` adds the export files (called on every rank: gathering is collective)."""
        final = self.root / step_dir_name(step)
        tmp = final.with_name(final.name + ".tmp")
        try:
            if self.is_writer:
                self.root.mkdir(parents=True, exist_ok=True)
                for stale in self.root.glob("step_*.tmp"):
                    shutil.rmtree(stale, ignore_errors=True)  # left by a run that died mid-write
                tmp.mkdir()
            _barrier()
            with _quiet_single_process():
                dcp.save(state, checkpoint_id=str(tmp / "state"), no_dist=not _distributed())
            write_files(tmp)
            if self.is_writer:
                fsync_tree(tmp)
                atomic_write_text(tmp / COMPLETE, json.dumps({"step": step, **meta}, indent=1) + "\n")
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                fsync_dir(self.root)
            _barrier()
        except OSError as err:
            if self.is_writer:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            why = "the disk is full" if err.errno == errno.ENOSPC else str(err)
            keep = f"the previous checkpoint {previous} is complete and usable"
            if previous is None:
                keep = "no earlier checkpoint exists"
            raise AlmrError(
                f"writing the checkpoint of step {step} under {self.root} failed: {why}. The partial write was "
                f"removed; {keep}. Free space (or lower cpt.checkpoint.keep_last) and continue with --resume"
            ) from err
        return final

    def load(self, path: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load the checkpoint at `path` into `state` in place; returns its `complete` metadata."""
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=str(Path(path) / "state"), no_dist=not _distributed())
        return read_meta(path)

    def prune(self) -> None:
        """Delete all but the newest `keep_last` complete checkpoints (rank 0 alone). Each is first
        renamed out of the `step_N` namespace, so a crash mid-delete leaves a `.deleting` folder
        that `recover` removes, never a half-deleted checkpoint."""
        if not self.is_writer:
            return
        for old in self.complete()[: -self.keep_last]:
            doomed = old.with_name(old.name + ".deleting")
            os.replace(old, doomed)
            fsync_dir(self.root)
            shutil.rmtree(doomed)

    def recover(self) -> None:
        """Remove what a crash left under `root` (unfinished `.tmp` writes, interrupted `.deleting`
        prunes, step folders without `complete`), then prune to `keep_last` again (rank 0 alone)."""
        if not self.is_writer or not self.root.is_dir():
            return
        for child in self.root.iterdir():
            leftover = child.name.endswith((".tmp", ".deleting")) and child.name.startswith("step_")
            unmarked = _STEP_DIR.match(child.name) is not None and not (child / COMPLETE).is_file()
            if child.is_dir() and (leftover or unmarked):
                shutil.rmtree(child, ignore_errors=True)
        self.prune()


def read_meta(path: Path) -> dict[str, Any]:
    """The `complete` metadata of the checkpoint at `path`: step, tokens, and what the run saved with it."""
    return json.loads((Path(path) / COMPLETE).read_text(encoding="utf-8"))


def export_hf(
    model: torch.nn.Module,
    tokenizer: Any,
    folder: Path,
    is_writer: bool,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str = "5GB",
) -> None:
    """A Hugging Face directory `folder/hf` (safetensors weights in `dtype`, sharded with an index
    above `max_shard_size`, config, generation config, tokenizer), as `save_pretrained` writes it.
    Tied weights are saved once (under the first name, as transformers loads them), the model's
    config as it came (its `dtype` set to the weights'), and every file readable as the umask
    allows (not 0600). Called on every rank (gathering sharded weights is collective).

    Weights are streamed (`_export_streamed`): one tensor gathered at a time, and each process
    keeps and writes only the safetensors files assigned to it, so no process holds more than one
    file's weights and the files are written in parallel. A model whose checkpoint format
    transformers converts on save (fused mixture-of-experts weights) or that ships its own code
    goes through `save_pretrained` on the full state dict, gathered on rank 0 (`_export_gathered`)."""
    state = get_model_state_dict(model)  # sharded tensors stay sharded (DTensor): nothing is gathered here
    skip = tied_aliases(model) | set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    names = _saved_names(model, {key: state[key] for key in state if key not in skip}, dtype)
    if names is not None:
        _export_streamed(model, tokenizer, folder / "hf", state, names, is_writer, dtype, max_shard_size)
    else:
        del state
        _export_gathered(model, tokenizer, folder, is_writer, dtype=dtype, max_shard_size=max_shard_size)


def _saved_names(model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> list[str] | None:
    """The names of `state` in the order `save_pretrained` writes them, when it writes each tensor
    as it is (None when it would rename, fuse or split some: it reverts the weight conversions
    transformers applies on load, such as fused experts; tried here on meta tensors, at no cost)."""
    from transformers.core_model_loading import revert_weight_conversion

    if getattr(model, "_hf_peft_config_loaded", False) or getattr(type(model), "is_remote_code", lambda: True)():
        return None
    meta = {key: torch.empty(value.shape, dtype=dtype, device="meta") for key, value in state.items()}
    try:
        reverted = revert_weight_conversion(model, dict(meta))
    except Exception:  # any conversion that cannot run on meta tensors: save_pretrained does it
        return None
    if set(reverted) != set(meta) or any(reverted[key].shape != meta[key].shape for key in meta):
        return None
    return list(reverted)  # a model loaded by from_pretrained is saved in natural key order


def _export_streamed(
    model: torch.nn.Module, tokenizer: Any, out: Path, state: dict[str, torch.Tensor], names: list[str],
    is_writer: bool, dtype: torch.dtype, max_shard_size: str,
) -> None:  # fmt: skip
    """The files `save_pretrained` writes (the same shards, names, index and bytes), written in
    rounds of one file per process: in each round every process takes part in gathering each
    tensor of the round's files (a collective), keeps in `dtype` on the host only those of its own
    file, writes and fsyncs it; then rank 0 writes the index, config and tokenizer."""
    from huggingface_hub import split_state_dict_into_shards_factory
    from safetensors.torch import save_file
    from torch.distributed.tensor import DTensor

    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    meta = {key: torch.empty(state[key].shape, dtype=dtype, device="meta") for key in names}
    split = split_state_dict_into_shards_factory(
        meta, get_storage_size=lambda t: t.numel() * t.element_size(), filename_pattern="model{suffix}.safetensors",
        max_shard_size=max_shard_size,
    )  # fmt: skip
    del meta
    files = list(split.filename_to_tensors.items())
    if is_writer:
        out.mkdir(parents=True, exist_ok=True)
    _barrier()
    for first in range(0, len(files), world):
        mine: dict[str, torch.Tensor] = {}
        own = first + rank
        for i, (_, keys) in enumerate(files[first : first + world], start=first):
            for key in keys:
                value = state[key].detach()
                full = value.full_tensor() if isinstance(value, DTensor) else value
                if i == own:  # converted on the device, then copied: a process holds its own file only
                    mine[key] = full.to(dtype).cpu().contiguous()
                del full
        if mine:
            path = out / files[own][0]
            save_file(mine, str(path), metadata={"format": "pt"})
            del mine
            with path.open("rb") as written:
                os.fsync(written.fileno())
    _barrier()  # every file is in place before rank 0 lists and marks them
    if not is_writer:
        return
    if split.is_sharded:
        index = {"metadata": {"total_parameters": model.num_parameters(), **split.metadata},
                 "weight_map": split.tensor_to_filename}  # fmt: skip
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config = getattr(model, "config", None)
    if config is not None:
        # what save_pretrained records: the architecture, without FSDP2's "FSDP" class prefix
        config.architectures = [type(model).__name__.removeprefix("FSDP")]
        config.save_pretrained(out)
        if model.can_generate():
            model.generation_config.save_pretrained(out)
    _finish_export(out, tokenizer, dtype)


def _export_gathered(
    model: torch.nn.Module, tokenizer: Any, folder: Path, is_writer: bool, *, dtype: torch.dtype, max_shard_size: str
) -> None:
    """`save_pretrained` on the full state dict, gathered from the shards on every rank and
    written by rank 0 alone (which holds the whole model on the host, plus its copy in `dtype`)."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_writer:
        return
    # get_model_state_dict hands out the live tensors when nothing is sharded: the copy in `dtype`
    # keeps saving (which may make weights contiguous) away from training.
    aliases = tied_aliases(model)
    full = {key: value.detach().to(dtype, copy=True) for key, value in full.items() if key not in aliases}
    from transformers.utils import logging as hf_logging

    out = folder / "hf"
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "writing shards" bar per checkpoint would break the run's own bar
    config = getattr(model, "config", None)
    config_dtype = getattr(config, "dtype", None)
    try:
        model.save_pretrained(out, state_dict=full, safe_serialization=True, max_shard_size=max_shard_size)
    finally:
        if config is not None:
            config.dtype = config_dtype  # save_pretrained sets the live config's dtype to the parameters'
        if shown:
            hf_logging.enable_progress_bar()
    _finish_export(out, tokenizer, dtype)


def _finish_export(out: Path, tokenizer: Any, dtype: torch.dtype) -> None:
    """config.json's dtype set to the weights', the tokenizer, and files readable by others (rank 0)."""
    config_file = out / "config.json"
    if config_file.is_file():
        written = json.loads(config_file.read_text(encoding="utf-8"))
        written["dtype"] = str(dtype).removeprefix("torch.")
        config_file.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    readable_by_others(out)


def tied_aliases(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier-named one (a tied output head):
    saved once, under the first name."""
    seen: dict[int, str] = {}
    aliases = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(name)
        else:
            seen[id(param)] = name
    return aliases


def readable_by_others(folder: Path) -> None:
    """Give every file under `folder` the mode a plain `open` would (0666 less the umask): some
    writers (safetensors) create 0600 files, which another user's serving engine cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    # DCP warns that one process "assumes the intent" of a single-process save: it is the intent.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()
