"""The chunked loss under FSDP2 (two gloo processes): the output matrix is a sharded parameter that
FSDP gathers in the model's forward, where the chunked loss runs; the losses equal one process's
plain full-logits run."""

import json
from pathlib import Path

import pytest
import torch

from torchrun_launch import launch
from train_toys import ToyLoader, make_model_dir, toy_config, train_toy

TESTS = Path(__file__).parents[1]
VOCAB, SEQ = 256, 32
SETTINGS = {"steps": 4, "batch.micro_batch_size": 2}

_WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from train_toys import ToyLoader, toy_config, train_toy
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
config = toy_config(Path({tmp!r}), Path({model!r}), loss_chunk_tokens=24, **{settings!r})
train_toy(config, loader=ToyLoader(2, 32, 256, rank=rank, world_size=world))
"""


def _losses(run: Path) -> list[float]:
    return [
        e["loss"] for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == "train"
    ]


def test_chunked_loss_under_fsdp_matches_one_plain_process(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model", vocab=VOCAB)
    script = tmp_path / "worker.py"
    script.write_text(
        _WORKER.format(tests=str(TESTS), tmp=str(tmp_path / "two"), model=str(model_dir), settings=SETTINGS)
    )
    launch(str(script), timeout=180)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = toy_config(tmp_path / "one", model_dir, loss_chunk_tokens=0, **SETTINGS)
        train_toy(plain, loader=ToyLoader(2, SEQ, VOCAB))
    finally:
        torch.set_num_threads(threads)
    assert _losses(tmp_path / "two/run") == pytest.approx(_losses(tmp_path / "one/run"), rel=1e-5)
