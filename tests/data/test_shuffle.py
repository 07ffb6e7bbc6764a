"""The keyed bijection that orders a large source's epoch: a permutation on every domain size,
fixed by its key, and — forced on with a low threshold — a loader that resumes exactly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import corpus, write_jsonl

from almr.data.config import KEYED_SHUFFLE_ABOVE, BatchConfig, DataConfig, MixtureConfig
from almr.data.loader import PackedLoader
from almr.data.plan import Plan, build_plan
from almr.data.shuffle import KeyedPermutation, epoch_key
from almr.data.tokenize import tokenize_sources
from almr.errors import DataError


def test_bijection_on_every_small_domain() -> None:
    for n in [*range(1, 300), 1023, 1024, 1025, 4096 + 7]:
        image = KeyedPermutation(n, epoch_key(7, "zh", 0))(np.arange(n))
        assert np.array_equal(np.sort(image), np.arange(n)), n


def test_deterministic_and_keyed() -> None:
    n = 10_000
    index = np.arange(n)
    a = KeyedPermutation(n, epoch_key(7, "zh", 0))(index)
    assert np.array_equal(a, KeyedPermutation(n, epoch_key(7, "zh", 0))(index))
    assert np.array_equal(a[[5, 17, 9999]], KeyedPermutation(n, epoch_key(7, "zh", 0))(np.array([5, 17, 9999])))
    for other in (epoch_key(8, "zh", 0), epoch_key(7, "en", 0), epoch_key(7, "zh", 1)):
        b = KeyedPermutation(n, other)(index)
        assert (a == b).mean() < 0.01  # unrelated orders: ~1/n fixed agreements
    # a fixed value, so that a change of the construction (which reorders every large source) is seen
    assert KeyedPermutation(10, b"x")(np.arange(10)).tolist() == [0, 4, 7, 9, 3, 1, 2, 5, 6, 8]
    with pytest.raises(IndexError):
        KeyedPermutation(10, b"x")(np.array([10]))


def test_loader_with_keyed_shuffle_resumes_and_covers(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "zh.jsonl", corpus("zh", 120))
    write_jsonl(tmp_path / "en.jsonl", corpus("en", 120))
    data = DataConfig(
        tokenizer=str(tokenizer_dir),
        shard_dir=str(tmp_path / "shards"),
        workers=1,
        sources=[
            {"name": "zh", "language": "zh", "train": [str(tmp_path / "zh.jsonl")]},
            {"name": "en", "language": "en", "train": [str(tmp_path / "en.jsonl")]},
        ],
    )
    tokenize_sources(data, progress=False, log=lambda m: None)
    batch = BatchConfig(micro_batch_size=2, global_batch_size=8, seq_len=16)

    def plan(above: int) -> Plan:
        return build_plan(
            data,
            MixtureConfig(almr=0.5, seed=3, max_epochs=10, keyed_shuffle_above=above),
            batch,
            token_budget=16 * 8 * 40,
        )

    keyed, stored = plan(0), plan(KEYED_SHUFFLE_ABOVE)
    assert keyed.hash != stored.hash  # the threshold is part of the data order, hence of the hash
    loader = PackedLoader(keyed, micro_batch_size=2)
    stream = loader.streams[0]
    assert stream.keyed and not PackedLoader(stored, micro_batch_size=2).streams[0].keyed
    per = stream.per_epoch
    first, second = stream.samples(np.arange(per)), stream.samples(np.arange(per, 2 * per))
    assert sorted(first.tolist()) == list(range(per)) == sorted(second.tolist())  # each epoch covers every sample
    assert not np.array_equal(first, second)

    full = [torch.cat([b[k] for b in PackedLoader(keyed, 2)]) for k in ("input_ids", "source_ids")]
    again = [torch.cat([b[k] for b in PackedLoader(keyed, 2)]) for k in ("input_ids", "source_ids")]
    assert all(torch.equal(a, b) for a, b in zip(full, again, strict=True))
    it = iter(resumable := PackedLoader(keyed, 2))
    for _ in range(13):  # three global batches and one micro-batch
        next(it)
    tail = PackedLoader(keyed, 2)
    tail.load_state_dict(resumable.state_dict())
    batches = list(tail)
    rest = [torch.cat([b[k] for b in batches]) for k in ("input_ids", "source_ids")]
    assert torch.equal(rest[0], full[0][26:]) and torch.equal(rest[1], full[1][26:])


def test_a_new_phase_keeps_the_threshold(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "zh.jsonl", corpus("zh", 60))
    data = DataConfig(
        tokenizer=str(tokenizer_dir), shard_dir=str(tmp_path / "shards"), workers=1,
        sources=[{"name": "zh", "language": "zh", "train": [str(tmp_path / "zh.jsonl")]}],
    )  # fmt: skip
    tokenize_sources(data, progress=False, log=lambda m: None)
    batch = BatchConfig(micro_batch_size=2, global_batch_size=8, seq_len=16)
    first = build_plan(data, MixtureConfig(almr=1.0, keyed_shuffle_above=0, max_epochs=50), batch, token_budget=256)
    with pytest.raises(
        DataError, match=r"keep the mixture.keyed_shuffle_above of the previous one \(0\), not 50000000"
    ):
        build_plan(data, MixtureConfig(almr=1.0, max_epochs=50), batch, token_budget=256, previous=first)
