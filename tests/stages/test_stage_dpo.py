"""The DPO stage on the small world: checks before compute, a run folder out, held-out preference
accuracy, and bad input through `python -m almr.cli dpo` (one message, exit code 2)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from almr.config import AlmrConfig
from almr.stages.dpo import preference_accuracy, run_dpo
from almr.train.dpo import pair_logps
from worlds import save_world_model


@pytest.fixture(scope="module")
def chat_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's model shape with seeded random weights and the world's chat tokenizer."""
    return save_world_model(small_world, tmp_path_factory.mktemp("dpo-stage-model") / "model", seed=1)


def config_dict(model: Path, data: Path, run_dir: Path) -> dict[str, Any]:
    return {
        "model": {"name_or_path": str(model)},
        "dpo": {
            "run_dir": str(run_dir), "steps": 2, "device": "cpu", "datasets": [{"path": str(data), "language": "en"}],
            "batch": {"micro_batch_size": 2, "global_batch_size": 4, "seq_len": 96}, "optimizer": {"lr": 1e-3},
        },
    }  # fmt: skip


def held_out(small_world: Path, tmp_path: Path, keep: int) -> tuple[Path, list[dict[str, Any]]]:
    """The first `keep` pairs of the world's DPO data as a training file; the rest held out."""
    lines = (small_world / "dpo" / "train.jsonl").read_text("utf-8").splitlines()
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines[:keep]) + "\n", encoding="utf-8")
    return train, [json.loads(line) for line in lines[keep:]]


def test_stage_writes_a_run_folder_and_measures_preference(small_world: Path, chat_model: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train, test_pairs = held_out(small_world, tmp_path, 24)
    config = AlmrConfig.model_validate(config_dict(chat_model, train, tmp_path / "runs" / "dpo"))
    result = run_dpo(config, progress=False)
    run_dir = tmp_path / "runs" / "dpo"
    assert result.steps == 2 and result.pairs == 24 and result.reference == "computed"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text("utf-8"))
    assert saved["dpo"]["steps"] == 2 and saved["model"]["name_or_path"] == str(chat_model)  # the whole config
    assert json.loads((run_dir / "summary.json").read_text("utf-8"))["pairs"] == 24
    assert (tmp_path / "runs" / "ref_cache").is_dir()  # beside the run

    # the stage's log-probabilities are TRL's: the cached reference numbers are the start model's
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    examples = [json.loads(line) for line in train.read_text("utf-8").splitlines()]
    cached = np.load(result.cache_dir / "ref_logps.npz")  # rows in the mixed (shuffled) order
    model = AutoModelForCausalLM.from_pretrained(chat_model)
    chosen, rejected = pair_logps(model, tokenizer, examples, max_length=96)  # TRL cut them to seq_len
    assert sorted(cached["chosen"].tolist()) == pytest.approx(sorted(chosen.tolist()), abs=1e-3)
    assert sorted(cached["rejected"].tolist()) == pytest.approx(sorted(rejected.tolist()), abs=1e-3)

    accuracy = preference_accuracy(result.model_dir, test_pairs, tokenizer)
    assert 0.0 <= accuracy <= 1.0
    assert preference_accuracy(chat_model, test_pairs, tokenizer, reference_dir=chat_model) == 0.5  # all ties


def run_cli(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "almr.cli", "dpo", str(path), "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_bad_input_is_one_message_and_exit_2(small_world: Path, chat_model: Path, tmp_path: Path) -> None:
    """A pair whose chosen equals rejected, a missing model directory, a tokenizer without a chat
    template: each refused with its file or key, exit code 2, before any training."""
    record = json.loads((small_world / "dpo" / "train.jsonl").read_text("utf-8").splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**record, "rejected": record["chosen"]}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = run_cli(config_dict(chat_model, bad, tmp_path / "run"), tmp_path)
    assert out.returncode == 2, out.stderr
    assert "chosen equals rejected" in out.stderr and f"{bad}:1" in out.stderr

    data = small_world / "dpo" / "train.jsonl"
    out = run_cli(config_dict(tmp_path / "no-such-model", data, tmp_path / "run"), tmp_path)
    assert out.returncode == 2 and "model.name_or_path" in out.stderr and "does not exist" in out.stderr

    plain = tmp_path / "no-template"
    shutil.copytree(chat_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((plain / "tokenizer_config.json").read_text("utf-8"))
    settings.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    out = run_cli(config_dict(plain, data, tmp_path / "run"), tmp_path)
    assert out.returncode == 2 and "no chat template" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.slow
def test_two_processes_train_as_one(small_world: Path, chat_model: Path, tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo, CPU): each computes part of the reference pass, the cache
    holds the same numbers in the same order as one process's, and the losses are the same."""
    data = small_world / "dpo" / "train.jsonl"
    one = run_dpo(AlmrConfig.model_validate(config_dict(chat_model, data, tmp_path / "one" / "run")), progress=False)
    config = {**config_dict(chat_model, data, tmp_path / "two" / "run"), "parallel": {"gpus_per_node": 2}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "almr.cli", "dpo",
               str(path), "--no-progress"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "run" / "summary.json").read_text("utf-8"))
    assert two["reference"] == "computed" and two["steps"] == one.steps
    a, b = np.load(one.cache_dir / "ref_logps.npz"), np.load(Path(two["reference_cache"]) / "ref_logps.npz")
    np.testing.assert_allclose(a["chosen"], b["chosen"], atol=1e-4)
    np.testing.assert_allclose(a["rejected"], b["rejected"], atol=1e-4)
    losses = [
        e["loss"] for e in map(json.loads, (tmp_path / "two" / "run" / "metrics.jsonl").open()) if e["event"] == "train"
    ]
    np.testing.assert_allclose(losses, one.losses, rtol=1e-4, atol=1e-5)
