"""Post-training on the demo world, measured: CPT → C-SFT → C-DPO → C-SFT-Empathy, and the
Table 6 ablation — whatever the numbers show, with their noise (docs/post-training.md).

    python benchmarks/posttrain_demo.py --out /tmp/almr-posttrain      # ~15 min on 2 cores

Chain: the default demo world; its base model (`almr world pretrain`: 1M mostly-English tokens);
one CPT run from it at the demo study's pick (ALMR 0.5, LR 2.67e-3, 262,144 tokens); C-SFT on the
world's bilingual SFT dialogues; C-DPO on its preference pairs (the last `--held-out` pairs kept
out); C-SFT-Empathy: SFT again from C-SFT on the world's ESConv-style emotional-support set.

Measured, per model: %Chinese of greedy chat replies to the world's Chinese questions (C-Eval's,
rendered with the chat template; the CPT and base models get the same template), the held-out
preference accuracy (log p(chosen) > log p(rejected) over the response tokens), and the world
probe's scores (world_seceu EQ, world_eprstmt, world_ceval, world_mmlu accuracy; 100 items each).
The ablation: four cells ({with, without} CPT × {with, without} Chinese fine-tuning data), each
SFT → DPO → the same measurements. Re-running reuses every finished stage.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from almr.chinese import chinese_share
from almr.config import AlmrConfig, load_config
from almr.data.chat import read_preferences
from almr.data.config import ChatDatasetConfig
from almr.evaluate.probe import WORLD_PROBE, TaskProbe
from almr.pipeline import study_config
from almr.stages.ablation import CELLS, cell_config
from almr.stages.base_model import pretrain_base
from almr.stages.cpt import run_cpt
from almr.stages.dpo import preference_accuracy, run_dpo
from almr.stages.sft import run_sft
from almr.world.build import build_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/almr-posttrain"))
    parser.add_argument("--held-out", type=int, default=100, help="DPO pairs kept out for preference accuracy")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--dpo-steps", type=int, default=100)
    parser.add_argument("--empathy-steps", type=int, default=100)
    parser.add_argument("--no-ablation", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    config = load_config("demo")
    world = out / "world"
    build_world(world, config.world)
    base = pretrain_base(world, out / "base-run", out / "shards", config, progress=False)
    cpt = _cpt(world, base, out, config)
    held_out = _split_pairs(world, out, args.held_out)
    chain = _fine_tune_config(config, world, out, base, cpt, args)
    models = {"base": base, "CPT": cpt}
    models["C-SFT"] = _stage(chain, "sft", cpt, out / "c-sft", steps=args.sft_steps)
    models["C-DPO"] = _stage(chain, "dpo", models["C-SFT"], out / "c-dpo", steps=args.dpo_steps)
    empathy = chain.model_copy(update={"sft": chain.sft.model_copy(update={"datasets": [
        ChatDatasetConfig(path=str(world / "esc" / "train.json"), format="esconv", language_field="lang")]})})
    models["C-SFT-Empathy"] = _stage(empathy, "sft", models["C-SFT"], out / "c-sft-empathy", steps=args.empathy_steps)
    rows = {name: measure(path, world, held_out) for name, path in models.items()}
    if not args.no_ablation:
        for cell in CELLS:
            cell_dir = out / "ablation" / cell.name
            for stage in ("sft", "dpo"):
                stage_config = cell_config(chain, cell, cell_dir, stage)
                if not (cell_dir / stage / "summary.json").is_file():
                    (run_sft if stage == "sft" else run_dpo)(stage_config, progress=False)
            rows[f"ablation: {cell.label('zh')}"] = measure(cell_dir / "dpo" / "hf", world, held_out)
    text = markdown(rows)
    (out / "posttrain.md").write_text(text, encoding="utf-8")
    (out / "posttrain.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


def _cpt(world: Path, base: Path, out: Path, config: AlmrConfig) -> Path:
    run_dir = out / "cpt"
    final = run_dir / "checkpoints"
    study = study_config(world, base, out, config)
    optimizer = study.cpt.optimizer.model_copy(update={"lr": 2.67e-3})
    overrides = {
        "mixture": study.mixture.model_copy(update={"almr": 0.5}),
        "cpt": study.cpt.model_copy(update={"run_dir": str(run_dir), "optimizer": optimizer}),
    }
    cpt_config = AlmrConfig.model_validate(study.model_copy(update=overrides).model_dump())
    done = sorted(final.glob("step_*/complete")) if final.is_dir() else []
    if not done:
        run_cpt(cpt_config, progress=False)
        done = sorted(final.glob("step_*/complete"))
    return done[-1].parent / "hf"


def _split_pairs(world: Path, out: Path, held_out: int) -> list[dict[str, Any]]:
    """The world's preference pairs: all but the last `held_out` for DPO, those for measuring."""
    rows = (world / "dpo" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "dpo_train.jsonl").write_text("\n".join(rows[:-held_out]) + "\n", encoding="utf-8")
    (out / "data" / "dpo_held_out.jsonl").write_text("\n".join(rows[-held_out:]) + "\n", encoding="utf-8")
    return read_preferences(ChatDatasetConfig(path=str(out / "data" / "dpo_held_out.jsonl"), format="preference"))


