"""The trainer's components answer "is it due" and compute the loss on their own, so the loop only asks."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from almr.errors import ConfigError
from almr.train.checkpoint import Checkpointer
from almr.train.loss import IGNORE_INDEX, summed_loss, target_count
from almr.train.parallel import Distributed
from almr.train.validate import Prober, Validator

ONE = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), mesh=None)


class Bigram(torch.nn.Module):
    """logits[t] = table[input_ids[t]]: a model whose loss is easy to compute by hand."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> object:
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_checkpoint_every_n_steps_and_always_at_the_end(tmp_path: Path) -> None:
    every_4 = Checkpointer(tmp_path, keep_last=1, every_steps=4)
    assert [s for s in range(1, 11) if every_4.should_save(s, last_step=10)] == [4, 8, 10]
    at_end = Checkpointer(tmp_path, keep_last=1)
    assert [s for s in range(1, 11) if at_end.should_save(s, last_step=10)] == [10]


def test_validation_at_start_every_m_steps_and_at_the_end() -> None:
    held_out = {"en": (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))}
    validator = Validator(held_out, micro_batch_size=1, every_steps=3, dist_env=ONE)
    assert [s for s in range(0, 8) if validator.should_validate(s, last_step=7)] == [0, 3, 6, 7]
    assert not Validator({}, 1, 3, ONE).should_validate(3, 7)  # nothing held out: nothing to do
    assert not Validator(held_out, 1, 0, ONE).should_validate(7, 7)  # off


def test_probe_each_time_a_multiple_of_its_tokens_is_crossed() -> None:
    prober = Prober(lambda model, step, tokens: {"x": 1.0}, every_tokens=100)
    steps = [(t - 48, t) for t in range(48, 481, 48)]  # 48 tokens a step
    assert [after for before, after in steps if prober.should_probe(before, after)] == [144, 240, 336, 432]
    assert prober.enabled and not Prober(None, 0).enabled and not Prober(lambda m, s, t: {}, 0).enabled
    with pytest.raises(ConfigError, match=r"cpt\.probe\.every_tokens is set but no probe suite was given"):
        Prober(None, every_tokens=100)


def test_summed_loss_is_the_cross_entropy_sum_over_labelled_positions() -> None:
    model = Bigram(5)
    inputs = torch.tensor([[0, 1, 2, 3]])
    labels = torch.tensor([[1, IGNORE_INDEX, 3, 4]])
    logits = model.table[inputs[0]]
    by_hand = sum(F.cross_entropy(logits[t : t + 1], labels[0, t : t + 1]) for t in (0, 2, 3))
    assert torch.allclose(summed_loss(model, inputs, labels), by_hand)
    assert target_count(labels).item() == 3


def test_validator_mean_loss_counts_each_sequence_once() -> None:
    model = Bigram(5)
    inputs = torch.tensor([[0, 1], [2, 3], [4, 0]])
    labels = torch.tensor([[1, 2], [3, IGNORE_INDEX], [0, 1]])
    got = Validator({"en": (inputs, labels)}, micro_batch_size=2, every_steps=1, dist_env=ONE)(model)
    expected = F.cross_entropy(model.table[inputs].flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    assert abs(got["en"] - expected.item()) < 1e-6


def test_resume_compares_the_keys_both_configs_name() -> None:
    from almr.train.resume import config_differences

    stored = {"cpt": {"optimizer": {"lr": 1e-3}, "seed": 0}}  # written before cpt.loss_chunk_tokens existed
    now = {"cpt": {"optimizer": {"lr": 1e-3}, "seed": 0, "loss_chunk_tokens": 1024}}
    assert config_differences(stored, now, must_match=("cpt.",), may_change=()) == []
    changed = {"cpt": {"optimizer": {"lr": 2e-3}, "seed": 0, "loss_chunk_tokens": 1024}}
    assert config_differences(stored, changed, must_match=("cpt.",), may_change=()) == [
        ("cpt.optimizer.lr", 1e-3, 2e-3)
    ]
    dropped = {"cpt": {"optimizer": {"lr": 1e-3}}}  # a key the run had and this config lacks is a change
    assert config_differences(stored, dropped, must_match=("cpt.",), may_change=()) == [("cpt.seed", 0, None)]
