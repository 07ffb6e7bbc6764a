"""`almr data tokenize`: sources → Megatron indexed shards plus a manifest per source.

Contract
- `tokenize_sources(data, names=None, progress=True) -> list[dict]` tokenizes each source of
  `data.sources` (a DataConfig) with the Hugging Face tokenizer at `data.tokenizer`, on the
  Rust tokenizer's own threads (or in `data.workers` processes), into
  `SHARD_DIR/NAME/{train,valid}.{bin,idx}` and `SHARD_DIR/NAME/manifest.json`, and returns
  the manifests (fields: `almr.data.manifest`). Each document is BOS when `data.add_bos` says
  so (default: as the tokenizer's own template does), the tokenizer's ids without other special
  tokens, then EOS. Documents keep file order.
- Memory stays bounded by the chunk, however long one document is: a document longer than
  `MAX_ENCODE_CHARS` characters is encoded in pieces, cut only where encoding the text around
  the cut gives the same ids as encoding its two sides, so the ids are those of the whole; a
  document with no such place (a tokenizer that marks the start of every text, such as
  SentencePiece's "▁" prefix) is refused with its file.
- Re-running on an unchanged source (same files by path, size and mtime, same tokenizer
  fingerprint and reading options) does nothing. A run is complete only when its manifest
  exists: the old manifest is removed first, shards are renamed into place after fsync, and
  the manifest is written last (atomically), so an interrupted run leaves nothing that looks
  complete.
"""

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from tokenizers import Tokenizer

from almr.chinese import ScriptCounts
from almr.data.config import DataConfig, SourceConfig
from almr.data.manifest import (
    SPLITS,
    TokenizerInfo,
    describe_source,
    input_fingerprint,
    new_manifest,
    read_manifest,
    remove_manifest,
    resolve_add_bos,
    source_dir,
    tokenizer_info,
    up_to_date,
    write_manifest,
)
from almr.data.shards import ShardWriter, token_dtype
from almr.data.sources import BadRecord, Chunk, decode_chunk, iter_chunks
from almr.errors import DataError

_EXAMPLES = 20
# The longest text handed to the tokenizer in one call: its encoding holds ~100 bytes per token
# (ids, offsets, token strings), ~0.3 GB at this length, whatever the document's size.
MAX_ENCODE_CHARS = 1 << 20
_SEAM_PROBE = 256  # characters each side of a cut that are encoded to check it
_SEAM_TRIES = 64  # cut candidates tried before a document is refused

# one chunk's result: (tokens, document lengths, han count, other count, bad records)
Encoded = tuple[np.ndarray, np.ndarray, int, int, list[BadRecord]]


# --------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(tok_json: str, eos_id: int, dtype: str, rust_threads: bool = False, bos_id: int | None = None) -> None:
    if not rust_threads:  # one Rust thread per process: the parallelism is the processes
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ["RAYON_NUM_THREADS"] = "1"
    _WORKER.update(tok=Tokenizer.from_str(tok_json), json=tok_json, eos=eos_id, dtype=np.dtype(dtype), bos=bos_id)


def _encode_chunk(chunk: Chunk, text_field: str, skip: bool) -> Encoded:
    """Decode, tokenize and script-count one chunk: (tokens, lengths, han, other, bad records)."""
    texts, bad = decode_chunk(chunk, text_field, skip)
    tok, dtype = _WORKER["tok"], _WORKER["dtype"]
    head = [] if _WORKER.get("bos") is None else [_WORKER["bos"]]
    tail = [_WORKER["eos"]]
    short = [i for i, text in enumerate(texts) if len(text) <= MAX_ENCODE_CHARS]
    docs: list[np.ndarray | None] = [None] * len(texts)
    for i, enc in zip(short, tok.encode_batch_fast([texts[i] for i in short], add_special_tokens=False), strict=True):
        docs[i] = np.array(head + enc.ids + tail, dtype=dtype)
    for i, text in enumerate(texts):
        if docs[i] is None:  # a long document, piece by piece: never its whole encoding in memory
            pieces = [np.array(head, dtype=dtype)]
            for piece in split_for_encoding(text, lambda t: tok.encode(t, add_special_tokens=False).ids, chunk.file):
                pieces.append(np.array(tok.encode(piece, add_special_tokens=False).ids, dtype=dtype))
            docs[i] = np.concatenate([*pieces, np.array(tail, dtype=dtype)])
    lengths = np.array([len(d) for d in docs], dtype=np.int32)  # type: ignore[arg-type]
    counts = ScriptCounts().add("\n".join(texts[i] for i in short))
    for i in sorted(set(range(len(texts))) - set(short)):
        for start in range(0, len(texts[i]), MAX_ENCODE_CHARS):
            counts.add(texts[i][start : start + MAX_ENCODE_CHARS])
    flat = np.concatenate(docs) if docs else np.zeros(0, dtype=dtype)  # type: ignore[arg-type]
    return flat, lengths, counts.han, counts.other, bad


