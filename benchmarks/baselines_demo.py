"""The baselines on the demo world, measured: does the world's "Instruct" model — SFT + DPO on the
base model, no CPT, English-dominant data, as Llama-3-Instruct was made — answer Chinese questions
in another language, as Llama-3-Instruct does (9% Chinese in the paper's Table 8)? And what does
the fixed-recipe CPT (ALMR 0.2, a conventional LR) score beside the study's pick
(docs/post-training.md, "Baselines").

    python benchmarks/baselines_demo.py --out /tmp/almr-baselines      # ~40 min on 2 shared cores

The chain is posttrain_demo.py's (the same functions, `almr.run.posttrain`): the default demo
world; its base model (1M mostly-English tokens, 5% Chinese); CPT at the demo study's pick (ALMR
0.5, LR 2.67e-3, 262,144 tokens); C-SFT (150 steps on the world's bilingual dialogues) and C-DPO
(100 steps on its pairs, the last `--held-out` kept out). Then the baselines by
`almr.stages.baselines`: Instruct (the same SFT and DPO settings, from the base model, on the
world's instruct/sft.jsonl and instruct/dpo.jsonl) and the fixed-recipe CPT (the same budget).

`--variant SHARE:ENGLISH …` adds an Instruct model per other (`world.instruct_zh_share`,
`world.instruct_zh_english_replies`): its data from a world built with those keys (every other
file of it byte-identical), the rest as above — how the Chinese share of the replies follows the
Chinese data in the fine-tuning sets.

Measured per model (posttrain_demo.measure): %Chinese of greedy chat replies (32 new tokens) to the
world's first 100 Chinese questions, held-out preference accuracy, the world probe's scores; each
model's numbers are kept in `measured/` and reused by a rerun, as every finished run is.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from almr.config import AlmrConfig
from almr.run.posttrain import finetune, world_dpo_data, world_sft_data
from almr.stages.baselines import build_fixed_cpt, build_instruct, instruct_datasets
from almr.world.build import build_world
from posttrain_demo import chain_start, markdown, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/almr-baselines"))
    parser.add_argument("--held-out", type=int, default=100, help="DPO pairs kept out for preference accuracy")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--dpo-steps", type=int, default=100)
    parser.add_argument("--variant", nargs="*", default=[], metavar="SHARE:ENGLISH",
                        help="other world.instruct_zh_share:world.instruct_zh_english_replies pairs")  # fmt: skip
    parser.add_argument("--no-fixed-cpt", action="store_true")
    args = parser.parse_args()
    out: Path = args.out
    start = chain_start(out, args.held_out)
    config, world, base, cpt, dpo_train, held_out = (start.config, start.world, start.base, start.cpt,
                                                     start.dpo_train, start.held_out)  # fmt: skip
    update = {
        "sft": config.sft.model_copy(update={"datasets": world_sft_data(world), "steps": args.sft_steps}),
        "dpo": config.dpo.model_copy(update={"datasets": world_dpo_data(dpo_train), "steps": args.dpo_steps}),
    }
    tuned = AlmrConfig.model_validate(config.model_copy(update=update).model_dump())
    models = {"base": base, "CPT (study's pick: ALMR 0.5, LR 2.67e-3)": cpt}
    models["C-SFT"] = finetune(tuned, "sft", cpt, out / "c-sft", datasets=tuned.sft.datasets)
    models["C-DPO"] = finetune(tuned, "dpo", models["C-SFT"], out / "c-dpo", datasets=tuned.dpo.datasets)
    share, english = config.world.instruct_zh_share, config.world.instruct_zh_english_replies
    name = f"Instruct (zh users {share:g}, answered in en {english:g})"
    models[name] = build_instruct(tuned, world, base, out / "instruct", False, log=print)
    for variant in args.variant:
        share, english = (float(x) for x in variant.split(":"))
        name = f"Instruct (zh users {share:g}, answered in en {english:g})"
        models[name] = _instruct_at(tuned, share, english, base, out)
    if not args.no_fixed_cpt:
        fixed = config.baselines.fixed_cpt
        models[f"CPT (fixed: ALMR {fixed.almr:g}, LR {fixed.lr:g})"] = build_fixed_cpt(
            config, world, base, out / "cpt-fixed", False, shard_dir=out / "shards"
        )
    rows = {name: _measured(name, path, world, held_out, out) for name, path in models.items()}
    text = markdown(rows)
    (out / "baselines.md").write_text(text, encoding="utf-8")
    (out / "baselines.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


def _instruct_at(tuned: AlmrConfig, share: float, english: float, base: Path, out: Path) -> Path:
    """The Instruct baseline on the instruct sets of a world built with `world.instruct_zh_share=share`
    and `world.instruct_zh_english_replies=english`."""
    tag = f"zh{share:g}-en{english:g}"
    world = out / f"world-{tag}"
    build_world(
        world, tuned.world.model_copy(update={"instruct_zh_share": share, "instruct_zh_english_replies": english})
    )
    sft, dpo = instruct_datasets(world)
    instruct = tuned.baselines.instruct.model_copy(update={"sft_datasets": sft, "dpo_datasets": dpo})
    spec = tuned.baselines.model_copy(update={"instruct": instruct})
    config = AlmrConfig.model_validate(tuned.model_copy(update={"baselines": spec}).model_dump())
    return build_instruct(config, world, base, out / f"instruct-{tag}", False, log=print)


def _measured(name: str, model: Path, world: Path, held_out: list[dict[str, Any]], out: Path) -> dict[str, float]:
    path = out / "measured" / (re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") + ".json")
    if path.is_file() and json.loads(path.read_text(encoding="utf-8"))["model"] == str(model.resolve()):
        return json.loads(path.read_text(encoding="utf-8"))["scores"]
    scores = measure(model, world, held_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": str(model.resolve()), "scores": scores}, indent=1), encoding="utf-8")
    return scores


if __name__ == "__main__":
    sys.exit(main())
