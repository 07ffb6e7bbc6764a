"""`almr world stats`: documents, tokens and %Chinese of every source and split of a world.

Tokens are counted with the world's tokenizer on each document's text alone (no
`<|begin_of_text|>`, no end-of-document token); %Chinese follows DESIGN.md and is a ratio of
sums over the split (see almr.chinese)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from transformers import AutoTokenizer

from almr.chinese import ScriptCounts
from almr.data.sources import iter_texts
from almr.world.build import read_manifest


@dataclass(frozen=True)
class SplitStats:
    source: str
    language: str
    domain: str
    split: str
    documents: int
    tokens: int
    chinese_share: float


def world_stats(world_dir: Path, batch_size: int = 1000) -> list[SplitStats]:
    world_dir = Path(world_dir)
    manifest = read_manifest(world_dir)
    tokenizer = AutoTokenizer.from_pretrained(world_dir / "tokenizer")
    rows = []
    for source, info in manifest["sources"].items():
        for split in ("train", "valid"):
            path = world_dir / info[split]
            documents = tokens = 0
            scripts = ScriptCounts()
            batch: list[str] = []
            for text in iter_texts([str(path)]):  # a bad record stops with its file and line
                batch.append(text)
                scripts.add(text)
                if len(batch) == batch_size:
                    tokens += _count_tokens(tokenizer, batch)
                    documents += len(batch)
                    batch = []
            if batch:
                tokens += _count_tokens(tokenizer, batch)
                documents += len(batch)
            rows.append(
                SplitStats(source, info["language"], info["domain"], split, documents, tokens, scripts.chinese_share)
            )
    return rows


def _count_tokens(tokenizer: Any, texts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def markdown_table(rows: list[SplitStats]) -> str:
    lines = [
        "| source | language | domain | split | documents | tokens | %Chinese |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.source} | {r.language} | {r.domain} | {r.split} | {r.documents:,} | {r.tokens:,} | "
            f"{100 * r.chinese_share:.1f} |"
        )
    return "\n".join(lines)


def rich_table(rows: list[SplitStats]) -> Table:
    table = Table(title="world corpora")
    for name in ("source", "language", "domain", "split"):
        table.add_column(name)
    for name in ("documents", "tokens", "%Chinese"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            r.source, r.language, r.domain, r.split, f"{r.documents:,}", f"{r.tokens:,}", f"{100 * r.chinese_share:.1f}"
        )
    return table
