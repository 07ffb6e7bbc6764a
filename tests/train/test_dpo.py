"""DPO on TRL (almr.train.dpo) and the reference log-probability cache (almr.train.ref_cache), on the
small world's ~1M-parameter model with random weights: cached reference = live reference, the
cache is reused and invalidated, resume, LoRA, the refusals."""

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from almr.data.config import BatchConfig
from almr.errors import ConfigError, DataError
from almr.train.config import DpoConfig, ModelConfig, OptimizerConfig, ScheduleConfig
from almr.train.dpo import DpoResult, train_dpo
from almr.train.ref_cache import RefLogpCache, RefLogps, cache_key, data_fingerprint, model_fingerprint
from worlds import save_world_model

REWARDS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


@pytest.fixture(scope="module")
def chat_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's model shape with seeded random weights and the world's chat tokenizer."""
    return save_world_model(small_world, tmp_path_factory.mktemp("dpo-model") / "model", seed=0)


@pytest.fixture(scope="module")
def pairs(small_world: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (small_world / "dpo" / "train.jsonl").read_text("utf-8").splitlines()]
    return [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in rows]


def dpo_config(run_dir: Path, **overrides: Any) -> DpoConfig:
    settings: dict[str, Any] = {
        "run_dir": str(run_dir), "steps": 3, "device": "cpu", "seed": 0,
        "batch": BatchConfig(micro_batch_size=2, global_batch_size=4, seq_len=96),
        "optimizer": OptimizerConfig(lr=1e-3), "schedule": ScheduleConfig(kind="linear"),
    }  # fmt: skip
    settings.update(overrides)
    return DpoConfig(**settings)


def run(model: Path, cfg: DpoConfig, examples: list[dict[str, Any]], **kwargs: Any) -> DpoResult:
    torch.set_num_threads(1)
    return train_dpo(ModelConfig(name_or_path=str(model)), cfg, examples, progress=False, **kwargs)


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == kind]


def test_cached_reference_equals_live_reference(chat_model: Path, pairs: list, tmp_path: Path) -> None:
    """The same run with the reference log-probabilities precomputed (one model in memory) and
    with a live second model gives the same losses and rewards, step by step; the run folder
    holds a Hugging Face model transformers loads, whose generation stops at the end of a turn."""
    cached = run(chat_model, dpo_config(tmp_path / "cached", cache_reference=True), pairs)
    live = run(chat_model, dpo_config(tmp_path / "live", cache_reference=False), pairs)
    assert (cached.reference, live.reference) == ("computed", "live model")
    assert cached.reference_batches > 0 and live.reference_batches == 0
    a, b = events(tmp_path / "cached", "train"), events(tmp_path / "live", "train")
    assert [e["step"] for e in a] == [e["step"] for e in b] == [1, 2, 3]
    for key in ("loss", "grad_norm", *REWARDS):
        np.testing.assert_allclose([e[key] for e in a], [e[key] for e in b], rtol=1e-5, atol=1e-5, err_msg=key)
    assert a[-1]["loss"] != a[0]["loss"]  # it trained

    model = AutoModelForCausalLM.from_pretrained(cached.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(cached.model_dir)
    assert tokenizer.chat_template
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in model.generation_config.eos_token_id
    summary = json.loads((tmp_path / "cached" / "summary.json").read_text("utf-8"))
    assert summary["steps"] == 3 and summary["reference"] == "computed" and "reward accuracy" in summary["summary"]
    assert [e["event"] for e in map(json.loads, (tmp_path / "cached" / "metrics.jsonl").open())][:2] == [
        "start", "reference",
    ]  # fmt: skip
    assert (tmp_path / "cached" / "config.yaml").is_file()


def test_cache_is_reused_and_invalidated(chat_model: Path, pairs: list, tmp_path: Path) -> None:
    """A rerun on the same reference and data reads the cache (no reference forward pass) and
    trains the same; other data, another prompt cap or changed reference weights compute anew."""
    cache = tmp_path / "cache"
    first = run(chat_model, dpo_config(tmp_path / "a", steps=1), pairs, cache_dir=cache)
    again = run(chat_model, dpo_config(tmp_path / "b", steps=1), pairs, cache_dir=cache)
    assert (first.reference, again.reference, again.reference_batches) == ("computed", "cached", 0)
    assert again.cache_dir == first.cache_dir and again.losses == first.losses
    assert events(tmp_path / "b", "reference")[0]["source"] == "cached"

    fewer = run(chat_model, dpo_config(tmp_path / "c", steps=1), pairs[:-1], cache_dir=cache)
    assert fewer.reference == "computed" and fewer.cache_dir != first.cache_dir
    capped = run(chat_model, dpo_config(tmp_path / "d", steps=1, max_prompt_length=8), pairs, cache_dir=cache)
    assert capped.reference == "computed" and capped.cache_dir not in (first.cache_dir, fewer.cache_dir)
    assert events(tmp_path / "d", "start")[0]["prompts_cut"] > 0

    changed = tmp_path / "changed-model"
    shutil.copytree(chat_model, changed)
    model = AutoModelForCausalLM.from_pretrained(changed)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(1.5)
    model.save_pretrained(changed)
    moved = run(changed, dpo_config(tmp_path / "f", steps=1), pairs, cache_dir=cache)
    assert moved.reference == "computed" and moved.cache_dir not in (first.cache_dir, fewer.cache_dir)
    assert moved.losses == pytest.approx(first.losses, abs=1e-5)  # step 1: policy = reference, loss log 2


def test_resume_continues_the_same_trajectory(chat_model: Path, pairs: list, tmp_path: Path) -> None:
    """Killed after the checkpoint at step 2 (its later files removed), --resume trains steps 3
    and 4 as the uninterrupted run did: no pair repeated or skipped."""
    cfg = dpo_config(tmp_path / "run", steps=4, save_every_steps=2, keep_last=3)
    whole = run(chat_model, cfg, pairs, cache_dir=tmp_path / "cache")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "checkpoint-4")
    shutil.rmtree(tmp_path / "run" / "hf")
    with pytest.raises(ConfigError, match="--resume"):
        run(chat_model, cfg, pairs, cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"dpo\.beta"):
        run(chat_model, cfg.model_copy(update={"beta": 0.5}), pairs, cache_dir=tmp_path / "cache", resume=True)
    resumed = run(chat_model, cfg, pairs, cache_dir=tmp_path / "cache", resume=True)
    assert resumed.steps == 4 and resumed.reference == "cached"
    np.testing.assert_allclose(resumed.losses, whole.losses[2:], rtol=1e-5, atol=1e-6)
    assert [e["step"] for e in events(tmp_path / "run", "train")] == [1, 2, 3, 4]


def test_lora_reference_is_the_base_and_is_cached(chat_model: Path, pairs: list, tmp_path: Path) -> None:
    """With LoRA the reference is the base with adapters disabled; it is cached all the same, and
    the exported model has the adapters merged (plain weights transformers loads)."""
    cfg = dpo_config(tmp_path / "lora", steps=2, finetuning="lora", optimizer=OptimizerConfig(lr=1e-2))
    result = run(chat_model, cfg, pairs, cache_dir=tmp_path / "cache")
    assert result.reference == "computed" and result.reference_batches > 0
    start = events(tmp_path / "lora", "start")[0]
    assert 0 < start["trainable"] < start["parameters"]
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert not any("lora" in name for name in merged.state_dict())
    live = run(chat_model, cfg.model_copy(update={"run_dir": str(tmp_path / "live"), "cache_reference": False}), pairs)
    assert live.reference == "adapters disabled"
    np.testing.assert_allclose(live.losses, result.losses, rtol=1e-5, atol=1e-6)


def test_refusals_before_any_compute(chat_model: Path, pairs: list, tmp_path: Path) -> None:
    same = [{**pairs[0], "rejected": pairs[0]["chosen"]}]
    with pytest.raises(DataError, match="chosen equals rejected"):
        run(chat_model, dpo_config(tmp_path / "x"), pairs + same)
    with pytest.raises(ConfigError, match="global_batch_size=6"):
        run(chat_model, dpo_config(tmp_path / "x", batch=BatchConfig(micro_batch_size=4, global_batch_size=6)), pairs)
    with pytest.raises(ConfigError, match="warmup_steps=3"):
        run(chat_model, dpo_config(tmp_path / "x", schedule=ScheduleConfig(warmup_steps=3)), pairs)
    with pytest.raises(ConfigError, match=r"dpo\.loss_type=\['sigmoid', 'dpo'\]: unknown dpo"):
        run(chat_model, dpo_config(tmp_path / "x", loss_type=["sigmoid", "dpo"]), pairs)
    with pytest.raises(ConfigError, match="does not exist"):
        run(tmp_path / "missing", dpo_config(tmp_path / "x"), pairs)
    assert not (tmp_path / "x").exists()


def test_cache_key_parts(chat_model: Path, tmp_path: Path) -> None:
    """The model fingerprint follows config.json and the weight files; the data fingerprint the
    token ids and the settings; an entry is read back only for the same number of rows."""
    copy = tmp_path / "copy"
    shutil.copytree(chat_model, copy)
    base = model_fingerprint(copy)
    assert model_fingerprint(copy) == base
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
    assert model_fingerprint(copy) != base

    rows = [([1, 2], [3], [4, 5])]
    fp = data_fingerprint(rows, max_length=64, truncation="keep_start", precision="fp32")
    assert fp != data_fingerprint([([1, 2], [3, 4], [5])], max_length=64, truncation="keep_start", precision="fp32")
    assert fp != data_fingerprint(rows, max_length=32, truncation="keep_start", precision="fp32")
    assert fp != data_fingerprint(rows, max_length=64, truncation="keep_start", precision="bf16")

    cache = RefLogpCache(tmp_path / "cache", cache_key(base, fp))
    assert cache.load(2) is None
    cache.save(RefLogps(np.array([-1.5, -2.0]), np.array([-3.0, -4.25])), {"note": "test"})
    loaded = cache.load(2)
    assert loaded is not None and loaded.chosen.tolist() == [-1.5, -2.0] and loaded.rejected.tolist() == [-3.0, -4.25]
    assert cache.load(3) is None
    assert json.loads((cache.path / "meta.json").read_text())["rows"] == 2
