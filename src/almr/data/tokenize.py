"""`almr data tokenize`: sources → Megatron indexed shards plus a manifest per source.

Contract
- `tokenize_sources(data, names=None, progress=True) -> list[dict]` tokenizes each source of
  `data.sources` (a DataConfig) with the Hugging Face tokenizer at `data.tokenizer`, on the
  Rust tokenizer's own threads (or in `data.workers` processes), into
  `SHARD_DIR/NAME/{train,valid}.{bin,idx}` and `SHARD_DIR/NAME/manifest.json`, and returns
  the manifests. Each document is the tokenizer's
  ids without special tokens, then EOS. Documents keep file order.
- Re-running on an unchanged source (same files by path, size and mtime, same tokenizer
  fingerprint and reading options) does nothing. A run is complete only when its manifest
  exists: the old manifest is removed first, shards are renamed into place after fsync, and
  the manifest is written last (atomically), so an interrupted run leaves nothing that looks
  complete.
- `tokenizer_info(path)` gives the fingerprint (sha256 of the tokenizer's canonical JSON and
  of its EOS id), EOS id and vocabulary size that manifests and plans compare.

Manifest fields (`MANIFEST_VERSION` 1): version, source {name, language, domain, format,
text_field, train/valid file lists with size and mtime_ns}, skip_bad_records, tokenizer
{path, fingerprint, eos_id, vocab_size}, dtype, input_fingerprint, and per split (train,
valid): documents, tokens, han/other character counts and chinese_share (almr.chinese),
bad_records (count, by_reason, the first 20 with file:line), bin_bytes.
"""

import hashlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from almr.chinese import ScriptCounts
from almr.data.config import DataConfig, SourceConfig
from almr.data.shards import ShardWriter, token_dtype
from almr.data.sources import BadRecord, Chunk, decode_chunk, iter_chunks, resolve_files
from almr.durable import atomic_write_bytes
from almr.errors import DataError

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")
_EXAMPLES = 20


@dataclass(frozen=True)
class TokenizerInfo:
    path: str
    fingerprint: str
    eos_id: int
    vocab_size: int
    json: str  # the fast tokenizer's serialized form, shipped to worker processes


def tokenizer_info(path: str | None) -> TokenizerInfo:
    if not path:
        raise DataError("data.tokenizer is not set; point it at a Hugging Face tokenizer directory")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise DataError(f"data.tokenizer {path}: cannot load a tokenizer ({err})") from None
    if not getattr(tok, "is_fast", False):
        raise DataError(f"data.tokenizer {path}: not a fast (Rust) tokenizer; convert it to tokenizer.json")
    if tok.eos_token_id is None:
        raise DataError(f"data.tokenizer {path}: has no EOS token; set eos_token in its tokenizer_config.json")
    serialized = tok.backend_tokenizer.to_str()
    digest = hashlib.sha256(serialized.encode("utf-8"))
    digest.update(f"|eos={tok.eos_token_id}".encode())
    return TokenizerInfo(str(path), digest.hexdigest(), int(tok.eos_token_id), len(tok), serialized)


# --------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(tok_json: str, eos_id: int, dtype: str, rust_threads: bool = False) -> None:
    if not rust_threads:  # one Rust thread per process: the parallelism is the processes
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ["RAYON_NUM_THREADS"] = "1"
    from tokenizers import Tokenizer

    _WORKER.update(tok=Tokenizer.from_str(tok_json), json=tok_json, eos=eos_id, dtype=np.dtype(dtype))


def _encode_chunk(
    chunk: Chunk, text_field: str, skip: bool
) -> tuple[np.ndarray, np.ndarray, int, int, list[BadRecord]]:
    """Decode, tokenize and script-count one chunk: (tokens, lengths, han, other, bad records)."""
    texts, bad = decode_chunk(chunk, text_field, skip)
    encodings = _WORKER["tok"].encode_batch_fast(texts, add_special_tokens=False)
    eos = _WORKER["eos"]
    flat: list[int] = []
    lengths = np.empty(len(encodings), dtype=np.int32)
    for i, enc in enumerate(encodings):
        ids = enc.ids
        flat.extend(ids)
        flat.append(eos)
        lengths[i] = len(ids) + 1
    counts = ScriptCounts().add("\n".join(texts))
    return np.array(flat, dtype=_WORKER["dtype"]), lengths, counts.han, counts.other, bad


# --------------------------------------------------------------------------- driver side


def source_dir(shard_dir: str | Path, name: str) -> Path:
    return Path(shard_dir) / name


