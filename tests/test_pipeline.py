from pathlib import Path

import pytest
from rich.console import Console

from almr.config import AlmrConfig, WorldConfig
from almr.errors import ConfigError
from worlds import SMALL_WORLD


def test_demo_runs_every_stage_on_a_small_world(tmp_path: Path) -> None:
    import torch

    from almr.pipeline import run_demo

    torch.set_num_threads(1)
    world = SMALL_WORLD.model_dump()
    world["pretrain"].update(
        tokens=24576, probe_every_tokens=8192, schedule={"kind": "cosine", "warmup_steps": 1, "min_lr_ratio": 0.1}
    )
    config = AlmrConfig(world=WorldConfig.model_validate(world), eval={"limit": 4})
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)  # noqa: SIM115
    report = run_demo(tmp_path / "demo", config, console).read_text()
    for heading in ("## 1. The demo world", "## 2. The base model", "## 3. Evaluation (world suite)"):
        assert heading in report
    assert "| zh | zh | text | train | 400 |" in report  # the world's stats
    assert "| base |" in report  # the evaluation table's row
    events = (tmp_path / "demo/base-run/metrics.jsonl").read_text()
    assert events.count('"event": "probe"') == 3  # every 8192 of 24576 tokens
    assert (tmp_path / "demo/eval/base-world.json").is_file()


def test_probe_needs_a_world(tmp_path: Path) -> None:
    from almr.evaluate.probe import probe_from_config

    config = AlmrConfig(cpt={"probe": {"every_tokens": 1000}})
    with pytest.raises(ConfigError, match=r"eval\.data_dir"):
        probe_from_config(config, tokenizer=None)
    assert probe_from_config(AlmrConfig(), tokenizer=None) is None
