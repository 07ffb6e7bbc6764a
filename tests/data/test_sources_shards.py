"""Shard format round trip (ours, the spec, Megatron's reader), tokenization, manifests and bad input."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import zstandard
from data_helpers import corpus, write_jsonl
from transformers import AutoTokenizer

from almr.data.config import DataConfig
from almr.data.shards import IndexedShard, ShardWriter
from almr.data.sources import iter_texts
from almr.data.tokenize import tokenize_sources
from almr.errors import DataError


def _data(tok: Path, root: Path, sources: list[dict], **kw: object) -> DataConfig:
    return DataConfig(tokenizer=str(tok), shard_dir=str(root / "shards"), workers=1, sources=sources, **kw)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_shard_round_trip_against_spec_and_megatron(tmp_path: Path, dtype: type) -> None:
    docs = [np.arange(n, dtype=dtype) + 7 * n for n in (3, 1, 5, 2)]
    with ShardWriter(tmp_path / "s", dtype) as w:
        w.add(np.concatenate(docs[:2]), np.array([3, 1]))
        w.add(np.concatenate(docs[2:]), np.array([5, 2]))
        w.commit()
    raw = (tmp_path / "s.idx").read_bytes()
    # the MMIDIDX layout, field by field
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<QBQQ", raw[9:34]) == (1, 8 if dtype is np.uint16 else 4, 4, 5)
    assert np.frombuffer(raw, np.int32, 4, 34).tolist() == [3, 1, 5, 2]
    size = np.dtype(dtype).itemsize
    assert np.frombuffer(raw, np.int64, 4, 50).tolist() == [0, 3 * size, 4 * size, 9 * size]
    assert np.frombuffer(raw, np.int64, 5, 82).tolist() == [0, 1, 2, 3, 4]
    assert len(raw) == 82 + 40
    ours = IndexedShard(tmp_path / "s")
    assert ours.contiguous() and ours.dtype == np.dtype(dtype)
    assert [ours[i].tolist() for i in range(4)] == [d.tolist() for d in docs]
    # imported here: megatron-core is a dev extra, slow to import, that only these two tests use
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    theirs = IndexedDataset(str(tmp_path / "s"))
    assert len(theirs) == 4
    assert [theirs[i].tolist() for i in range(4)] == [d.tolist() for d in docs]
    assert theirs.document_indices.tolist() == [0, 1, 2, 3, 4]


def test_megatron_written_shard_reads(tmp_path: Path) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # a dev extra, as above

    builder = IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for doc in ([5, 6, 7], [8], [9, 10]):
        builder.add_item(torch.tensor(doc))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    shard = IndexedShard(tmp_path / "m")
    assert [shard[i].tolist() for i in range(3)] == [[5, 6, 7], [8], [9, 10]]
    assert shard.tokens.tolist() == [5, 6, 7, 8, 9, 10]


def test_uncommitted_shard_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "s", np.uint16) as w:
        w.add(np.arange(4, dtype=np.uint16), np.array([4]))
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_formats_stream_the_same_texts(tmp_path: Path) -> None:
    texts = corpus("en", 7) + corpus("zh", 5)
    write_jsonl(tmp_path / "a.jsonl", texts)
    lines = (tmp_path / "a.jsonl").read_bytes()
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(pa.table({"body": texts}), tmp_path / "d.parquet", row_group_size=4)
    (tmp_path / "txt").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "txt" / f"{i:03d}.txt").write_text(t, encoding="utf-8")
    for pattern, field in (("a.jsonl", "text"), ("b.jsonl.gz", "text"), ("c.jsonl.zst", "text"),
                           ("d.parquet", "body"), ("txt", "text")):
        assert list(iter_texts([str(tmp_path / pattern)], text_field=field)) == texts, pattern


def test_tokenize_manifest_and_skip_when_unchanged(tmp_path: Path, tokenizer_dir: Path) -> None:
    texts = corpus("zh", 30)
    write_jsonl(tmp_path / "zh.jsonl", texts)
    data = _data(tokenizer_dir, tmp_path, [{"name": "zh", "language": "zh", "train": [str(tmp_path / "zh.jsonl")]}])
    (manifest,) = tokenize_sources(data, progress=False, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    expected = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    shard = IndexedShard(tmp_path / "shards/zh/train")
    assert [shard[i].tolist() for i in range(len(shard))] == expected
    train = manifest["splits"]["train"]
    assert train["documents"] == 30 and train["tokens"] == sum(map(len, expected))
    assert 0.5 < train["chinese_share"] < 1.0 and manifest["dtype"] == "uint16"
    mtime = (tmp_path / "shards/zh/train.bin").stat().st_mtime_ns
    logs: list[str] = []
    tokenize_sources(data, progress=False, log=logs.append)
    assert "up to date" in logs[0] and (tmp_path / "shards/zh/train.bin").stat().st_mtime_ns == mtime
    write_jsonl(tmp_path / "zh.jsonl", texts[:10])  # a changed source is redone
    (manifest,) = tokenize_sources(data, progress=False, log=lambda m: None)
    assert manifest["splits"]["train"]["documents"] == 10


def test_parallel_processes_give_identical_shards(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "en.jsonl", corpus("en", 200))
    src = [{"name": "en", "train": [str(tmp_path / "en.jsonl")]}]
    one = _data(tokenizer_dir, tmp_path / "one", src, chunk_documents=16)
    two = _data(tokenizer_dir, tmp_path / "two", src, chunk_documents=16).model_copy(update={"workers": 2})
    m1 = tokenize_sources(one, progress=False, log=lambda m: None)[0]
    m2 = tokenize_sources(two, progress=False, log=lambda m: None)[0]
    assert m1["splits"] == m2["splits"]
    for split in ("train.bin", "train.idx"):
        assert (tmp_path / "one/shards/en" / split).read_bytes() == (tmp_path / "two/shards/en" / split).read_bytes()


BAD_CASES = [
    ('{"text": "ok"}\n{"text": "broken\n', "bad.jsonl:2: malformed JSON"),
    ('{"text": "ok"}\n{"body": "x"}\n', "bad.jsonl:2: no field 'text' (fields: body)"),
    ('{"text": "ok"}\n{"text": 5}\n', "bad.jsonl:2: field 'text' is a int, not a string"),
    ('{"text": "ok"}\n[1, 2]\n', "bad.jsonl:2: record is a list, not a JSON object"),
    (b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "bad.jsonl:2: non-UTF-8 bytes"),
]


@pytest.mark.parametrize(("content", "message"), BAD_CASES)
def test_bad_record_stops_or_is_skipped_and_counted(
    tmp_path: Path, tokenizer_dir: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    write_jsonl(tmp_path / "good.jsonl", ["fine text"] * 3)
    src = [{"name": "s", "train": [str(tmp_path / "good.jsonl"), str(path)]}]
    with pytest.raises(DataError, match="skip_bad_records") as err:
        tokenize_sources(_data(tokenizer_dir, tmp_path, src), progress=False, log=lambda m: None)
    assert message in str(err.value)
    assert not (tmp_path / "shards/s/manifest.json").exists()
    assert not list((tmp_path / "shards/s").glob("*.bin"))  # no half-written shard under a final name
    logs: list[str] = []
    (manifest,) = tokenize_sources(_data(tokenizer_dir, tmp_path, src, skip_bad_records=True), progress=False,
                                   log=logs.append)
    bad = manifest["splits"]["train"]["bad_records"]
    assert bad["count"] == 1 and message in bad["examples"][0] and message in logs[0]
    assert manifest["splits"]["train"]["documents"] == 4


def test_empty_file_and_empty_source(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    write_jsonl(tmp_path / "good.jsonl", ["fine"])
    src = [{"name": "s", "train": [str(tmp_path / "good.jsonl"), str(tmp_path / "empty.jsonl")]}]
    with pytest.raises(DataError, match=r"empty\.jsonl: empty file: no records"):
        tokenize_sources(_data(tokenizer_dir, tmp_path, src), progress=False, log=lambda m: None)
    (manifest,) = tokenize_sources(_data(tokenizer_dir, tmp_path, src, skip_bad_records=True), progress=False,
                                   log=lambda m: None)
    assert manifest["splits"]["train"]["bad_records"]["by_reason"] == {"empty file": 1}
    only_empty = [{"name": "e", "train": [str(tmp_path / "empty.jsonl")]}]
    with pytest.raises(DataError, match="source e \\(train\\): no documents"):
        tokenize_sources(_data(tokenizer_dir, tmp_path, only_empty, skip_bad_records=True), progress=False,
                         log=lambda m: None)


def test_parquet_missing_column_and_non_utf8_txt(tmp_path: Path, tokenizer_dir: Path) -> None:
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "p.parquet")
    src = [{"name": "p", "train": [str(tmp_path / "p.parquet")]}]
    with pytest.raises(DataError, match=r"p\.parquet: no column 'text' \(columns: body\)"):
        tokenize_sources(_data(tokenizer_dir, tmp_path, src), progress=False, log=lambda m: None)
    (tmp_path / "t").mkdir()
    (tmp_path / "t/x.txt").write_bytes(b"line one\nline \xc3\x28 two\n")
    src = [{"name": "t", "train": [str(tmp_path / "t")]}]
    with pytest.raises(DataError, match=r"x\.txt:2: non-UTF-8 bytes"):
        tokenize_sources(_data(tokenizer_dir, tmp_path, src), progress=False, log=lambda m: None)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing-here\.jsonl: no file matches"):
        list(iter_texts([str(tmp_path / "nothing-here.jsonl")]))
    bad = tmp_path / "x.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"text": "a"}\n' * 50)[:-12])
    with pytest.raises(DataError, match=r"x\.jsonl\.gz: cannot read the file"):
        list(iter_texts([str(bad)]))


def test_manifest_is_json(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", ["x y z"])
    tokenize_sources(_data(tokenizer_dir, tmp_path, [{"name": "a", "train": [str(tmp_path / "a.jsonl")]}]),
                     progress=False, log=lambda m: None)
    manifest = json.loads((tmp_path / "shards/a/manifest.json").read_text())
    assert manifest["tokenizer"]["eos_id"] == 0 and manifest["version"] == 1


def test_a_second_tokenizer_in_the_same_process_is_used(tmp_path: Path, tokenizer_dir: Path, small_world: Path) -> None:
    """In-process tokenization keeps its tokenizer between calls; another tokenizer must replace it."""
    texts = corpus("zh", 20)
    write_jsonl(tmp_path / "zh.jsonl", texts)
    src = [{"name": "zh", "language": "zh", "train": [str(tmp_path / "zh.jsonl")]}]
    for tok_dir, out in ((tokenizer_dir, "first"), (small_world / "tokenizer", "second")):
        tokenize_sources(_data(tok_dir, tmp_path / out, src), progress=False, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")
    # the world's tokenizer starts a text with BOS (Llama-3's template): so do its documents (data.add_bos)
    expected = [tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for t in texts]
    shard = IndexedShard(tmp_path / "second/shards/zh/train")
    assert [shard[i].tolist() for i in range(len(shard))] == expected
