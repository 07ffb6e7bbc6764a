"""Mixture plans (exact counts, refusals) and the packed loader (resume, DP invariance, phases)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import corpus, write_jsonl

from almr.config import load_config
from almr.data.blend import assign, counts_at
from almr.data.config import BatchConfig, DataConfig, MixtureConfig
from almr.data.loader import PackedLoader, validation_sequences
from almr.data.plan import Plan, build_plan
from almr.data.shards import IndexedShard
from almr.data.tokenize import tokenize_sources
from almr.errors import ConfigError, DataError

SEQ, GBS = 16, 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> DataConfig:
    root = tmp_path_factory.mktemp("world")
    sources = []
    for name, lang, n in (("en", "en", 300), ("zh", "zh", 200), ("math", "en", 80), ("code", "en", 60)):
        write_jsonl(root / name / "train.jsonl", corpus(lang, n))
        write_jsonl(root / name / "valid.jsonl", corpus(lang, 12, offset=500))
        sources.append({"name": name, "language": lang, "domain": name if name in ("math", "code") else "general",
                        "train": [str(root / name / "train.jsonl")], "valid": [str(root / name / "valid.jsonl")]})
    data = DataConfig(tokenizer=str(tokenizer_dir), shard_dir=str(root / "shards"), workers=1, sources=sources)
    tokenize_sources(data, progress=False, log=lambda m: None)
    return data


def _plan(data: DataConfig, budget: int = 64 * SEQ * GBS, **mix: object) -> Plan:
    mixture = MixtureConfig(**{"almr": 0.25, "sub_weights": {"math": 0.5, "code": 0.5}, "seed": 7, **mix})
    return build_plan(data, mixture, BatchConfig(micro_batch_size=2, global_batch_size=GBS, seq_len=SEQ), budget)


def _all(loader: PackedLoader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return tuple(torch.cat([b[k] for b in batches]) for k in ("input_ids", "labels", "source_ids"))  # type: ignore[return-value]


def test_plan_counts_are_exact(world: DataConfig) -> None:
    plan = _plan(world)
    assert plan.total_sequences == 512 and plan.steps == 64
    w = {s.name: s.weight for s in plan.sources}
    assert w == pytest.approx({"en": 0.375, "zh": 0.25, "math": 0.1875, "code": 0.1875})
    assert [s.sequences for s in plan.sources] == [192, 128, 96, 96]
    assert abs(plan.almr - 0.25) < 1e-12 and len(plan.hash) == 64
    for s in plan.sources:
        tokens = IndexedShard(Path(s.shard) / "train").num_tokens
        assert s.sequences_per_epoch == (tokens - 1) // SEQ and s.epochs == s.sequences / s.sequences_per_epoch
    odd = _plan(world, budget=100 * SEQ, almr=0.3)  # 100 sequences → 104 (13 whole global batches)
    counts = [s.sequences for s in odd.sources]
    assert odd.total_sequences == 104 and sum(counts) == 104 and counts[1] == round(0.3 * 104)


def test_loader_yields_what_the_plan_says(world: DataConfig) -> None:
    plan = _plan(world)
    ids, labels, src = _all(PackedLoader(plan, micro_batch_size=4))
    assert ids.shape == (512, SEQ) and ids.dtype == torch.long
    assert torch.equal(ids[:, 1:], labels[:, :-1])  # labels are next tokens, no shift needed
    assert np.bincount(src.numpy(), minlength=4).tolist() == [s.sequences for s in plan.sources]
    zh = plan.names.index("zh")
    per_batch = (src.view(-1, GBS) == zh).sum(1)
    assert ((per_batch - 0.25 * GBS).abs() < 1).all()
    # each sequence is a real window of its source's token stream: input + the next token
    stream = IndexedShard(Path(plan.sources[zh].shard) / "train").tokens
    for row in torch.nonzero(src == zh).flatten()[:5].tolist():
        window = np.concatenate([ids[row].numpy(), labels[row, -1:].numpy()])
        starts = [p for p in range(0, len(stream) - SEQ, SEQ) if np.array_equal(stream[p : p + SEQ + 1], window)]
        assert starts


def test_resume_from_step_k_is_the_tail(world: DataConfig) -> None:
    plan = _plan(world)
    full = _all(PackedLoader(plan, micro_batch_size=2))
    loader = PackedLoader(plan, micro_batch_size=2)
    it = iter(loader)
    for _ in range(3 * GBS // 2 + 1):  # three steps and one micro-batch into the fourth
        next(it)
    state = loader.state_dict()
    assert state == {"consumed_sequences": 3 * GBS + 2}
    resumed = PackedLoader(plan, micro_batch_size=2)
    resumed.load_state_dict(state)
    tail = _all(resumed)
    for a, b in zip(full, tail, strict=True):
        assert torch.equal(a[3 * GBS + 2 :], b)
    k = 17
    again = _all(PackedLoader(plan, micro_batch_size=2, consumed_sequences=k * GBS))
    assert torch.equal(again[0], full[0][k * GBS :])


@pytest.mark.parametrize("micro", [1, 2])
def test_global_order_independent_of_dp(world: DataConfig, micro: int) -> None:
    plan = _plan(world, budget=12 * SEQ * GBS)
    reference = _all(PackedLoader(plan, micro_batch_size=GBS))[0].view(-1, GBS, SEQ)
    for dp in (1, 2, 4):
        per_rank = [_all(PackedLoader(plan, micro, rank, dp))[0].view(-1, GBS // dp, SEQ) for rank in range(dp)]
        assert torch.equal(torch.cat(per_rank, dim=1), reference), dp


def test_epochs_reshuffle_and_cover(world: DataConfig) -> None:
    plan = _plan(world, budget=60 * SEQ * GBS, almr=1.0, max_epochs=10)
    zh = plan.sources[plan.names.index("zh")]
    loader = PackedLoader(plan, micro_batch_size=GBS)
    stream = loader.streams[plan.names.index("zh")]
    per = zh.sequences_per_epoch
    samples = stream.samples(np.arange(2 * per))
    first, second = samples[:per], samples[per : 2 * per]
    assert sorted(first.tolist()) == list(range(per)) == sorted(second.tolist())
    assert not np.array_equal(first, second)


def test_phase_change_repeats_nothing(world: DataConfig) -> None:
    one = _plan(world, budget=20 * SEQ * GBS, almr=0.2)
    stopped_at = 7 * GBS
    two = build_plan(world, MixtureConfig(almr=0.6, seed=7), BatchConfig(micro_batch_size=2, global_batch_size=GBS,
                     seq_len=SEQ), 20 * SEQ * GBS, previous=one, consumed=stopped_at)
    taken = counts_at(one.tree, stopped_at, 4)
    assert [s.start for s in two.sources] == taken.tolist()
    seen: dict[int, list[int]] = {i: [] for i in range(4)}
    for plan, limit in ((one, stopped_at), (two, two.total_sequences)):
        loader = PackedLoader(plan, micro_batch_size=GBS)
        positions = np.arange(limit)
        src, ranks = assign(plan.tree, positions)
        for i in range(4):
            stream_ranks = ranks[src == i] + plan.sources[i].start
            if i in loader.streams:
                seen[i].extend(stream_ranks.tolist())
    for i, ranks in seen.items():
        assert ranks == list(range(len(ranks))), i  # each stream continues exactly where it stopped
    with pytest.raises(DataError, match=r"keep the mixture.seed"):
        build_plan(world, MixtureConfig(almr=0.6, seed=8), BatchConfig(micro_batch_size=2, global_batch_size=GBS,
                   seq_len=SEQ), 20 * SEQ * GBS, previous=one)


def test_plan_refusals(world: DataConfig, other_tokenizer_dir: Path, tmp_path: Path) -> None:
    code_epoch = _plan(world).sources[3].sequences_per_epoch
    with pytest.raises(DataError, match=r"needs more than mixture.max_epochs = 4.0 passes over: .*code needs 5\.0"):
        _plan(world, budget=int(5 * code_epoch / 0.1875) * SEQ)
    with pytest.raises(DataError, match="no source taking part is tagged language 'zh'"):
        _plan(world, sources=["en", "math"], sub_weights={})
    with pytest.raises(DataError, match=r"mixture.sources: unknown source"):
        _plan(world, sources=["en", "fr"])
    with pytest.raises(DataError, match=r"set mixture.almr"):
        _plan(world, almr=None, sub_weights={})
    mismatched = world.model_copy(update={"tokenizer": str(other_tokenizer_dir)})
    with pytest.raises(DataError, match=r"were made with tokenizer .* but this run uses"):
        _plan(mismatched)
    with pytest.raises(ConfigError, match=r"mixture.weights: unknown source"):
        load_config(None, ["data.sources=[{name: en, train: [x]}]", "mixture.weights={de: 1}"])
    with pytest.raises(ConfigError, match=r"mixture: set either almr .* or explicit weights, not both"):
        load_config(None, ["mixture.almr=0.1", "mixture.weights={en: 1}"])
    explicit = _plan(world, almr=None, sub_weights={}, weights={"en": 3, "zh": 1})
    assert [s.sequences for s in explicit.sources] == [384, 128, 0, 0] and explicit.almr == 0.25


def test_plan_file_round_trip_and_tamper(world: DataConfig, tmp_path: Path) -> None:
    plan = _plan(world)
    path = plan.save(tmp_path / "plan.json")
    assert Plan.load(path) == plan
    path.write_text(path.read_text().replace('"seed": 7', '"seed": 8'))
    with pytest.raises(DataError, match="hash does not match"):
        Plan.load(path)


def test_loader_refuses_other_tokenizer_shards(world: DataConfig, tmp_path: Path) -> None:
    plan = _plan(world).model_copy(deep=True)
    plan.tokenizer["fingerprint"] = "0" * 64
    with pytest.raises(DataError, match="were made with tokenizer"):
        PackedLoader(plan, micro_batch_size=2)


def test_validation_sequences_fixed_and_in_order(world: DataConfig) -> None:
    plan = _plan(world)
    v = validation_sequences(plan, "zh")
    stream = torch.from_numpy(IndexedShard(Path(plan.sources[1].shard) / "valid").tokens.astype(np.int64))
    n = plan.sources[1].valid_sequences
    assert v["input_ids"].shape == (n, SEQ) and torch.equal(v["input_ids"].flatten(), stream[: n * SEQ])
    assert torch.equal(v["labels"].flatten(), stream[1 : n * SEQ + 1])
    assert torch.equal(validation_sequences(plan, "zh", max_sequences=2)["input_ids"], v["input_ids"][:2])
