"""The baselines stage on the small world: the world's English-dominant instruct sets, the Instruct
baseline (SFT → DPO from the base model, no CPT) and the fixed-recipe CPT (ALMR 0.2), each a
loadable Hugging Face directory; bad input refused before any compute."""

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from almr.chinese import chinese_share
from almr.config import AlmrConfig
from almr.data.config import ChatDatasetConfig
from almr.errors import ConfigError
from almr.stages.baselines import build_fixed_cpt, build_instruct, instruct_config
from almr.world.build import instruct_languages, rng_for
from worlds import SMALL_WORLD, save_world_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _config(small_world: Path, **extra: Any) -> AlmrConfig:
    short = {"steps": 1, "device": "cpu", "batch": {"micro_batch_size": 2, "global_batch_size": 2, "seq_len": 96}}
    raw: dict[str, Any] = {
        "sft": short,
        "dpo": {**short, "cache_reference": False},  # no reference pass over all the pairs: one step here
        "cpt": {
            "batch": {"micro_batch_size": 4, "global_batch_size": 4, "seq_len": 64},
            "total_tokens": 512,
            "device": "cpu",
            "probe": {"every_tokens": 0},
            "validation": {"every_steps": 0},
        },
        "mixture": {"additional_language": "zh", "sub_weights": {"en": 0.74, "math": 0.13, "code": 0.13}},
        **extra,
    }
    return AlmrConfig.model_validate(raw)


@pytest.mark.parametrize(("name", "count"), [("sft", SMALL_WORLD.instruct_sft_dialogues),
                                             ("dpo", SMALL_WORLD.instruct_dpo_pairs)])  # fmt: skip
def test_instruct_sets_are_english_dominant_in_the_stated_shares(small_world: Path, name: str, count: int) -> None:
    records = _records(small_world / "instruct" / f"{name}.jsonl")
    chinese = round(count * SMALL_WORLD.instruct_zh_share)
    crossed = round(chinese * SMALL_WORLD.instruct_zh_english_replies)
    pairs = Counter((r["lang"], r["reply_lang"]) for r in records)
    assert len(records) == count
    assert pairs == {("en", "en"): count - chinese, ("zh", "zh"): chinese - crossed, ("zh", "en"): crossed}
    assert chinese > 0 and 0 < crossed < chinese  # the defaults hold both kinds of Chinese user turn
    for record in records:  # the tags say what the text is: the user's language, and the reply's
        user = [m for m in (record["messages"] if name == "sft" else record["prompt"]) if m["role"] == "user"]
        replies = [m for m in record["messages"] if m["role"] == "assistant"] if name == "sft" else record["chosen"]
        assert all((chinese_share(m["content"]) > 0.3) == (record["lang"] == "zh") for m in user), record
        reply_zh = chinese_share(" ".join(m["content"] for m in replies)) > 0.3
        if record.get("kind") != "math":  # a worked solution is digits and a few words
            assert reply_zh == (record["reply_lang"] == "zh"), record
        assert all(m["role"] != "system" for m in record.get("messages", []))


def test_instruct_languages_are_exact_and_seeded() -> None:
    order = instruct_languages(200, 0.05, 0.5, rng_for(3, "x"))
    assert Counter(order) == {("en", "en"): 190, ("zh", "zh"): 5, ("zh", "en"): 5}
    assert order == instruct_languages(200, 0.05, 0.5, rng_for(3, "x"))
    assert order != instruct_languages(200, 0.05, 0.5, rng_for(4, "x"))
    assert Counter(instruct_languages(10, 0.0, 0.5, rng_for(3, "x"))) == {("en", "en"): 10}


def test_instruct_config_reads_the_world_sets_from_the_base(small_world: Path, tmp_path: Path) -> None:
    config = instruct_config(_config(small_world), small_world, tmp_path / "base")
    assert [d.path for d in config.sft.datasets] == [str(small_world / "instruct" / "sft.jsonl")]
    assert [d.format for d in config.dpo.datasets] == ["preference"]
    assert config.ablation.base_model == str(tmp_path / "base")


