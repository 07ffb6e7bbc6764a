"""data.add_bos (the tokenizer's template by default, recorded in the manifest), long documents
encoded in pieces with the ids of the whole and bounded memory, and user text in messages
printed as it is (no rich markup)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import corpus, write_jsonl
from transformers import AutoTokenizer

from almr.data import tokenize as tokenize_module
from almr.data.config import DataConfig
from almr.data.manifest import read_manifest, tokenizer_info
from almr.data.shards import IndexedShard
from almr.data.tokenize import split_for_encoding, tokenize_sources
from almr.errors import DataError


def _data(tok: Path, root: Path, **options: object) -> DataConfig:
    sources = [{"name": "zh", "language": "zh", "train": [str(root / "zh.jsonl")]}]
    return DataConfig(tokenizer=str(tok), shard_dir=str(root / "shards"), workers=1, sources=sources, **options)


def _documents(root: Path) -> list[list[int]]:
    shard = IndexedShard(root / "shards/zh/train")
    return [shard[i].tolist() for i in range(len(shard))]


@pytest.mark.parametrize("add_bos", [None, True, False])
def test_add_bos_defaults_to_the_tokenizer_template_and_the_manifest_says_which(
    tmp_path: Path, small_world: Path, tokenizer_dir: Path, add_bos: bool | None
) -> None:
    texts = corpus("zh", 12)
    write_jsonl(tmp_path / "zh.jsonl", texts)
    world_tok = small_world / "tokenizer"  # Llama-3's template: <|begin_of_text|> first
    (manifest,) = tokenize_sources(_data(world_tok, tmp_path, add_bos=add_bos), progress=False, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(world_tok)
    with_bos = add_bos is not False
    assert manifest["add_bos"] is with_bos and manifest["bos_id"] == (tok.bos_token_id if with_bos else None)
    expected = [tok(t, add_special_tokens=with_bos)["input_ids"] + [tok.eos_token_id] for t in texts]
    assert expected[0][0] == (tok.bos_token_id if with_bos else expected[0][0])
    assert _documents(tmp_path) == expected
    assert manifest["splits"]["train"]["tokens"] == sum(map(len, expected))


def test_add_bos_is_off_for_a_tokenizer_without_bos_and_changing_it_re_tokenizes(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    write_jsonl(tmp_path / "zh.jsonl", corpus("zh", 5))
    assert tokenizer_info(str(tokenizer_dir)).template_bos is False
    (first,) = tokenize_sources(_data(tokenizer_dir, tmp_path), progress=False, log=lambda m: None)
    assert first["add_bos"] is False
    with pytest.raises(DataError, match=r"data.add_bos=true but the tokenizer .* has no BOS token"):
        tokenize_sources(_data(tokenizer_dir, tmp_path, add_bos=True), progress=False, log=lambda m: None)
    assert read_manifest(tmp_path / "shards", "zh") == first  # refused before anything was touched


def test_a_long_document_is_encoded_in_pieces_with_the_ids_of_the_whole(
    tmp_path: Path, small_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = " ".join(corpus("en", 150) + corpus("zh", 150) + ["x  y\n\nz", "数字123和abc"] * 40)
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")
    whole = tok(text, add_special_tokens=False)["input_ids"]
    pieces = split_for_encoding(text, lambda t: tok(t, add_special_tokens=False)["input_ids"], "a.jsonl", 2000)
    assert "".join(pieces) == text and max(map(len, pieces)) <= 2000 and len(pieces) >= len(text) // 2000
    assert [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]] == whole

    write_jsonl(tmp_path / "zh.jsonl", [text, "short one"])
    monkeypatch.setattr(tokenize_module, "MAX_ENCODE_CHARS", 3000)
    tokenize_sources(_data(small_world / "tokenizer", tmp_path), progress=False, log=lambda m: None)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert _documents(tmp_path) == [[bos, *whole, eos], tok("short one")["input_ids"] + [eos]]


def test_a_document_that_cannot_be_cut_is_refused_with_its_file(tmp_path: Path, tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = " ".join(corpus("en", 200))
    marked = lambda t: [0] + tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731 (marks every text's start)
    with pytest.raises(DataError) as err:
        split_for_encoding(text, marked, "big.jsonl", 4000)
    assert str(err.value) == (
        f"big.jsonl: a document of {len(text):,} characters has no place within 4,000 characters where it can be "
        "cut without changing its tokens (this tokenizer marks the start of every text); split it into smaller "
        "documents"
    )


MEASURE = """
import resource, sys, time
from pathlib import Path
from almr.data.config import DataConfig
from almr.data import tokenize
from almr.data.tokenize import tokenize_sources
if sys.argv[3] == "unbounded":
    tokenize.MAX_ENCODE_CHARS = 10**12  # the encoding of the whole document at once, as before