def _fine_tune_config(config: AlmrConfig, world: Path, out: Path, base: Path, cpt: Path,
                      args: argparse.Namespace) -> AlmrConfig:  # fmt: skip
    sft_data = [ChatDatasetConfig(path=str(world / "sft" / "train.jsonl"), language_field="lang")]
    dpo_data = [ChatDatasetConfig(path=str(out / "data" / "dpo_train.jsonl"), format="preference",
                                  language_field="lang")]  # fmt: skip
    update = {
        "sft": config.sft.model_copy(update={"datasets": sft_data, "steps": args.sft_steps}),
        "dpo": config.dpo.model_copy(update={"datasets": dpo_data, "steps": args.dpo_steps}),
        "ablation": config.ablation.model_copy(
            update={"cpt_model": str(cpt), "base_model": str(base), "out_dir": str(out / "ablation")}
        ),
        "eval": config.eval.model_copy(update={"data_dir": str(world)}),
    }
    return AlmrConfig.model_validate(config.model_copy(update=update).model_dump())


def _stage(config: AlmrConfig, stage: str, start: Path, run_dir: Path, steps: int) -> Path:
    if not (run_dir / "summary.json").is_file():
        section = getattr(config, stage).model_copy(update={"run_dir": str(run_dir), "steps": steps})
        update = {"model": config.model.model_copy(update={"name_or_path": str(start)}), stage: section}
        stage_config = AlmrConfig.model_validate(config.model_copy(update=update).model_dump())
        (run_sft if stage == "sft" else run_dpo)(stage_config, progress=False)
    return run_dir / "hf"


def measure(model_dir: Path, world: Path, held_out: list[dict[str, Any]]) -> dict[str, float]:
    tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")  # carries the chat template
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    probe = TaskProbe(WORLD_PROBE, tokenizer, items_per_task=100, data_dir=world)
    scores = dict(probe(model))
    scores["zh_share"] = 100.0 * zh_share(model, tokenizer, world)
    scores["preference_accuracy"] = 100.0 * preference_accuracy(model_dir, held_out, tokenizer)
    return scores


@torch.no_grad()
def zh_share(model: Any, tokenizer: Any, world: Path, items: int = 100, new_tokens: int = 32) -> float:
    """%Chinese of greedy chat replies to the world's Chinese questions (the %Chinese definition of
    docs/evaluation.md over all replies' text together)."""
    lines = (world / "bench" / "ceval.jsonl").read_text(encoding="utf-8").splitlines()[:items]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": json.loads(line)["question"]}],
                                             tokenize=False, add_generation_prompt=True) for line in lines]  # fmt: skip
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    output = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, eos_token_id=[eot],
                            pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    replies = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return chinese_share("".join(replies))


def markdown(rows: dict[str, dict[str, float]]) -> str:
    keys = ["zh_share", "preference_accuracy", "world_seceu", "world_eprstmt", "world_ceval", "world_mmlu"]
    titles = ["%Chinese (zh prompts)", "pref. acc. (held out)", "SECEU EQ", "EPRSTMT", "C-Eval (world)", "MMLU (world)"]
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