def read_manifest(shard_dir: str | Path, name: str) -> dict[str, Any] | None:
    path = source_dir(shard_dir, name) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _file_list(patterns: list[str], fmt: str) -> list[dict[str, Any]]:
    if not patterns:
        return []
    out = []
    for path, kind in resolve_files(patterns, fmt):
        stat = path.stat()
        out.append({"path": str(path.resolve()), "format": kind, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def _input_fingerprint(source: dict[str, Any], tok: TokenizerInfo, skip: bool) -> str:
    key = json.dumps(
        {"v": MANIFEST_VERSION, "source": source, "tokenizer": tok.fingerprint, "skip": skip}, sort_keys=True
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _up_to_date(manifest: dict[str, Any] | None, fingerprint: str, folder: Path) -> bool:
    if manifest is None or manifest.get("input_fingerprint") != fingerprint:
        return False
    for split, info in manifest["splits"].items():
        for suffix in (".bin", ".idx"):
            if not (folder / f"{split}{suffix}").is_file():
                return False
        if (folder / f"{split}.bin").stat().st_size != info["bin_bytes"]:
            return False
    return True


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
    workers = data.workers
    with _Workers(tok, workers) as pool:
        return [tokenize_source(known[n], data, tok, pool, progress, log) for n in (names or list(known))]


class _Workers:
    """The tokenizer processes of one run, started on first use and shared by all sources."""

    def __init__(self, tok: TokenizerInfo, workers: int) -> None:
        self.tok = tok
        self.workers = workers
        self._pool: Executor | None = None

    def get(self) -> Executor | None:
        """workers = 0: one thread of this process hands chunks to the Rust tokenizer, whose own
        threads use every core (the library's parallelism, while the main thread reads and writes);
        1: in this process, serially; N ≥ 2: N processes of one Rust thread each."""
        dtype = token_dtype(self.tok.vocab_size).name
        if self.workers <= 1:
            if _WORKER.get("json") != self.tok.json:  # this process may have tokenized for another tokenizer
                _init_worker(self.tok.json, self.tok.eos_id, dtype, rust_threads=self.workers == 0)
            if self.workers == 0 and self._pool is None:
                self._pool = ThreadPoolExecutor(1)
            return self._pool
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                initargs=(self.tok.json, self.tok.eos_id, token_dtype(self.tok.vocab_size).name),
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
    described = {
        "name": source.name, "language": source.language, "domain": source.domain, "format": source.format,
        "text_field": source.text_field,
        "train": _file_list(source.train, source.format), "valid": _file_list(source.valid, source.format),
    }
    fingerprint = _input_fingerprint(described, tok, data.skip_bad_records)
    manifest_path = folder / MANIFEST
    old = read_manifest(data.shard_dir, source.name)
    if _up_to_date(old, fingerprint, folder):
        log(f"{source.name}: up to date ({old['splits']['train']['tokens']:,} train tokens); nothing to do")  # type: ignore[index]
        return old  # type: ignore[return-value]
    folder.mkdir(parents=True, exist_ok=True)
    # no manifest while shards are being replaced: half-done work never looks complete
    manifest_path.unlink(missing_ok=True)
    dtype = token_dtype(tok.vocab_size)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        files = described[split]
        if not files:
            continue
        splits[split] = _tokenize_split(source, split, files, data, dtype, pool, folder, progress, log)
    manifest = {
        "version": MANIFEST_VERSION,
        "source": described,
        "skip_bad_records": data.skip_bad_records,
        "tokenizer": {
            "path": tok.path, "fingerprint": tok.fingerprint, "eos_id": tok.eos_id, "vocab_size": tok.vocab_size
        },
        "dtype": dtype.name,
        "input_fingerprint": fingerprint,
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    return manifest


def _tokenize_split(
    source: SourceConfig, split: str, files: list[dict[str, Any]], data: DataConfig, dtype: np.dtype,
    pool: "_Workers", folder: Path, progress: bool, log: Callable[[str], None],
) -> dict[str, Any]:
    paths = [(Path(f["path"]), f["format"]) for f in files]
    total_bytes = sum(f["size"] for f in files)
    han = other = 0
    bad_count = 0
    reasons: Counter[str] = Counter()
    examples: list[str] = []

    def note_bad(records: list[BadRecord]) -> None:
        nonlocal bad_count
        for record in records:
            bad_count += record.count
            reasons[_reason_kind(record.reason)] += record.count
            if len(examples) < _EXAMPLES:
                examples.append(str(record))
                log(f"warning: skipped {record}")

    chunks: Iterator[Chunk | BadRecord] = iter_chunks(
        paths, source.text_field, data.chunk_documents, data.skip_bad_records
    )
    bar = _Progress(f"{source.name}/{split}", total_bytes, progress)
    with ShardWriter(folder / split, dtype) as writer, bar:

        def consume(result: tuple[np.ndarray, np.ndarray, int, int, list[BadRecord]], nbytes: int) -> None:
            nonlocal han, other
            tokens, lengths, h, o, bad = result
            writer.add(tokens, lengths)
            han += h
            other += o
            note_bad(bad)
            bar.advance(nbytes, len(tokens))

        executor = pool.get()
        # a bounded window of chunks in flight keeps memory flat however large the corpus;
        # results are consumed in submission order, so documents keep file order
        window: deque[tuple[Future | None, Any, int]] = deque()
        for chunk in chunks:
            if isinstance(chunk, BadRecord):
                note_bad([chunk])
                continue
            args = (chunk, source.text_field, data.skip_bad_records)
            if executor is None:
                consume(_encode_chunk(*args), _chunk_bytes(chunk))
                continue
            window.append((executor.submit(_encode_chunk, *args), None, _chunk_bytes(chunk)))
            if len(window) >= 4 * max(pool.workers, 1):
                future, _, nbytes = window.popleft()
                consume(future.result(), nbytes)  # type: ignore[union-attr]
        while window:
            future, _, nbytes = window.popleft()
            consume(future.result(), nbytes)  # type: ignore[union-attr]
        if writer.documents == 0:
            raise DataError(
                f"source {source.name} ({split}): no documents in {', '.join(f['path'] for f in files)}; "
                "every record was empty or bad"
            )
        writer.commit()
    counts = ScriptCounts(han, other)
    return {
        "documents": writer.documents,
        "tokens": writer.tokens,
        "han": han,
        "other": other,
        "chinese_share": counts.chinese_share,
        "bad_records": {"count": bad_count, "by_reason": dict(reasons), "examples": examples},
        "bin_bytes": writer.tokens * dtype.itemsize,
    }


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
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rate]}"),
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
