"""Post-training on the demo world, as the pipeline's stages and `benchmarks/posttrain_demo.py`
run it: the world's chat data as SFT/DPO data sets, one fine-tuning run from a start model
(resumed when its folder holds checkpoints), the formal CPT at the study's recommendation, and
the measurements of a chat model (%Chinese of its replies to Chinese questions, the world probe,
held-out preference accuracy)."""

import json
import shutil
from pathlib import Path
from typing import Any

from almr.config import AlmrConfig
from almr.data.config import ChatDatasetConfig
from almr.durable import atomic_write_text
from almr.processes import is_main_process
from almr.train.config import local_model


def world_sft_data(world: Path) -> list[ChatDatasetConfig]:
    """The world's bilingual SFT dialogues, tagged per record (so the ablation can leave out zh)."""
    return [ChatDatasetConfig(path=str(Path(world) / "sft" / "train.jsonl"), language_field="lang")]


def world_dpo_data(path: Path) -> list[ChatDatasetConfig]:
    """Preference pairs in the world's format at `path`, tagged per record."""
    return [ChatDatasetConfig(path=str(path), format="preference", language_field="lang")]


def split_pairs(world: Path, out_dir: Path, held_out: int) -> tuple[Path, Path]:
    """The world's preference pairs: all but the last `held_out` to train on, those to measure
    preference accuracy with; written as `train.jsonl` and `held_out.jsonl` under `out_dir`."""
    rows = (Path(world) / "dpo" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    if held_out >= len(rows):
        raise ValueError(f"{held_out} pairs held out of {len(rows)}: none left to train on")
    out_dir.mkdir(parents=True, exist_ok=True)
    train, kept = out_dir / "train.jsonl", out_dir / "held_out.jsonl"
    train.write_text("\n".join(rows[: len(rows) - held_out]) + "\n", encoding="utf-8")
    kept.write_text("".join(row + "\n" for row in rows[len(rows) - held_out :]), encoding="utf-8")
    return train, kept


def split_empathy(world: Path, out_dir: Path, held_out: int) -> tuple[Path, Path]:
    """The world's emotional-support dialogues less the last `held_out` Chinese ones (`train.json`,
    ESConv format), and those as the pairwise study's dialogues (`dialogues.jsonl`: id, turns)."""
    dialogues = json.loads((Path(world) / "esc" / "train.json").read_text(encoding="utf-8"))
    zh = [i for i, d in enumerate(dialogues) if d.get("lang") == "zh"]
    if len(zh) <= held_out:
        raise ValueError(f"the world has {len(zh)} Chinese emotional-support dialogues; {held_out} cannot be held out")
    kept = set(zh[-held_out:])
    out_dir.mkdir(parents=True, exist_ok=True)
    train, prompts = out_dir / "train.json", out_dir / "dialogues.jsonl"
    # every process of a multi-process stage writes these; one that reads meanwhile sees them whole
    atomic_write_text(train, json.dumps([d for i, d in enumerate(dialogues) if i not in kept], ensure_ascii=False))
    lines = []
    for i in sorted(kept):
        turns: list[dict[str, str]] = []
        for turn in dialogues[i]["dialog"]:
            role = "user" if turn["speaker"] == "seeker" else "assistant"
            if turns and turns[-1]["role"] == role:  # ESConv splits a speaker's turn in several messages
                turns[-1]["content"] += "\n" + turn["content"]
            elif turns or role == "user":
                turns.append({"role": role, "content": turn["content"]})
        lines.append(json.dumps({"id": f"esc-{i}", "turns": turns}, ensure_ascii=False))
    atomic_write_text(prompts, "\n".join(lines) + "\n")
    return train, prompts



def finetune(config: AlmrConfig, stage: str, start: Path, run_dir: Path, *, datasets: list[ChatDatasetConfig],
             steps: int | None = None, lr: float | None = None, progress: bool = False) -> Path:  # fmt: skip
    """One SFT (`stage="sft"`) or DPO run of `config`'s section from `start` into `run_dir` on
    `datasets`; returns its Hugging Face model directory. A finished run is reused, an interrupted
    one (checkpoints in its folder) resumes."""
    from almr.stages.dpo import run_dpo  # heavy: torch, transformers, trl
    from almr.stages.sft import run_sft

    hf = run_dir / "hf"
    if (run_dir / "summary.json").is_file() or (stage == "dpo" and (hf / "config.json").is_file()):
        return hf
    section = getattr(config, stage)
    update: dict[str, Any] = {"run_dir": str(run_dir), "datasets": datasets}
    if steps is not None:
        update["steps"] = steps
    if lr is not None:
        update["optimizer"] = section.optimizer.model_copy(update={"lr": lr})
    changed = {"model": local_model(config.model, str(start)),
               stage: section.model_copy(update=update)}  # fmt: skip
    stage_config = AlmrConfig.model_validate(config.model_copy(update=changed).model_dump())
    checkpoints = run_dir / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.iterdir())
    if not resume and run_dir.exists() and is_main_process():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to continue, start clean
    (run_sft if stage == "sft" else run_dpo)(stage_config, resume=resume, progress=progress)
    return hf


