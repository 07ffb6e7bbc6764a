"""Helpers for the data-pipeline tests: a tiny byte-level BPE tokenizer and tiny corpora."""

import json
from pathlib import Path

EN = [
    "The quick brown fox jumps over the lazy dog number {i}.",
    "Paris is the capital of France; record {i} says so.",
    "Numbers like {i} and {i}{i} appear in English text.",
]
ZH = [
    "北京是中国的首都，第{i}条记录。",
    "今天天气很好，我们去公园散步{i}次。",
    "学习中文需要时间和耐心，例子{i}。",
]


def make_tokenizer(folder: Path, vocab_size: int = 400) -> Path:
    # imported here: transformers takes seconds to import, and the blend tests need no tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [t.format(i=i) for i in range(50) for t in EN + ZH]
    tok.train_from_iterator(corpus, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end_of_text|>").save_pretrained(folder)
    return folder


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def corpus(kind: str, n: int, offset: int = 0) -> list[str]:
    templates = ZH if kind == "zh" else EN
    return [templates[i % len(templates)].format(i=i + offset) * (1 + i % 4) for i in range(n)]
