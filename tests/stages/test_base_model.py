import json
from pathlib import Path

from almr.config import AlmrConfig
from almr.stages.config import BaseModelConfig
from almr.train.config import ScheduleConfig
from worlds import SMALL_WORLD


def test_pretrained_base_knows_english_better_than_chinese(small_world: Path, tmp_path: Path) -> None:
    """The world's base model plays Llama-3: after a mostly-English pretraining its held-out
    English loss is well below its Chinese loss; asking again reuses the finished run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from almr.stages.base_model import pretrain_base

    torch.set_num_threads(1)
    base_section = BaseModelConfig(
        tokens=40960, schedule=ScheduleConfig(kind="cosine", warmup_steps=2, min_lr_ratio=0.1)
    )
    config = AlmrConfig(world=SMALL_WORLD, base=base_section)
    run = tmp_path / "base-run"
    base = pretrain_base(small_world, run, tmp_path / "shards", config, progress=False)

    model = AutoModelForCausalLM.from_pretrained(base)
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(base))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "val"]
    assert losses[-1]["en"] < losses[0]["en"] - 1.0  # it learned English
    assert losses[-1]["zh"] > losses[-1]["en"] + 0.5  # and much less Chinese

    before = (run / "metrics.jsonl").stat().st_mtime_ns
    assert pretrain_base(small_world, run, tmp_path / "shards", config, progress=False) == base
    assert (run / "metrics.jsonl").stat().st_mtime_ns == before