def split_for_encoding(
    text: str, encode: Callable[[str], list[int]], where: str = "", limit: int | None = None
) -> list[str]:
    """`text` in pieces of at most `limit` (default `MAX_ENCODE_CHARS`) characters whose ids,
    concatenated, are the ids of the whole: a cut goes where encoding `_SEAM_PROBE` characters
    either side gives the same ids as encoding each side alone — first before a single space
    between two words, else anywhere — within the last half of each piece."""
    limit = limit or MAX_ENCODE_CHARS
    pieces, start = [], 0
    while len(text) - start > limit:
        cut = _seam(text, start + limit // 2, start + limit, encode)
        if cut is None:
            raise DataError(
                f"{where}: a document of {len(text):,} characters has no place within {limit:,} characters where "
                "it can be cut without changing its tokens (this tokenizer marks the start of every text); split it "
                "into smaller documents"
            )
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _seam(text: str, low: int, high: int, encode: Callable[[str], list[int]]) -> int | None:
    def clean(at: int) -> bool:
        left, right = text[max(at - _SEAM_PROBE, 0) : at], text[at : at + _SEAM_PROBE]
        return encode(left + right) == encode(left) + encode(right)

    tried = 0
    at = text.rfind(" ", low, high)
    while at > low and tried < _SEAM_TRIES // 2:  # before " word": where pre-tokenizers split anyway
        if not text[at - 1].isspace() and not text[at + 1].isspace():
            tried += 1
            if clean(at):
                return at
        at = text.rfind(" ", low, at)
    for at in range(high, max(low, high - _SEAM_TRIES), -1):
        if clean(at):
            return at
    return None


# --------------------------------------------------------------------------- driver side


def tokenize_sources(
    data: DataConfig, names: list[str] | None = None, progress: bool = True, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Tokenize the named sources (default: all); returns their manifests."""
    known = {s.name: s for s in data.sources}
    if not known:
        raise DataError("data.sources is empty; list the corpora to tokenize")
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise DataError(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(known)}")
    tok = tokenizer_info(data.tokenizer)
    add_bos = resolve_add_bos(data.add_bos, tok)
    with _Workers(tok, data.workers, tok.bos_id if add_bos else None) as pool:
        return [tokenize_source(known[n], data, tok, pool, progress, log) for n in (names or list(known))]


class _Workers:
    """The tokenizer processes of one run, started on first use and shared by all sources."""

    def __init__(self, tok: TokenizerInfo, workers: int, bos_id: int | None = None) -> None:
        self.tok = tok
        self.workers = workers
        self.bos_id = bos_id  # prepended to every document; None: no BOS
        self._pool: Executor | None = None

    def get(self) -> Executor | None:
        """workers = 0: one thread of this process hands chunks to the Rust tokenizer, whose own
        threads use every core (the library's parallelism, while the main thread reads and writes);
        1: in this process, serially; N ≥ 2: N processes of one Rust thread each."""
        dtype = token_dtype(self.tok.vocab_size).name
        if self.workers <= 1:
            if (_WORKER.get("json"), _WORKER.get("bos")) != (self.tok.json, self.bos_id):  # another tokenizer before
                _init_worker(self.tok.json, self.tok.eos_id, dtype, rust_threads=self.workers == 0, bos_id=self.bos_id)
            if self.workers == 0 and self._pool is None:
                self._pool = ThreadPoolExecutor(1)
            return self._pool
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                initargs=(self.tok.json, self.tok.eos_id, token_dtype(self.tok.vocab_size).name, False, self.bos_id),
            )
        return self._pool

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def tokenize_source(
    source: SourceConfig, data: DataConfig, tok: TokenizerInfo, pool: "_Workers", progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    folder = source_dir(data.shard_dir, source.name)
    described = describe_source(source)
    add_bos = pool.bos_id is not None
    fingerprint = input_fingerprint(described, tok.fingerprint, data.skip_bad_records, add_bos)
    old = read_manifest(data.shard_dir, source.name)
    if up_to_date(old, fingerprint, folder):
        log(f"{source.name}: up to date ({old['splits']['train']['tokens']:,} train tokens); nothing to do")  # type: ignore[index]
        return old  # type: ignore[return-value]
    folder.mkdir(parents=True, exist_ok=True)
    # no manifest while shards are being replaced: half-done work never looks complete
    remove_manifest(folder)
    dtype = token_dtype(tok.vocab_size)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        files = described[split]
        if not files:
            continue
        splits[split] = _tokenize_split(source, split, files, data, dtype, pool, folder, progress, log)
    manifest = new_manifest(described, tok, data.skip_bad_records, dtype, fingerprint, splits, add_bos)
    write_manifest(folder, manifest)
    return manifest


def _tokenize_split(
    source: SourceConfig, split: str, files: list[dict[str, Any]], data: DataConfig, dtype: np.dtype,
    pool: "_Workers", folder: Path, progress: bool, log: Callable[[str], None],
) -> dict[str, Any]:
    paths = [(Path(f["path"]), f["format"]) for f in files]
    tally = _Tally(log)
    chunks = iter_chunks(paths, source.text_field, data.chunk_documents, data.skip_bad_records)
    bar = _Progress(f"{source.name}/{split}", sum(f["size"] for f in files), progress)
    with ShardWriter(folder / split, dtype) as writer, bar:
        for (tokens, lengths, han, other, bad), nbytes in _encoded(chunks, source, data, pool, tally):
            writer.add(tokens, lengths)
            tally.han += han
            tally.other += other
            tally.note_bad(bad)
            bar.advance(nbytes, len(tokens))
        if writer.documents == 0:
            raise DataError(
                f"source {source.name} ({split}): no documents in {', '.join(f['path'] for f in files)}; "
                "every record was empty or bad"
            )
        writer.commit()
    return {
        "documents": writer.documents,
        "tokens": writer.tokens,
        "han": tally.han,
        "other": tally.other,
        "chinese_share": ScriptCounts(tally.han, tally.other).chinese_share,
        "bad_records": {"count": tally.bad, "by_reason": dict(tally.reasons), "examples": tally.examples},
        "bin_bytes": writer.tokens * dtype.itemsize,
    }


def _encoded(
    chunks: Iterable[Chunk | BadRecord], source: SourceConfig, data: DataConfig, pool: "_Workers", tally: "_Tally"
) -> Iterator[tuple[Encoded, int]]:
    """Each chunk's result and its input bytes, in chunk order; file-level bad records go to `tally`."""
    executor = pool.get()
    # a bounded window of chunks in flight keeps memory flat however large the corpus;
    # results are consumed in submission order, so documents keep file order
    window: deque[tuple[Future, int]] = deque()
    for chunk in chunks:
        if isinstance(chunk, BadRecord):
            tally.note_bad([chunk])
            continue
        args = (chunk, source.text_field, data.skip_bad_records)
        if executor is None:
            yield _encode_chunk(*args), _chunk_bytes(chunk)
            continue
        window.append((executor.submit(_encode_chunk, *args), _chunk_bytes(chunk)))
        if len(window) >= 4 * max(pool.workers, 1):
            future, nbytes = window.popleft()
            yield future.result(), nbytes
    while window:
        future, nbytes = window.popleft()
        yield future.result(), nbytes


@dataclass
class _Tally:
    """What one split's records add up to besides tokens: script counts and bad records."""

    log: Callable[[str], None]
    han: int = 0
    other: int = 0
    bad: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def note_bad(self, records: list[BadRecord]) -> None:
        for record in records:
            self.bad += record.count
            self.reasons[_reason_kind(record.reason)] += record.count
            if len(self.examples) < _EXAMPLES:
                self.examples.append(str(record))
                self.log(f"warning: skipped {record}")


def _chunk_bytes(chunk: Chunk) -> int:
    if chunk.kind == "parquet":
        return 0  # parquet is compressed on disk: progress is reported per file instead
    return sum(len(item) for item in chunk.items if item is not None)


def _reason_kind(reason: str) -> str:
    kinds = ("non-UTF-8", "malformed JSON", "no field", "no column", "empty file", "not a string", "not a JSON object")
    for kind in kinds:
        if kind in reason:
            return kind
    return reason


class _Progress:
    """A rich progress bar over input bytes, with tokens/s; silent when disabled."""

    def __init__(self, label: str, total_bytes: int, enabled: bool) -> None:
        self.enabled = enabled
        self.label = label
        self.total = total_bytes
        self.tokens = 0
        self.start = time.perf_counter()

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                TextColumn("{task.fields[rate]}", markup=False),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total or None, rate="")
        return self

    def advance(self, nbytes: int, tokens: int) -> None:
        self.tokens += tokens
        if self.enabled:
            rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
            self._bar.update(self._task, advance=nbytes, rate=f"{self.tokens:,} tok, {rate:,.0f} tok/s")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()
