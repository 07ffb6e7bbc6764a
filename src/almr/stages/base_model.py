"""The `base` stage (`almr world pretrain`): the world's base model, trained from random
initialization by the CPT trainer on a mostly-English mixture (`base`: 95% English, math and
code, 5% Chinese by default), so that it plays Llama-3's part: good at English, weak at Chinese.

It is an ordinary CPT run — the world's corpora tokenized into shards by `almr.data`, a
mixture plan, the CPT stage (`almr.stages.cpt.run_cpt`) — whose config this module writes from the world
directory. The run folder keeps everything a CPT run keeps; the base model is the Hugging
Face directory (`hf/`) of its final checkpoint. Running it again finds that checkpoint and does
nothing; an interrupted run resumes.
"""

import json
from pathlib import Path

from almr.config import AlmrConfig
from almr.data.config import MixtureConfig
from almr.data.tokenize import tokenize_sources
from almr.stages.cpt import run_cpt
from almr.train.checkpoint import COMPLETE, Checkpointer
from almr.train.config import CptConfig, ModelConfig, ProbeConfig, ValidationConfig
from almr.train.schedule import lr_factor
from almr.world.build import world_data


def pretrain_config(world_dir: Path, run_dir: Path, shard_dir: Path, config: AlmrConfig) -> AlmrConfig:
    """The CPT config that pretrains the base model of the world at `world_dir` into `run_dir`."""
    pretrain = config.base
    steps = pretrain.tokens // (pretrain.batch.global_batch_size * pretrain.batch.seq_len)
    cpt = CptConfig(
        batch=pretrain.batch,
        optimizer=pretrain.optimizer,
        schedule=pretrain.schedule,
        run_dir=str(run_dir),
        total_tokens=pretrain.tokens,
        seed=pretrain.seed,
        random_init=True,
        validation=ValidationConfig(every_steps=max(1, steps // 5)),
        probe=ProbeConfig(every_tokens=pretrain.probe_every_tokens),
    )
    mixture = MixtureConfig(
        additional_language="zh",
        almr=pretrain.almr,
        sub_weights=pretrain.sub_weights,
        token_budget=pretrain.tokens,
        seed=pretrain.seed,
    )
    return config.model_copy(
        update={
            "model": ModelConfig(name_or_path=str(Path(world_dir) / "model"), dtype=config.model.dtype),
            "cpt": cpt,
            "data": world_data(world_dir, shard_dir),
            "mixture": mixture,
            "eval": config.eval.model_copy(update={"data_dir": str(world_dir)}),
        }
    )


def pretrain_base(world_dir: Path, run_dir: Path, shard_dir: Path, config: AlmrConfig, progress: bool = True) -> Path:
    """Tokenize the world, pretrain its base model and return the model's directory."""
    run_config = AlmrConfig.model_validate(pretrain_config(world_dir, run_dir, shard_dir, config).model_dump())
    cpt = run_config.cpt
    steps = cpt.total_tokens // (cpt.batch.global_batch_size * cpt.batch.seq_len)
    lr_factor(0, steps, cpt.schedule)  # refuse an impossible schedule before tokenizing
    latest = Checkpointer(Path(run_dir) / "checkpoints", keep_last=1).latest()
    if latest is not None and json.loads((latest / COMPLETE).read_text(encoding="utf-8"))["step"] == steps:
        return latest / "hf"
    tokenize_sources(run_config.data, progress=progress)
    result = run_cpt(run_config, resume=latest is not None, progress=progress)
    assert result.checkpoint is not None  # the trainer always saves at the end
    return result.checkpoint / "hf"
