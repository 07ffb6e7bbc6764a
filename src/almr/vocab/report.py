"""What an extension bought and costs: tokens per character (and per word where words are spaced)
of each source's held-out text under the base and the extended tokenizer, how many new tokens
that text uses, the embedding growth, and what an ALMR on tokens means in characters."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from almr.config import AlmrConfig
from almr.data.config import SourceConfig
from almr.data.sources import iter_texts
from almr.vocab.extend import Extension

UNSPACED = {"zh", "ja", "th", "lo", "km", "my"}  # scripts without spaces between words
SAMPLE_CHARACTERS = 2_000_000  # per source: enough for ratios to three digits, quick to encode


@dataclass
class Compression:
    source: str
    language: str
    split: str
    characters: int
    words: int | None
    tokens_base: int
    tokens_extended: int
    new_token_uses: int
    distinct_new_tokens: int

    @property
    def tokens_per_character(self) -> tuple[float, float]:
        return self.tokens_base / self.characters, self.tokens_extended / self.characters

    @property
    def gain(self) -> float:
        """How many times shorter the text is in extended tokens."""
        return self.tokens_base / self.tokens_extended


def _sample(source: SourceConfig) -> tuple[str, list[str]]:
    split, files = ("valid", source.valid) if source.valid else ("train", source.train)
    texts, left = [], SAMPLE_CHARACTERS
    for text in iter_texts(files, source.format, source.text_field):
        texts.append(text[:left])
        left -= len(texts[-1])
        if left <= 0:
            break
    return split, texts


def compression(config: AlmrConfig, extension: Extension, base_tokenizer: Path) -> list[Compression]:
    from tokenizers import Tokenizer

    base = Tokenizer.from_file(str(base_tokenizer / "tokenizer.json"))
    extended = Tokenizer.from_file(str(extension.out_dir / "tokenizer.json"))
    rows = []
    for source in config.data.sources:
        split, texts = _sample(source)
        if not texts:
            continue
        before = base.encode_batch_fast(texts, add_special_tokens=False)
        after = extended.encode_batch_fast(texts, add_special_tokens=False)
        new_ids = [i for enc in after for i in enc.ids if i >= extension.base_size]
        words = None if source.language in UNSPACED else sum(len(t.split()) for t in texts)
        rows.append(Compression(
            source.name, source.language, split, sum(map(len, texts)), words,
            sum(len(e.ids) for e in before), sum(len(e.ids) for e in after), len(new_ids), len(set(new_ids)),
        ))  # fmt: skip
    return rows


def embedding_growth(extension: Extension) -> dict[str, int]:
    """Parameters and bytes the new rows add (input embeddings, and the output matrix when untied)."""
    config = json.loads((extension.out_dir / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config", config)
    hidden = int(text["hidden_size"])
    matrices = 1 if text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)) else 2
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    width = 2 if dtype in ("bfloat16", "float16") else 4
    params = len(extension.new_tokens) * hidden * matrices
    return {"parameters": params, "bytes": params * width, "hidden_size": hidden, "matrices": matrices}


def character_share(almr: float, additional_chars_per_token: float, other_chars_per_token: float) -> float:
    """The share of characters that an ALMR (a share of tokens) gives."""
    additional = almr * additional_chars_per_token
    return additional / (additional + (1.0 - almr) * other_chars_per_token)


def report(config: AlmrConfig, extension: Extension, base_tokenizer: Path) -> str:
    """`vocab_report.md` (and `vocab_report.json`) in the extension's folder; returns the Markdown."""
    rows = compression(config, extension, base_tokenizer)
    growth = embedding_growth(extension)
    language = config.mixture.additional_language
    lines = [
        f"# Vocabulary extension: {len(extension.new_tokens):,} {language} tokens",
        "",
        f"Base: `{base_tokenizer}` ({extension.base_size:,} ids); extended: `{extension.out_dir}` "
        f"({extension.size:,} ids), trained on {extension.corpus_characters:,} characters in "
        f"{extension.seconds:.1f} s. Embedding growth: {growth['parameters']:,} parameters "
        f"({growth['bytes'] / 2**20:.1f} MiB; {growth['matrices']} matri{'x' if growth['matrices'] == 1 else 'ces'} "
        f"× {growth['hidden_size']}).",
        "",
        "| source | language | split | characters | tokens/char base | tokens/char extended | shorter by | "
        "tokens/word base | tokens/word extended | new-token uses | distinct new tokens |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        before, after = r.tokens_per_character
        per_word = f"{r.tokens_base / r.words:.3f} | {r.tokens_extended / r.words:.3f}" if r.words else "– | –"
        lines.append(f"| {r.source} | {r.language} | {r.split} | {r.characters:,} | {before:.3f} | {after:.3f} | "
                     f"{r.gain:.2f}× | {per_word} | {r.new_token_uses:,} | {r.distinct_new_tokens:,} |")  # fmt: skip
    added = [r for r in rows if r.language == language]
    others = [r for r in rows if r.language != language]
    if added and others:

        def chars_per_token(group: list[Compression], extended: bool) -> float:
            tokens = sum(r.tokens_extended if extended else r.tokens_base for r in group)
            return sum(r.characters for r in group) / tokens

        almr = config.mixture.almr if config.mixture.almr is not None else 0.5
        shares = [character_share(almr, chars_per_token(added, e), chars_per_token(others, e)) for e in (False, True)]
        lines += ["", f"ALMR {almr:.2f} (a share of tokens) is {shares[0]:.3f} of characters with the base tokenizer "
                  f"and {shares[1]:.3f} with the extended one: the same ALMR carries more {language} text after "
                  "extension."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    (extension.out_dir / "vocab_report.md").write_text(text, encoding="utf-8")
    payload = {"rows": [asdict(r) for r in rows], "embedding_growth": growth}
    (extension.out_dir / "vocab_report.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return text
