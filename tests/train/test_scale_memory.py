"""Memory that does not grow with the corpus or the model (issue 17, items 4 and 5): the shard
writer spools document lengths to its index, contiguity is decided at tokenize time and read
from the manifest (old manifests still load), validation reads a capped, evenly spread selection
of held-out sequences lazily from the memory map with the losses of the in-memory path, and the
Hugging Face export streams one tensor at a time, writing the files `save_pretrained` writes,
byte for byte, from one process or from two gloo processes of a sharded model."""

import filecmp
import itertools
import json
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from almr.data import shards
from almr.data.config import BatchConfig, DataConfig, MixtureConfig
from almr.data.loader import HeldOut, PackedLoader, held_out, validation_sequences
from almr.data.manifest import read_manifest, write_manifest
from almr.data.plan import Plan, build_plan
from almr.data.shards import IndexedShard, ShardWriter
from almr.data.tokenize import tokenize_sources
from almr.errors import DataError
from almr.train import checkpoint as ckpt
from almr.train.parallel import Distributed
from almr.train.validate import Validator, selection
from torchrun_launch import launch
from train_toys import make_model_dir

os.environ["HF_HUB_OFFLINE"] = "1"
TESTS = Path(__file__).parents[1]
VOCAB, SEQ = 256, 16
ONE = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), mesh=None)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- shard writer


def test_shard_writer_spools_lengths_and_writes_megatrons_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: E501
    monkeypatch.setattr(shards, "_CHUNK", 5)  # offsets derived and checked across several chunks
    lengths = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6], dtype=np.int32)
    tokens = np.arange(lengths.sum(), dtype=np.uint16)
    cuts = [0, 4, 11, 23]  # three add() calls
    with ShardWriter(tmp_path / "s", np.uint16) as writer:
        for a, b in itertools.pairwise(cuts):
            writer.add(tokens[lengths[:a].sum() : lengths[:b].sum()], lengths[a:b])
        writer.commit()
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1].astype(np.int64) * 2)])
    expected = (b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 23, 24) + lengths.tobytes() + pointers.tobytes()
                + np.arange(24, dtype=np.int64).tobytes())  # fmt: skip
    assert (tmp_path / "s.idx").read_bytes() == expected
    shard = IndexedShard(tmp_path / "s")
    assert shard.contiguous() and shard[5].tolist() == list(range(14, 23))
    moved = bytearray(expected)  # a gap before document 12 (in the third chunk): not contiguous
    at = 34 + 4 * 23 + 8 * 12
    moved[at : at + 8] = struct.pack("<q", int(pointers[12]) + 2)
    (tmp_path / "s.idx").write_bytes(bytes(moved))
    assert not IndexedShard(tmp_path / "s").contiguous()


