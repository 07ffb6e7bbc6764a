"""Vocabulary extension: new tokens compose with the base's merges, special ids stay, old-token
logits stay, new rows follow the stated rule, shards are rebuilt for the new tokenizer."""

import json
from pathlib import Path

import pytest
import torch

from almr.config import AlmrConfig
from almr.errors import ConfigError, DataError
from almr.vocab.extend import extend_vocabulary
from almr.vocab.report import character_share, report
from worlds import save_world_model


def world_config(world: Path, model: Path, out: Path, **vocab: object) -> AlmrConfig:
    sources = [{"name": lang, "language": lang, "train": [str(world / f"corpus/{lang}/train.jsonl")],
                "valid": [str(world / f"corpus/{lang}/valid.jsonl")]} for lang in ("en", "zh")]  # fmt: skip
    return AlmrConfig.model_validate({
        "model": {"name_or_path": str(model)}, "data": {"tokenizer": str(model), "sources": sources,
                                                         "shard_dir": str(out / "shards")},
        "mixture": {"almr": 0.5}, "vocab": {"out_dir": str(out / "ext"), "new_tokens": 120, **vocab},
    })  # fmt: skip


@pytest.fixture(scope="module")
def extended(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[AlmrConfig, object, Path]:
    tmp = tmp_path_factory.mktemp("vocab")
    base = save_world_model(small_world, tmp / "base")
    config = world_config(small_world, base, tmp)
    return config, extend_vocabulary(config, log=lambda m: None), base


def test_special_ids_stay_and_text_without_new_merges_encodes_as_before(extended: tuple) -> None:
    from transformers import AutoTokenizer

    config, extension, base_dir = extended
    base, ext = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(extension.out_dir)
    assert len(ext) == len(base) + 120 == extension.size
    assert ext.all_special_tokens == base.all_special_tokens and ext.all_special_ids == base.all_special_ids
    chat = [{"role": "user", "content": "你好"}]
    assert ext.apply_chat_template(chat, tokenize=False) == base.apply_chat_template(chat, tokenize=False)
    texts = [
        json.loads(line)["text"]
        for lang in ("en", "zh")
        for line in Path(config.data.sources[0].valid[0].replace("/en/", f"/{lang}/")).read_text().splitlines()
    ]
    untouched = 0
    for text in texts:
        ids = ext(text, add_special_tokens=False)["input_ids"]
        assert ext.decode(ids) == text  # lossless either way
        if max(ids) < extension.base_size:  # no new merge applied: exactly the base's ids
            assert ids == base(text, add_special_tokens=False)["input_ids"]
            untouched += 1
    assert 0 < untouched < len(texts)


def test_resized_model_keeps_old_logits_and_inits_new_rows_by_the_rule(extended: tuple) -> None:
    from transformers import AutoModelForCausalLM

    _, extension, base_dir = extended
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ext = AutoModelForCausalLM.from_pretrained(extension.out_dir).eval()
    ids = torch.tensor([[7, 100, 250, 3, 699, 42]])
    with torch.no_grad():
        old, new = base(ids).logits, ext(ids).logits
    assert new.shape[-1] == extension.size
    assert torch.equal(new[..., : extension.base_size], old)
    emb_base, emb_ext = base.get_input_embeddings().weight, ext.get_input_embeddings().weight
    for i, sub in enumerate(extension.sub_tokens):
        assert len(sub) >= 2  # byte-level: every new token replaces at least two old ones
        assert torch.allclose(emb_ext[extension.base_size + i], emb_base[sub].mean(dim=0))


def test_the_report_measures_compression_and_growth(extended: tuple) -> None:
    config, extension, base_dir = extended
    text = report(config, extension, base_dir)
    payload = json.loads((extension.out_dir / "vocab_report.json").read_text())
    rows = {r["source"]: r for r in payload["rows"]}
    assert rows["zh"]["tokens_extended"] < rows["zh"]["tokens_base"]  # Chinese got shorter
    assert rows["en"]["tokens_extended"] <= rows["en"]["tokens_base"]
    assert rows["zh"]["distinct_new_tokens"] > 0 and rows["zh"]["words"] is None and rows["en"]["words"] > 0
    assert payload["embedding_growth"] == {"parameters": 120 * 128, "bytes": 120 * 128 * 4, "hidden_size": 128,
                                           "matrices": 1}  # fmt: skip
    assert "| zh | zh | valid |" in text and "of characters with the base tokenizer" in text
    assert character_share(0.5, 2.0, 1.0) == pytest.approx(2 / 3)


def test_init_rule_and_new_tokens_on_a_hand_made_bpe(tmp_path: Path) -> None:
    """Character BPE over {a, b, c, ab}; a corpus of "abc"/"abcd": the first new tokens are the
    unseen character d, then abc (= ab + c), then abcd; abc's row is the mean of ab's and c's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "c": 4, "ab": 5}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    base = tmp_path / "base"
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(base)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=6, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(base)  # fmt: skip
    corpus = tmp_path / "zh.jsonl"
    corpus.write_text("".join(json.dumps({"text": "abc abc abcd " * 5}) + "\n" for _ in range(4)))
    config = AlmrConfig.model_validate({
        "model": {"name_or_path": str(base)}, "data": {"tokenizer": str(base), "sources": [
            {"name": "zh", "language": "zh", "train": [str(corpus)]}]},
        "vocab": {"out_dir": str(tmp_path / "ext"), "new_tokens": 3},
    })  # fmt: skip
    extension = extend_vocabulary(config, log=lambda m: None)
    assert extension.new_tokens == ["d", "abc", "abcd"] and extension.base_size == 6
    # the base cannot encode d at all (no unk token): d has no sub-tokens, abcd those of abc
    assert extension.sub_tokens == [[], [5, 4], [5, 4]]
    model = LlamaForCausalLM.from_pretrained(base).get_input_embeddings().weight
    grown = LlamaForCausalLM.from_pretrained(tmp_path / "ext").get_input_embeddings().weight
    assert torch.allclose(grown[6], model.mean(dim=0))  # d: nothing to average, so the mean of all rows
    assert torch.allclose(grown[7], (model[5] + model[4]) / 2)  # abc = ab + c
    assert torch.allclose(grown[8], (model[5] + model[4]) / 2)
    ext = PreTrainedTokenizerFast.from_pretrained(tmp_path / "ext")
    assert ext("abcd ab")["input_ids"] == [8, 5]


def test_bad_bases_and_corpora_are_refused(tmp_path: Path, small_world: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    base = save_world_model(small_world, tmp_path / "base")
    with pytest.raises(DataError, match=r"yields only \d+ new tokens .* not vocab\.new_tokens=100000"):
        extend_vocabulary(world_config(small_world, base, tmp_path, new_tokens=100000), log=lambda m: None)
    config = world_config(small_world, base, tmp_path)
    no_zh = config.model_copy(update={"mixture": config.mixture.model_copy(update={"additional_language": "ja"})})
    with pytest.raises(ConfigError, match=r"none is \(sources: en=en, zh=zh\)"):
        extend_vocabulary(no_zh, log=lambda m: None)
    word_level = tmp_path / "wordlevel"
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
                            unk_token="[UNK]").save_pretrained(word_level)  # fmt: skip
    wl = config.model_copy(update={"data": config.data.model_copy(update={"tokenizer": str(word_level)})})
    with pytest.raises(ConfigError, match=r"a WordLevel tokenizer; vocab extend supports BPE"):
        extend_vocabulary(wl, log=lambda m: None)


def test_shards_are_rebuilt_for_the_extended_tokenizer(extended: tuple) -> None:
    from almr.data.tokenize import tokenize_sources

    config, extension, _ = extended
    (before,) = tokenize_sources(config.data, ["zh"], progress=False, log=lambda m: None)
    data = config.data.model_copy(update={"tokenizer": str(extension.out_dir)})
    (after,) = tokenize_sources(data, ["zh"], progress=False, log=lambda m: None)
    assert after["tokenizer"]["fingerprint"] != before["tokenizer"]["fingerprint"]
    assert after["tokenizer"]["vocab_size"] == extension.size
    assert after["splits"]["train"]["tokens"] < before["splits"]["train"]["tokens"]


def test_two_studies_compare_per_character(extended: tuple, tmp_path: Path) -> None:
    """Two studies, one per tokenizer: the comparison converts each study's predicted losses to bits
    per character with tokens per character measured under its own tokenizer."""
    import math
    import subprocess
    import sys

    from tokenizers import Tokenizer

    from almr.config import dump_config

    config, extension, base_dir = extended
    sweeps = []
    for label, tokenizer, loss in (("base", base_dir, 3.0), ("extended", extension.out_dir, 4.0)):
        sweep = tmp_path / label
        (sweep / "frontier").mkdir(parents=True)
        spec = config.model_copy(update={"data": config.data.model_copy(update={"tokenizer": str(tokenizer)})})
        (sweep / "sweep.yaml").write_text(dump_config(spec))
        rec = {"almr": 0.5, "lr": 1e-3, "metric": {"mean": 40.0, "std": 1.0},
               "objective": {"target": "metric", "sense": "maximize", "mean": 40.0, "std": 1.0},
               "val_loss": {"en": {"mean": 2.0, "std": 0.1}, "zh": {"mean": loss, "std": 0.1}}}  # fmt: skip
        (sweep / "frontier" / "frontier.json").write_text(json.dumps({"recommendation": rec}))
        sweeps.append(sweep)
    command = [sys.executable, "-m", "almr.cli", "compare", *map(str, sweeps), "--labels", "base,extended"]
    done = subprocess.run([*command, "--out", str(tmp_path / "cmp")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sides = {s["label"]: s for s in json.loads((tmp_path / "cmp" / "comparison.json").read_text())}
    texts = [json.loads(line)["text"] for line in Path(config.data.sources[1].valid[0]).read_text().splitlines()]
    for label, tokenizer, loss in (("base", base_dir, 3.0), ("extended", extension.out_dir, 4.0)):
        tok = Tokenizer.from_file(str(Path(tokenizer) / "tokenizer.json"))
        per_char = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts) / sum(map(len, texts))
        assert sides[label]["tokens_per_character"]["zh"] == pytest.approx(per_char)
        assert sides[label]["bits_per_character"]["zh"] == pytest.approx(loss * per_char / math.log(2))
    assert sides["extended"]["almr_in_characters"] > sides["base"]["almr_in_characters"]
    assert "| zh: bits/character |" in done.stdout
