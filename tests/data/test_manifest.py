"""Manifests and fingerprints: the hashes that name shards and plans stay as they were, and a
source whose files changed since tokenization is refused."""

import os
import shutil
from pathlib import Path

import pytest
from data_helpers import corpus, write_jsonl

from almr.data.config import BatchConfig, DataConfig, MixtureConfig
from almr.data.manifest import (
    describe_source,
    files_changed,
    input_fingerprint,
    read_manifest,
    tokenizer_info,
    up_to_date,
)
from almr.data.plan import Plan, PlanSource, build_plan
from almr.data.tokenize import tokenize_sources
from almr.errors import DataError


def test_fingerprint_and_plan_hash_are_frozen() -> None:
    """Shards and plans written by earlier versions must keep their names: these values are pinned."""
    described = {"name": "zh", "train": [{"path": "/d/zh.jsonl", "size": 10, "mtime_ns": 5}]}
    fingerprint = input_fingerprint(described, "f" * 64, False)
    assert fingerprint == "2d93827dcb8804e3b99e394422aa2a55f32a00b08157759a90a6725423ffd470"
    source = PlanSource(
        name="zh", language="zh", domain="general", additional=True, weight=1.0, sequences=8, start=0,
        sequences_per_epoch=10, epochs=0.8, train_tokens=200, valid_tokens=0, valid_sequences=0, chinese_share=0.9,
        shard="/s/zh", input_fingerprint=fingerprint,
    )
    plan = Plan(
        seq_len=16, global_batch_size=8, total_sequences=8, steps=1, token_budget=128, seed=7, max_epochs=4.0,
        additional_language="zh", almr=1.0, sources=[source], tree={"source": 0},
        tokenizer={"path": "/t", "fingerprint": "f" * 64, "eos_id": 0, "vocab_size": 400},
    )
    assert plan.compute_hash() == "ae80cb82c055235b5a6637bca5d7080798412806ef284b9c83450e68fea76e7a"


def test_changed_files_are_refused_and_copied_shards_trusted(tmp_path: Path, tokenizer_dir: Path) -> None:
    raw = tmp_path / "raw" / "zh.jsonl"
    write_jsonl(raw, corpus("zh", 40))
    data = DataConfig(tokenizer=str(tokenizer_dir), shard_dir=str(tmp_path / "shards"), workers=1,
                      sources=[{"name": "zh", "language": "zh", "train": [str(raw)]}])
    (manifest,) = tokenize_sources(data, progress=False, log=lambda m: None)
    source = data.sources[0]
    tok = tokenizer_info(data.tokenizer)
    assert manifest == read_manifest(data.shard_dir, "zh")
    assert manifest["source"] == describe_source(source)
    assert manifest["tokenizer"] == tok.record()
    assert manifest["input_fingerprint"] == input_fingerprint(describe_source(source), tok.fingerprint, False)
    assert up_to_date(manifest, manifest["input_fingerprint"], tmp_path / "shards" / "zh")
    assert not up_to_date(manifest, "0" * 64, tmp_path / "shards" / "zh")
    assert not files_changed(manifest, source)

    def plan() -> Plan:
        return build_plan(data, MixtureConfig(almr=1.0, max_epochs=100), BatchConfig(global_batch_size=2,
                          micro_batch_size=1, seq_len=8), token_budget=32)

    before = plan()
    stat = raw.stat()
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, another mtime
    assert files_changed(manifest, source)
    with pytest.raises(DataError, match="its files changed since tokenization; re-run `almr data tokenize`"):
        plan()
    shutil.rmtree(tmp_path / "raw")  # the shards were copied to a machine without the raw files
    assert not files_changed(manifest, source)
    assert plan().hash == before.hash