def test_build_instruct_makes_a_loadable_chat_model(small_world: Path, tmp_path: Path) -> None:
    base = save_world_model(small_world, tmp_path / "base", 1)
    out = build_instruct(_config(small_world), small_world, base, tmp_path / "instruct", progress=False, log=print)
    assert out == tmp_path / "instruct" / "model" and out.resolve() == (tmp_path / "instruct/dpo/hf").resolve()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template
    sft = json.loads((tmp_path / "instruct/sft/summary.json").read_text(encoding="utf-8"))
    assert sft["model"] == str(base) and sft["steps"] == 1
    assert not torch.equal(  # trained: the weights moved from the base's
        model.get_input_embeddings().weight, AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
    )
    lines: list[str] = []
    assert build_instruct(_config(small_world), small_world, base, tmp_path / "instruct", progress=False,
                          log=lines.append) == out  # fmt: skip
    assert lines[-2:] == [f"  sft: done ({tmp_path / 'instruct/sft'})", f"  dpo: done ({tmp_path / 'instruct/dpo'})"]


def test_build_fixed_cpt_trains_at_almr_0_2(small_world: Path, tmp_path: Path) -> None:
    base = save_world_model(small_world, tmp_path / "base", 1)
    config = _config(small_world)
    out = build_fixed_cpt(config, small_world, base, tmp_path / "fixed", progress=False)
    assert out == tmp_path / "fixed" / "model"
    AutoModelForCausalLM.from_pretrained(out)
    plan = json.loads((tmp_path / "fixed" / "plan.json").read_text(encoding="utf-8"))
    assert plan["almr"] == 0.2 and plan["token_budget"] == 512 and plan["steps"] == 2
    additional = [s for s in plan["sources"] if s["additional"]]
    assert [s["name"] for s in additional] == ["zh"] and additional[0]["weight"] == pytest.approx(0.2)
    assert plan["tree"]["ratio"] == pytest.approx(0.2)  # the root split: zh against the rest
    # 2 steps × 4 sequences: the exact counts of a 0.2 split (1.6 rounds to 2 of 8)
    assert sum(s["sequences"] for s in plan["sources"]) == 8 and additional[0]["sequences"] == 2
    run = json.loads((tmp_path / "fixed/run/metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert run["event"] == "end" and run["step"] == 2
    saved = (tmp_path / "fixed/run/config.yaml").read_text(encoding="utf-8")
    assert f"lr: {config.baselines.fixed_cpt.lr}" in saved and "almr: 0.2" in saved
    mtime = out.resolve().stat().st_mtime_ns
    assert build_fixed_cpt(config, small_world, base, tmp_path / "fixed", progress=False) == out  # reused
    assert out.resolve().stat().st_mtime_ns == mtime


def test_missing_base_model_is_refused_naming_the_stage(small_world: Path, tmp_path: Path) -> None:
    config = _config(small_world)
    with pytest.raises(ConfigError, match=r"baselines\.instruct: the base model .*nowhere does not exist.*base stage"):
        build_instruct(config, small_world, tmp_path / "nowhere", tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match=r"baselines\.fixed_cpt: the base model .*not a Hugging Face"):
        (tmp_path / "empty").mkdir()
        build_fixed_cpt(config, small_world, tmp_path / "empty", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_world_without_instruct_sets_is_refused(small_world: Path, tmp_path: Path) -> None:
    base = save_world_model(small_world, tmp_path / "base", 1)
    config = _config(small_world)
    with pytest.raises(ConfigError, match=r"has no instruct/sft\.jsonl.*almr world build"):
        build_instruct(config, tmp_path / "not-a-world", base, tmp_path / "out", progress=False)
    missing = [ChatDatasetConfig(path=str(tmp_path / "missing.jsonl"), format="preference")]
    instruct = config.baselines.instruct.model_copy(update={"dpo_datasets": missing})
    other = config.model_copy(update={"baselines": config.baselines.model_copy(update={"instruct": instruct})})
    with pytest.raises(ConfigError, match=r"baselines\.instruct\.dpo_datasets: .*missing\.jsonl does not exist"):
        build_instruct(other, small_world, base, tmp_path / "out", progress=False)