# ---------------------------------------------------------------------------- manifest contiguity


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_model_dir(root / "model", vocab=VOCAB)  # its word-level tokenizer: token i is written t{i}
    rng = np.random.default_rng(0)
    for split, docs in (("train", 120), ("valid", 60)):
        rows = [" ".join(f"t{i}" for i in rng.integers(3, VOCAB, int(rng.integers(4, 12)))) for _ in range(docs)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return root


def _data(root: Path, shard_dir: Path) -> DataConfig:
    files = {split: [str(root / f"{split}.jsonl")] for split in ("train", "valid")}
    source = {"name": "en", "language": "en", **files}
    return DataConfig(tokenizer=str(root / "model"), shard_dir=str(shard_dir), workers=1, sources=[source])


def _plan(data: DataConfig) -> Plan:
    batch = BatchConfig(micro_batch_size=2, global_batch_size=4, seq_len=SEQ)
    return build_plan(data, MixtureConfig(almr=0.0, seed=3), batch, token_budget=8 * 4 * SEQ)


def test_contiguity_is_recorded_at_tokenize_time_and_read_from_the_manifest(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(corpus_dir, tmp_path / "shards")
    (manifest,) = tokenize_sources(data, progress=False, log=lambda m: None)
    assert manifest["splits"]["train"]["contiguous"] is True and manifest["splits"]["valid"]["contiguous"] is True
    plan = _plan(data)
    expected = [b["input_ids"] for b in PackedLoader(plan, 2)]

    def no_index_scan(self: IndexedShard) -> bool:
        raise AssertionError(f"{self.prefix}: the loader re-checked an index its manifest describes")

    with monkeypatch.context() as patch:  # the trainer's start reads the manifest, not the index
        patch.setattr(IndexedShard, "contiguous", no_index_scan)
        assert all(torch.equal(a, b["input_ids"]) for a, b in zip(expected, PackedLoader(plan, 2), strict=True))
        assert len(held_out(plan, "en")) == plan.sources[0].valid_sequences

    folder = tmp_path / "shards/en"
    manifest["splits"]["train"]["contiguous"] = False
    write_manifest(folder, manifest)
    with pytest.raises(DataError, match="documents are not stored back to back"):
        PackedLoader(plan, 2)


def test_an_old_manifest_still_loads_and_tokenize_records_its_contiguity(corpus_dir: Path, tmp_path: Path) -> None:
    data = _data(corpus_dir, tmp_path / "shards")
    tokenize_sources(data, progress=False, log=lambda m: None)
    folder = tmp_path / "shards/en"
    old = read_manifest(tmp_path / "shards", "en")
    for info in old["splits"].values():
        del info["contiguous"]
    write_manifest(folder, old)
    plan = _plan(data)
    with pytest.warns(UserWarning, match=r"does not record whether its train documents lie back to back.*almr data "
                                         r"tokenize` once \(nothing is re-tokenized\)"):  # fmt: skip
        loaded = [b["input_ids"] for b in PackedLoader(plan, 2)]
    assert len(loaded) == plan.total_sequences // 2  # checked on the spot, and it loads
    mtime = (folder / "train.bin").stat().st_mtime_ns
    logs: list[str] = []
    tokenize_sources(data, progress=False, log=logs.append)
    assert logs == [f"en: up to date ({old['splits']['train']['tokens']:,} train tokens); recorded that its train, "
                    "valid documents lie back to back"]  # fmt: skip
    again = read_manifest(tmp_path / "shards", "en")
    assert again["splits"]["train"]["contiguous"] is True and again["splits"]["valid"]["contiguous"] is True
    assert (folder / "train.bin").stat().st_mtime_ns == mtime  # nothing re-tokenized


# ---------------------------------------------------------------------------- validation


def test_selection_spreads_evenly_and_depends_on_the_set_size_alone() -> None:
    assert selection(23, 5, np.arange(5)).tolist() == [0, 4, 9, 13, 18]
    assert selection(23, None, np.arange(23)).tolist() == list(range(23))
    assert selection(4, 512, np.arange(4)).tolist() == [0, 1, 2, 3]  # a cap above the set: every sequence
    picked = selection(10**9, 512, np.arange(512))
    assert len(set(picked.tolist())) == 512 and picked[-1] < 10**9


def _tiny_model(root: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(root / "model"), dtype=torch.float32).eval()


def test_capped_validation_reads_lazily_and_keeps_the_in_memory_losses(corpus_dir: Path, tmp_path: Path) -> None:
    data = _data(corpus_dir, tmp_path / "shards")
    tokenize_sources(data, progress=False, log=lambda m: None)
    plan = _plan(data)
    lazy = held_out(plan, "en")
    total = len(lazy)
    assert isinstance(lazy.tokens, np.memmap) and lazy.tokens.dtype == np.uint16  # the shard as stored
    assert total == plan.sources[0].valid_sequences and total > 7
    model = _tiny_model(corpus_dir)
    whole = validation_sequences(plan, "en")  # today's path: every sequence in memory as int64
    chosen = torch.from_numpy(selection(total, 7, np.arange(7)))
    in_memory = {"en": (whole["input_ids"][chosen], whole["labels"][chosen])}
    capped = Validator({"en": lazy}, 3, 1, ONE, max_sequences=7)(model)
    assert capped == Validator(in_memory, 3, 1, ONE)(model)  # the same sequences, the same micro-batches: equal
    with torch.no_grad():
        x, y = in_memory["en"]
        reference = torch.nn.functional.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten()).item()
    assert capped["en"] == pytest.approx(reference, rel=1e-6)
    uncapped = Validator({"en": lazy}, 3, 1, ONE)(model)
    assert uncapped == Validator({"en": (whole["input_ids"], whole["labels"])}, 3, 1, ONE)(model)


def test_validation_memory_does_not_grow_with_the_held_out_set(tmp_path: Path, corpus_dir: Path) -> None:
    tokens = np.random.default_rng(1).integers(3, VOCAB, 400_000).astype(np.uint16)  # 25k sequences of 16
    with ShardWriter(tmp_path / "valid", np.uint16) as writer:
        writer.add(tokens, np.full(400, 1000))
        writer.commit()
    held = HeldOut(IndexedShard(tmp_path / "valid"), SEQ)
    model = _tiny_model(corpus_dir)
    validator = Validator({"en": held}, 4, 1, ONE, max_sequences=16)
    validator(model)  # first call: lazy imports and caches out of the measurement
    tracemalloc.start()
    try:
        validator(model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole_int64 = 2 * len(held) * SEQ * 8  # what loading the set as input_ids + labels held: 6.4 MB
    assert peak < whole_int64 // 50, f"{peak:,} bytes allocated scoring 16 sequences"


# ---------------------------------------------------------------------------- export


def _tied_model_dir(path: Path) -> Path:
    make_model_dir(path, vocab=VOCAB)
    config = json.loads((path / "config.json").read_text())
    config.update(tie_word_embeddings=True)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def _trained_looking(source: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    return model


def _same_files(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    return [n for n in names if not filecmp.cmp(a / n, b / n, shallow=False)]


def test_the_streamed_export_is_save_pretrained_byte_for_byte(tmp_path: Path) -> None:
    model = _trained_looking(_tied_model_dir(tmp_path / "tied"))
    for dtype in (torch.float32, torch.bfloat16):
        ckpt.export_hf(model, None, tmp_path / f"streamed-{dtype}", True, dtype=dtype, max_shard_size="40KB")
        ckpt._export_gathered(model, None, tmp_path / f"gathered-{dtype}", True, dtype=dtype, max_shard_size="40KB")
        streamed = tmp_path / f"streamed-{dtype}/hf"
        assert len(list(streamed.glob("model-*.safetensors"))) >= 3  # several shards, with an index
        assert _same_files(streamed, tmp_path / f"gathered-{dtype}/hf") == []
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the live model is untouched


def test_a_model_transformers_converts_on_save_goes_through_save_pretrained(tmp_path: Path) -> None:
    from transformers import Qwen3MoeConfig

    config = Qwen3MoeConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                            num_experts=4, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8)  # fmt: skip
    torch.manual_seed(0)
    moe = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = ckpt.get_model_state_dict(moe)
    assert "model.layers.0.mlp.experts.gate_up_proj" in state  # fused in memory, per expert on disk
    assert ckpt._saved_names(moe, state, torch.float32) is None
    ckpt.export_hf(moe, None, tmp_path / "export", True, dtype=torch.float32)
    ckpt._export_gathered(moe, None, tmp_path / "gathered", True, dtype=torch.float32, max_shard_size="5GB")
    assert _same_files(tmp_path / "export/hf", tmp_path / "gathered/hf") == []


_EXPORT_WORKER = """
import os, sys, torch, torch.distributed as dist
from pathlib import Path
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM
from almr.train import checkpoint as ckpt
dist.init_process_group("gloo")
model = AutoModelForCausalLM.from_pretrained({source!r}, dtype=torch.float32)
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
assert any(type(p).__name__ == "DTensor" for p in model.parameters())
ckpt.export_hf(model, None, Path({out!r}), dist.get_rank() == 0, dtype=torch.bfloat16, max_shard_size="40KB")
dist.destroy_process_group()
"""


def test_two_gloo_processes_export_the_one_process_files_in_parallel(tmp_path: Path) -> None:
    model = _trained_looking(_tied_model_dir(tmp_path / "tied"))
    model.save_pretrained(tmp_path / "trained")  # what both runs load: from_pretrained's key order, the tie
    script = tmp_path / "worker.py"
    script.write_text(_EXPORT_WORKER.format(source=str(tmp_path / "trained"), out=str(tmp_path / "two")))
    launch(str(script), timeout=180)

    one = AutoModelForCausalLM.from_pretrained(tmp_path / "trained", dtype=torch.float32)
    ckpt.export_hf(one, None, tmp_path / "one", True, dtype=torch.bfloat16, max_shard_size="40KB")
    two = tmp_path / "two/hf"
    assert len(list(two.glob("model-*.safetensors"))) >= 3
    assert _same_files(two, tmp_path / "one/hf") == []
    loaded = AutoModelForCausalLM.from_pretrained(two, dtype="auto").eval()
    reference = AutoModelForCausalLM.from_config(one.config, dtype=torch.bfloat16)
    reference.load_state_dict({key: value.to(torch.bfloat16) for key, value in one.state_dict().items()})
    x = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        assert loaded.dtype == torch.bfloat16 and torch.equal(loaded(x).logits, reference.eval()(x).logits)
