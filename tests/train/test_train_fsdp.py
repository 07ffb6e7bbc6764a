"""Two processes under torchrun (gloo, FSDP2) give the losses of one process on the same global batch."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from torchrun_launch import launch
from train_toys import ToyLoader, make_model_dir, toy_config, toy_validation, train_toy

TESTS = Path(__file__).parents[1]  # train_toys.py lives at the top of tests/
VOCAB, SEQ = 256, 32
SETTINGS = {"steps": 4, "batch.micro_batch_size": 2, "checkpoint.every_steps": 2, "checkpoint.keep_last": 2,
            "validation.every_steps": 2}  # fmt: skip

_WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from train_toys import ToyLoader, toy_config, toy_validation, train_toy
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
config = toy_config(Path({tmp!r}), Path({model!r}), **{settings!r})
train_toy(config, loader=ToyLoader(2, 32, 256, rank=rank, world_size=world), validation=toy_validation(3, 32, 256))
"""


def _events(run: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model", vocab=VOCAB)
    script = tmp_path / "worker.py"
    worker = _WORKER.format(tests=str(TESTS), tmp=str(tmp_path / "two"), model=str(model_dir), settings=SETTINGS)
    script.write_text(worker)
    launch(str(script), timeout=180)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = toy_config(tmp_path / "one", model_dir, **SETTINGS)
        train_toy(one, loader=ToyLoader(2, SEQ, VOCAB), validation=toy_validation(3, SEQ, VOCAB))
        two_run, one_run = tmp_path / "two/run", tmp_path / "one/run"
        (start,) = _events(two_run, "start")
        assert start["world_size"] == 2 and start["grad_accumulation"] == 2
        # Same sequences in every global batch; only the order of the float sums differs (2 processes ×
        # 2 micro-batches vs 1 × 4, and a reduce-scatter), so losses agree to ~1e-6 relative.
        two_losses = [e["loss"] for e in _events(two_run, "train")]
        one_losses = [e["loss"] for e in _events(one_run, "train")]
        assert two_losses == pytest.approx(one_losses, rel=1e-5)
        for a, b in zip(_events(two_run, "val"), _events(one_run, "val"), strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)

        # The sharded checkpoint of the 2-process run resumes in one process (DCP reshards it).
        shutil.rmtree(two_run / "checkpoints/step_00000004")
        resumed = train_toy(toy_config(tmp_path / "two", model_dir, **SETTINGS), resume=True,
                            loader=ToyLoader(2, SEQ, VOCAB), validation=toy_validation(3, SEQ, VOCAB))  # fmt: skip
        assert resumed.losses == pytest.approx(one_losses[2:], rel=1e-5)
    finally:
        torch.set_num_threads(threads)