def study_config(world_dir: Path | None, base: Path, shard_dir: Path, sweep_dir: Path, config: AlmrConfig
                 ) -> AlmrConfig:  # fmt: skip
    """The study's base config: the config's cpt/mixture/sweep settings from the `base` model, its
    records in `sweep_dir`; on the world's corpora (shards in `shard_dir`) probing the world's
    benchmarks, or, without a world (`world_dir` None: a config that names its model), on the
    config's own data sources with their shards in `shard_dir`."""
    data = config.data.model_copy(update={"shard_dir": str(shard_dir)})
    if data.tokenizer is None:
        data = data.model_copy(update={"tokenizer": str(base)})
    eval_ = config.eval
    if world_dir is not None:
        from almr.world.build import world_data  # heavy: the world's model module imports transformers

        data, eval_ = world_data(world_dir, shard_dir), eval_.model_copy(update={"data_dir": str(world_dir)})
    update = {
        "model": local_model(config.model, str(base)),
        "data": data,
        "eval": eval_,
        "sweep": config.sweep.model_copy(update={"sweep_dir": str(sweep_dir)}),
    }
    return AlmrConfig.model_validate(config.model_copy(update=update).model_dump())


def formal_cpt(study: AlmrConfig, almr: float, lr: float, run_dir: Path, progress: bool = False) -> Path:
    """The CPT run of `study`'s cpt section at (`almr`, `lr`) into `run_dir`; its final model
    directory. A finished run is reused, an interrupted one resumes."""
    from almr.stages.cpt import run_cpt  # heavy: torch

    checkpoints = run_dir / "checkpoints"
    done = sorted(checkpoints.glob("step_*/complete")) if checkpoints.is_dir() else []
    steps = _cpt_steps(study)
    if done and json.loads(done[-1].read_text(encoding="utf-8")).get("step") == steps:
        return done[-1].parent / "hf"
    optimizer = study.cpt.optimizer.model_copy(update={"lr": lr})
    overrides = {
        "mixture": study.mixture.model_copy(update={"almr": almr}),
        "cpt": study.cpt.model_copy(update={"run_dir": str(run_dir), "optimizer": optimizer}),
    }
    cpt_config = AlmrConfig.model_validate(study.model_copy(update=overrides).model_dump())
    if not done and run_dir.exists() and is_main_process():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to continue, start clean
    result = run_cpt(cpt_config, resume=bool(done), progress=progress)
    assert result.checkpoint is not None  # the trainer always saves at the end
    return result.checkpoint / "hf"


def _cpt_steps(config: AlmrConfig) -> int:
    cpt = config.cpt
    if cpt.steps is not None:
        return cpt.steps
    return (config.mixture.token_budget or cpt.total_tokens or 0) // (cpt.batch.global_batch_size * cpt.batch.seq_len)


def chinese_questions(world: Path, items: int) -> list[str]:
    """The first `items` questions of the world's Chinese-facts benchmark (its C-Eval set)."""
    lines = (Path(world) / "bench" / "ceval.jsonl").read_text(encoding="utf-8").splitlines()[:items]
    return [json.loads(line)["question"] for line in lines]


def zh_share(model: Any, tokenizer: Any, questions: list[str], new_tokens: int = 32) -> float:
    """Share of Chinese (0..1) in greedy chat replies to `questions` (the %Chinese definition of
    docs/evaluation.md over all replies' text together); the chat template of `tokenizer`."""
    import torch

    from almr.chinese import chinese_share

    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in questions]  # fmt: skip
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                eos_token_id=[eot], pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    replies = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return chinese_share("".join(replies))


def model_zh_share(model_dir: Path, world: Path, items: int, new_tokens: int) -> float:
    """`zh_share` of the model in `model_dir` with the world's chat tokenizer (a base or CPT model
    gets the same template as the chat models)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(world) / "tokenizer")  # carries the chat template
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return zh_share(model, tokenizer, chinese_questions(world, items), new_tokens)
