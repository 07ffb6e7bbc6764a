"""Phase one after a vocabulary extension (`cpt.train_new_rows_from`): only the new tokens' rows of
the embedding and output matrices change; every other weight comes out bit-identical."""

from pathlib import Path

import pytest
import torch

from almr.errors import ConfigError
from torchrun_launch import launch
from train_toys import ToyLoader, make_model_dir, toy_config, train_toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_only_the_new_rows_learn(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = make_model_dir(tmp_path / "model")
    torch.manual_seed(0)
    before = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    before.save_pretrained(model_dir)
    # the toy stream uses ids 8 … 167: rows from 100 on are both read and predicted
    config = toy_config(tmp_path, model_dir, random_init="false", train_new_rows_from=100,
                        **{"optimizer.weight_decay": 0.1})  # fmt: skip
    result = train_toy(config, loader=ToyLoader(4, 32, 256))
    after = AutoModelForCausalLM.from_pretrained(result.checkpoint / "hf")
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    assert old.keys() == new.keys()
    for name in old:
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(new[name][:100], old[name][:100]), name  # old rows: untouched, decay off
            assert not torch.equal(new[name][100:], old[name][100:]), name  # new rows learned
        else:
            assert torch.equal(new[name], old[name]), name


def test_rows_outside_the_vocabulary_are_refused(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model")
    with pytest.raises(ConfigError, match=r"cpt\.train_new_rows_from=256: the model has 256 embedding rows"):
        train_toy(toy_config(tmp_path, model_dir, train_new_rows_from=256), loader=ToyLoader(4, 32, 256))


_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from train_toys import ToyLoader, toy_config, train_toy
import os
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
config = toy_config(Path({tmp!r}), Path({model!r}), random_init="false", train_new_rows_from=100)
train_toy(config, loader=ToyLoader(2, 32, 256, rank=rank, world_size=world))
"""


@pytest.mark.slow  # two torchrun processes
def test_old_rows_stay_frozen_when_sharded(tmp_path: Path) -> None:

    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = make_model_dir(tmp_path / "model")
    torch.manual_seed(0)
    before = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    before.save_pretrained(model_dir)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(tests=str(Path(__file__).parents[1]), tmp=str(tmp_path), model=str(model_dir)))
    launch(str(script))
    (final,) = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))[-1:]
    after = dict(AutoModelForCausalLM.from_pretrained(final / "hf").named_parameters())
    for name, old in before.named_parameters():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(after[name][:100], old[:100]) and not torch.equal(after[name][100:], old[100:]), name
        else:
            assert torch.equal(after[name], old), name
