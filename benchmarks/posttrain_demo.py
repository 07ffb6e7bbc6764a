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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from almr.config import AlmrConfig, load_config
from almr.data.chat import read_preferences
from almr.data.config import ChatDatasetConfig
from almr.evaluate.probe import WORLD_PROBE, TaskProbe
from almr.run.posttrain import (
    chinese_questions,
    finetune,
    formal_cpt,
    split_pairs,
    study_config,
    world_dpo_data,
    world_sft_data,
    zh_share,
)
from almr.stages.ablation import CELLS, cell_config
from almr.stages.base_model import pretrain_base
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
    out: Path = args.out
    start = chain_start(out, args.held_out)
    config, world, base, cpt, held_out = start.config, start.world, start.base, start.cpt, start.held_out
    chain = _fine_tune_config(config, world, base, cpt, start.dpo_train, out, args)
    models = {"base": base, "CPT": cpt}
    models["C-SFT"] = finetune(chain, "sft", cpt, out / "c-sft", datasets=chain.sft.datasets)
    models["C-DPO"] = finetune(chain, "dpo", models["C-SFT"], out / "c-dpo", datasets=chain.dpo.datasets)
    empathy = [ChatDatasetConfig(path=str(world / "esc" / "train.json"), format="esconv", language_field="lang")]
    models["C-SFT-Empathy"] = finetune(chain, "sft", models["C-SFT"], out / "c-sft-empathy", datasets=empathy,
                                       steps=args.empathy_steps)  # fmt: skip
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


@dataclass
class ChainStart:
    """What every post-training chain of the demo starts from."""

    config: AlmrConfig  # the demo preset
    world: Path
    base: Path  # the world's base model
    cpt: Path  # CPT from it at the demo study's pick
    dpo_train: Path  # the world's preference pairs less the held-out ones
    held_out: list[dict[str, Any]]  # those, for preference accuracy


def chain_start(out: Path, held_out: int) -> ChainStart:
    """The default demo world, its base model, one CPT run at the demo study's pick (ALMR 0.5,
    LR 2.67e-3) and the preference pairs split, under `out` (finished steps are reused)."""
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config("demo")
    world = out / "world"
    build_world(world, config.world)
    base = pretrain_base(world, out / "base-run", out / "shards", config, progress=False)
    study = study_config(world, base, out / "shards", out / "sweep", config)
    cpt = formal_cpt(study, almr=0.5, lr=2.67e-3, run_dir=out / "cpt")
    dpo_train, held_out_path = split_pairs(world, out / "data", held_out)
    pairs = read_preferences(ChatDatasetConfig(path=str(held_out_path), format="preference"))
    return ChainStart(config, world, base, cpt, dpo_train, pairs)


def _fine_tune_config(config: AlmrConfig, world: Path, base: Path, cpt: Path, dpo_train: Path, out: Path,
                      args: argparse.Namespace) -> AlmrConfig:  # fmt: skip
    update = {
        "sft": config.sft.model_copy(update={"datasets": world_sft_data(world), "steps": args.sft_steps}),
        "dpo": config.dpo.model_copy(update={"datasets": world_dpo_data(dpo_train), "steps": args.dpo_steps}),
        "ablation": config.ablation.model_copy(
            update={"cpt_model": str(cpt), "base_model": str(base), "out_dir": str(out / "ablation")}
        ),
        "eval": config.eval.model_copy(update={"data_dir": str(world)}),
    }
    return AlmrConfig.model_validate(config.model_copy(update=update).model_dump())


def measure(model_dir: Path, world: Path, held_out: list[dict[str, Any]]) -> dict[str, float]:
    tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")  # carries the chat template
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    probe = TaskProbe(WORLD_PROBE, tokenizer, items_per_task=100, data_dir=world)
    scores = dict(probe(model))
    scores["zh_share"] = 100.0 * zh_share(model, tokenizer, chinese_questions(world, 100))
    scores["preference_accuracy"] = 100.0 * preference_accuracy(model_dir, held_out, tokenizer)
    return scores


def markdown(rows: dict[str, dict[str, float]]) -> str:
    keys = ["zh_share", "preference_accuracy", "world_seceu", "world_eprstmt", "world_ceval", "world_mmlu"]
    titles = ["%Chinese (zh prompts)", "pref. acc. (held out)", "SECEU EQ", "EPRSTMT", "C-Eval (world)", "MMLU (world)"]
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
