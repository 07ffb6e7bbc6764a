"""The world probe: same numbers as lm-eval on the same items, model mode restored, cheap."""

from pathlib import Path

import pytest
import torch

from almr.errors import ConfigError
from almr.evaluate.config import EvalConfig
from almr.evaluate.probe import WorldProbe, probe_from_config


@pytest.fixture(scope="module")
def tiny(small_world: Path) -> tuple[torch.nn.Module, object]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_world / "model"))
    return model, AutoTokenizer.from_pretrained(small_world / "tokenizer")


def test_probe_equals_lm_eval_on_the_same_items(small_world: Path, tiny: tuple) -> None:
    from almr.evaluate.harness import run_eval

    model, tok = tiny
    n = 12
    probe = WorldProbe(small_world, tok, items_per_task=n, tasks=("world_mmlu", "world_ceval", "world_eprstmt",
                                                                   "world_seceu"))  # fmt: skip
    model.train()
    got = probe(model, step=5, tokens=1000)
    assert model.training  # mode restored
    ref = run_eval(model, tokenizer=tok, tasks=["world_mmlu", "world_ceval", "world_eprstmt", "world_seceu"],
                   data_dir=small_world, limit=n)  # fmt: skip
    for task in ("world_mmlu", "world_ceval", "world_eprstmt"):
        assert got[task] == pytest.approx(ref["tasks"][task]["metrics"]["acc"]["value"]), task
    assert got["world_seceu"] == pytest.approx(ref["tasks"]["world_seceu"]["metrics"]["eq"]["value"], rel=1e-4)
    assert {"world_ceval_zh", "world_ceval_en_only"} <= set(got)
    assert probe.n_sequences == n * 4 + n * 4 + n * 2 + n * 4
    assert probe.last_seconds_ > 0


def test_probe_plugs_into_the_cpt_trainer_signature(small_world: Path, tiny: tuple) -> None:
    from almr.train.validate import Probe  # the trainer's hook type: (model, step, tokens) -> Mapping[str, float]

    model, tok = tiny
    probe: Probe = WorldProbe(small_world, tok, items_per_task=4)
    scores = probe(model, 1, 100)
    assert all(isinstance(v, float) for v in scores.values())
    assert 0.0 <= scores["world_mmlu"] <= 100.0


def test_probe_from_config_reads_the_eval_section(small_world: Path, tiny: tuple) -> None:
    _, tok = tiny
    probe_section = {"items_per_task": 3, "tasks": ["world_mmlu"], "batch_size": 8}
    probe = probe_from_config(EvalConfig(data_dir=str(small_world), probe=probe_section), tok)
    assert isinstance(probe, WorldProbe)
    assert (probe.world_dir, probe.items_per_task, probe.batch_size) == (small_world, 3, 8)
    assert probe.tasks == ("world_mmlu",)
    with pytest.raises(ConfigError, match=r"eval\.data_dir is not: point eval\.data_dir at a world directory"):
        probe_from_config(EvalConfig(), tok)
