"""The SFT stage on the small world: C-SFT from a base model whose chat tokens were never trained,
then the empathy stage (`almr sft` again, from C-SFT's hf/, on the world's ESConv-style set), and
bad input refused before any training, with exit code 2 on the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from almr.config import load_config
from almr.errors import ConfigError, DataError

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # and HF_HUB_OFFLINE=1, from conftest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_dir(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's tiny Llama with seeded random weights, its chat tokens' rows zeroed as in a
    Llama-3 base, saved with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("base")
    tokenizer = AutoTokenizer.from_pretrained(small_world / "model")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_world / "model"))
    with torch.no_grad():
        for token in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
            model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(token)] = 0.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def overrides(model: Path, run_dir: Path, data: str, **extra: Any) -> list[str]:
    settings = {
        "model.name_or_path": str(model), "sft.run_dir": str(run_dir), "sft.datasets": data, "sft.device": "cpu",
        "sft.steps": 3, "sft.batch.micro_batch_size": 4, "sft.batch.global_batch_size": 8, "sft.batch.seq_len": 256,
        "sft.optimizer.lr": 1e-3, **extra,
    }  # fmt: skip
    return [f"{key}={value}" for key, value in settings.items()]


def world_sft(world: Path) -> str:
    return f"[{{path: {world / 'sft' / 'train.jsonl'}, format: messages, language: mixed}}]"


def test_sft_then_the_empathy_stage_from_its_model(base_dir: Path, small_world: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    from almr.stages.sft import run_sft

    notes: list[str] = []
    config = load_config(None, overrides(base_dir, tmp_path / "c-sft", world_sft(small_world)))
    summary = run_sft(config, progress=False, notify=notes.append)
    assert summary.initialized_tokens == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert any("never trained" in note and "<|eot_id|>" in note for note in notes)
    assert summary.steps == 3 and summary.end_of_turn == "<|eot_id|>" and summary.examples == 40
    line = summary.line()
    assert line.startswith("SFT: 3 steps, 40 conversations (0 truncated, 0 dropped), padding waste ")
    assert line.endswith(f"-> {tmp_path / 'c-sft' / 'hf'}")
    saved = json.loads((tmp_path / "c-sft" / "summary.json").read_text())
    assert saved["hf_dir"] == str(tmp_path / "c-sft" / "hf") and saved["truncated"] == 0
    assert yaml.safe_load((tmp_path / "c-sft" / "config.yaml").read_text())["sft"]["steps"] == 3

    # C-SFT-Empathy: the same command from C-SFT's model, on emotional-support conversations
    esc = f"[{{path: {small_world / 'esc' / 'train.json'}, format: esconv, language: mixed}}]"
    notes.clear()
    config = load_config(None, overrides(tmp_path / "c-sft" / "hf", tmp_path / "empathy", esc))
    empathy = run_sft(config, progress=False, notify=notes.append)
    assert empathy.initialized_tokens == [] and not any("never trained" in note for note in notes)
    assert empathy.steps == 3 and empathy.hf_dir == str(tmp_path / "empathy" / "hf")
    AutoModelForCausalLM.from_pretrained(empathy.hf_dir)
    eos = GenerationConfig.from_pretrained(empathy.hf_dir).eos_token_id
    assert 4 in eos  # <|eot_id|> in the world's tokenizer


def test_bad_input_is_refused_before_training(base_dir: Path, small_world: Path, tmp_path: Path) -> None:
    from almr.stages.sft import run_sft

    run = tmp_path / "run"
    missing_data = f"[{{path: {tmp_path / 'nope.jsonl'}, format: messages}}]"
    with pytest.raises(DataError, match=r"nope\.jsonl"):
        run_sft(load_config(None, overrides(base_dir, run, missing_data)), progress=False)
    with pytest.raises(ConfigError, match=r"model\.name_or_path=.* is not a Hugging Face model directory"):
        run_sft(load_config(None, overrides(tmp_path, run, world_sft(small_world))), progress=False)
    no_template = tmp_path / "no-template"
    no_template.mkdir()
    for item in base_dir.iterdir():
        (no_template / item.name).symlink_to(item)
    (no_template / "chat_template.jinja").unlink()
    with pytest.raises(ConfigError, match=r"has no chat template"):
        run_sft(load_config(None, overrides(no_template, run, world_sft(small_world))), progress=False)
    assert not run.exists()  # nothing was written


def test_the_command_reports_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"model": {"name_or_path": str(tmp_path / "missing")},
                                      "sft": {"run_dir": str(tmp_path / "run"), "device": "cpu"}}))  # fmt: skip
    command = [sys.executable, "-m", "almr.cli", "sft", str(config), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert done.returncode == 2, done.stderr
    assert f"model.name_or_path={tmp_path / 'missing'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def write_config(path: Path, model: Path, run_dir: Path, world: Path, **sft: Any) -> Path:
    settings = {"run_dir": str(run_dir), "device": "cpu", "optimizer": {"lr": 1e-3},
                "datasets": [{"path": str(world / "sft" / "train.jsonl"), "format": "messages"}],
                "batch": {"micro_batch_size": 4, "global_batch_size": 8, "seq_len": 256}, **sft}  # fmt: skip
    path.write_text(yaml.safe_dump({"model": {"name_or_path": str(model)}, "sft": settings}))
    return path


def train_events(run_dir: Path) -> dict[int, dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {e["step"]: e for e in map(json.loads, lines) if e["event"] == "train"}


@pytest.mark.slow
def test_kill_9_and_resume_trains_the_same_batches(base_dir: Path, small_world: Path, tmp_path: Path) -> None:
    """`almr sft` killed with SIGKILL after a checkpoint, then `--resume`: the steps after the
    checkpoint see the same batches (token-id checksums) and losses as an uninterrupted run."""
    import signal
    import time

    from almr.stages.sft import run_sft

    whole = tmp_path / "whole"
    config = write_config(tmp_path / "whole.yaml", base_dir, whole, small_world, steps=60, save_every_steps=5)
    run_sft(load_config(config), progress=False)
    killed = tmp_path / "killed"
    config = write_config(tmp_path / "killed.yaml", base_dir, killed, small_world, steps=60, save_every_steps=5)
    command = [sys.executable, "-m", "almr.cli", "sft", str(config), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "checkpoint-10" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its checkpoint"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "hf").exists()
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    expected, got = train_events(whole), train_events(killed)
    assert sorted(got) == list(range(1, 61))
    for step in range(1, 61):
        assert got[step]["batch_checksum"] == expected[step]["batch_checksum"], step
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-4), step


@pytest.mark.slow
def test_two_processes_train_the_same_steps_as_one(base_dir: Path, small_world: Path, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes on the CPU: each global batch is the same 8 conversations as
    in one process, so the losses match (data parallel through accelerate, nothing of almr's)."""
    from almr.stages.sft import run_sft

    one = run_sft(load_config(write_config(tmp_path / "one.yaml", base_dir, tmp_path / "one", small_world,
                                           steps=4)), progress=False)  # fmt: skip
    config = write_config(tmp_path / "two.yaml", base_dir, tmp_path / "two", small_world, steps=4,
                          batch={"micro_batch_size": 2, "global_batch_size": 8, "seq_len": 256})  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "-m", "almr.cli", "sft", str(config), "--no-progress",
               "--set", "parallel.gpus_per_node=2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("SFT: 4 steps") == 1  # one summary line, from the main process
    two = train_events(tmp_path / "two")
    assert [two[s]["loss"] for s in range(1, 5)] == pytest.approx(one.losses, rel=1e-4)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["steps"] == 4