root = Path(sys.argv[1])
data = DataConfig(tokenizer=sys.argv[2], shard_dir=str(root / sys.argv[3]), workers=1,
                  sources=[{"name": "big", "train": [str(root / "big.jsonl")]}])
start = time.perf_counter()
(manifest,) = tokenize_sources(data, progress=False, log=lambda m: None)
print(manifest["splits"]["train"]["tokens"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
      round(time.perf_counter() - start, 1))
"""


@pytest.mark.slow
def test_a_50_mb_single_line_document_tokenizes_in_bounded_memory(tmp_path: Path, tokenizer_dir: Path) -> None:
    words = " ".join(corpus("en", 3000) + corpus("zh", 3000))
    text = (words + " ") * (50_000_000 // (len(words.encode()) + 1) + 1)
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert (tmp_path / "big.jsonl").stat().st_size > 50_000_000
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), str(tokenizer_dir), "bounded"],
                         capture_output=True, text=True, env=env, check=True).stdout.split()  # fmt: skip
    tokens, peak_mb = int(out[0]), int(out[1])
    print(f"50 MB document: {tokens:,} tokens, peak RSS {peak_mb} MB, {out[2]} s")
    assert peak_mb < 1500
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)  # the ids of the whole, piece by piece
    probe = text[:3_000_000]
    pieces = split_for_encoding(probe, lambda t: tok(t, add_special_tokens=False)["input_ids"], "big.jsonl")
    joined = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    assert joined == tok(probe, add_special_tokens=False)["input_ids"]


def test_user_text_in_messages_is_printed_as_it_is(tmp_path: Path, tokenizer_dir: Path) -> None:
    folder = tmp_path / "corpus [draft]"
    lines = [json.dumps({"text": t}) for t in corpus("en", 5)] + [json.dumps({"[/b]": "x"})]
    (folder / "a.jsonl").parent.mkdir()
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "c.yaml"
    data = {"tokenizer": str(tokenizer_dir), "shard_dir": str(tmp_path / "s [x]"), "skip_bad_records": True,
            "sources": [{"name": "en", "train": [str(folder)]}]}  # fmt: skip
    config.write_text(json.dumps({"data": data}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "50"}
    done = subprocess.run([sys.executable, "-m", "almr.cli", "data", "tokenize", str(config)], capture_output=True,
                          text=True, env=env)  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert f"warning: skipped {folder}/a.jsonl:6: no field 'text' (fields: [/b]); set the source's text_field\n" in (
        done.stdout
    )
    assert done.stdout.endswith("en/train: 5 documents, 228 tokens, %Chinese 0.0, bad records 1\n")
    strict = subprocess.run([sys.executable, "-m", "almr.cli", "data", "tokenize", str(config), "--set",
                             "data.skip_bad_records=false"], capture_output=True, text=True, env=env)  # fmt: skip
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.splitlines()[-1] == (
        f"error: {folder}/a.jsonl:6: no field 'text' (fields: [/b]); set the source's text_field (set "
        "data.skip_bad_records=true to skip and count such records)"
    )
