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
- In parts (`parts` = N > 1; `almr data tokenize --parts N`, or `--part i/N` per job): each
  split's files are cut into N contiguous runs balanced by bytes (`manifest.split_files`);
  part i tokenizes its runs into `SPLIT-part-0000i-of-0000N.{bin,idx}` and records them in
  `part-0000i-of-0000N.json`; the job that finds all N parts current writes the source's
  manifest listing them, in order. Read in part order they are the one shard's token stream,
  so the plan and every batch do not depend on N (tested). A part already current for these
  inputs is not redone, so a re-run (an interrupted Slurm array submitted again) redoes only
  missing or stale parts. `prepare_parts` (also run before a Slurm array is submitted) refuses
  parts of another N made from the same inputs and, in an unfinished run, parts made with
  another tokenizer; it removes stale parts of a finished run. `jobs` > 1 runs the parts
  here in that many processes.
- Re-running on an unchanged source (same files by path, size and mtime, same tokenizer
  fingerprint and reading options) does nothing, whatever N made its shards. A run is complete only when its manifest
  exists: the old manifest is removed first, shards are renamed into place after fsync, and
  the manifest is written last (atomically), so an interrupted run leaves nothing that looks
  complete.
"""

import json
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
    MANIFEST,
    SPLITS,
    TokenizerInfo,
    describe_source,
    input_fingerprint,
    merge_part_splits,
    new_manifest,
    part_current,
    part_manifest,
    part_manifest_path,
    part_prefix,
    read_manifest,
    read_part_manifests,
    record_contiguity,
    remove_manifest,
    remove_part,
    resolve_add_bos,
    source_dir,
    split_files,
    tokenizer_info,
    up_to_date,
    write_manifest,
)
from almr.data.shards import ShardWriter, token_dtype
from almr.data.sources import BadRecord, Chunk, decode_chunk, iter_chunks
from almr.durable import atomic_write_bytes
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
    data: DataConfig, names: list[str] | None = None, progress: bool = True, log: Callable[[str], None] = print,
    *, parts: int = 1, part: int | None = None, jobs: int = 1,
) -> list[dict[str, Any]]:
    """Tokenize the named sources (default: all); returns their manifests. `parts` = N > 1: in N
    parts — all of them here (`jobs` processes at a time), or only part `part` (0-based), in which
    case a source whose other parts are not all done yet returns that part's manifest."""
    sources = _named_sources(data, names)
    check_parts(parts, part, jobs)
    tok = tokenizer_info(data.tokenizer)
    add_bos = resolve_add_bos(data.add_bos, tok)
    out = []
    with _Workers(tok, data.workers, tok.bos_id if add_bos else None) as pool:
        for source in sources:
            if parts == 1:
                out.append(tokenize_source(source, data, tok, pool, progress, log))
            else:
                out.append(_tokenize_in_parts(source, data, tok, pool, parts, part, jobs, progress, log))
    return out


def check_parts(parts: int, part: int | None = None, jobs: int = 1) -> None:
    """Refuse a part index outside [0, parts), fewer than one part, fewer than one job."""
    if parts < 1:
        raise DataError(f"--parts {parts}: the number of parts must be at least 1")
    if part is not None and not 0 <= part < parts:
        raise DataError(
            f"--part {part}/{parts}: the part index must be in 0..{parts - 1} (parts are numbered from 0, like "
            "Slurm array task ids); run parts 0.." + f"{parts - 1} of {parts}"
        )
    if jobs < 1:
        raise DataError(f"--jobs {jobs}: run at least one process")


def _named_sources(data: DataConfig, names: list[str] | None) -> list[SourceConfig]:
    known = {s.name: s for s in data.sources}
    if not known:
        raise DataError("data.sources is empty; list the corpora to tokenize")
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise DataError(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in (names or list(known))]


def prepare_parts(
    data: DataConfig, names: list[str] | None, parts: int, log: Callable[[str], None] = print
) -> list[str]:
    """Before the parts of a run start (here, or as a Slurm array): the sources that need work
    (not up to date); for each, its manifest removed, stale parts of a finished run removed, and
    conflicting parts refused (`DataError`): parts of another N made from the same inputs, and
    in an unfinished run, parts made with another tokenizer."""
    check_parts(parts)
    tok = tokenizer_info(data.tokenizer)
    add_bos = resolve_add_bos(data.add_bos, tok)
    todo = []
    for source in _named_sources(data, names):
        folder, _, fingerprint = _identity(source, data, tok, add_bos)
        if up_to_date(read_manifest(data.shard_dir, source.name), fingerprint, folder):
            continue
        _prepare_folder(source, folder, fingerprint, tok, parts, log)
        todo.append(source.name)
    return todo


def _identity(
    source: SourceConfig, data: DataConfig, tok: TokenizerInfo, add_bos: bool
) -> tuple[Path, dict[str, Any], str]:
    """(shard folder, the manifest's source entry, input fingerprint) of a source as it is now."""
    described = describe_source(source)
    return source_dir(data.shard_dir, source.name), described, input_fingerprint(
        described, tok.fingerprint, data.skip_bad_records, add_bos
    )


def _prepare_folder(
    source: SourceConfig, folder: Path, fingerprint: str, tok: TokenizerInfo, parts: int, log: Callable[[str], None]
) -> None:
    """The folder of a source about to be (re)done in `parts` parts (1: one shard): no manifest,
    no stale parts of a finished run; parts that cannot join this run are refused."""
    finished = (folder / MANIFEST).is_file()  # a complete earlier run, now stale: all its parts are superseded
    folder.mkdir(parents=True, exist_ok=True)
    remove_manifest(folder)  # half-done work never looks complete
    other_n: dict[int, list[str]] = {}
    for path, old in read_part_manifests(folder):
        if old.get("input_fingerprint") == fingerprint:
            if old.get("parts") != parts:
                other_n.setdefault(int(old.get("parts", 0)), []).append(path.name)
            continue
        made_with = old.get("tokenizer", {})
        if parts > 1 and not finished and made_with.get("fingerprint") != tok.fingerprint:
            raise DataError(
                f"source {source.name}: {path} was made with tokenizer {made_with.get('path')} (fingerprint "
                f"{str(made_with.get('fingerprint'))[:12]}), this run uses data.tokenizer = {tok.path} (fingerprint "
                f"{tok.fingerprint[:12]}); the parts of one source must come from one tokenizer. Set data.tokenizer "
                f"back to finish that run, or delete its parts first: rm {folder}/*-of-{int(old.get('parts', 0)):05d}*"
            )
        remove_part(folder, path, old)
        log(f"{source.name}: removed stale {path.name} and its shards (its inputs changed)")
    for n, names in sorted(other_n.items()):
        asked = "one shard" if parts == 1 else f"{parts} parts"
        raise DataError(
            f"source {source.name}: {folder} holds {', '.join(names)}: {len(names)} of {n} parts made from these "
            f"same inputs, but this run asks for {asked}. Finish that run with --parts {n} (or --part i/{n}), or "
            f"delete its parts first: rm {folder}/*-of-{n:05d}*"
        )


def _tokenize_in_parts(
    source: SourceConfig, data: DataConfig, tok: TokenizerInfo, pool: "_Workers", parts: int, part: int | None,
    jobs: int, progress: bool, log: Callable[[str], None],
) -> dict[str, Any]:
    folder, described, fingerprint = _identity(source, data, tok, pool.bos_id is not None)
    old = read_manifest(data.shard_dir, source.name)
    if up_to_date(old, fingerprint, folder):
        return _kept(source.name, folder, old, log)  # type: ignore[arg-type]
    _prepare_folder(source, folder, fingerprint, tok, parts, log)
    todo = [part] if part is not None else list(range(parts))
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn")) as executor:
            futures = [executor.submit(_part_job, data.model_dump(), source.name, i, parts) for i in todo]
            for future in futures:
                for line in future.result():
                    log(line)
    else:
        for i in todo:
            _tokenize_part(source, data, tok, pool, described, fingerprint, i, parts, progress, log)
    manifest = _assemble(source, data, tok, pool.bos_id is not None, described, fingerprint, parts, log)
    if manifest is not None:
        return manifest
    if part is None:  # every part was done here: one vanished meanwhile (another process at work in the folder)
        raise DataError(f"source {source.name}: parts in {folder} changed while this run wrote them; run it again")
    missing = [i for i in range(parts) if not part_current(_read_json(part_manifest_path(folder, i, parts)),
                                                            fingerprint, parts, folder)]  # fmt: skip
    log(f"{source.name}: parts {', '.join(map(str, missing))} of {parts} still to do; the manifest follows the last")
    return _read_json(part_manifest_path(folder, part, parts))  # type: ignore[return-value]


def _kept(name: str, folder: Path, manifest: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """An up-to-date source's manifest, with the contiguity of its shards recorded if it predates that."""
    parts = f" in {manifest['parts']} parts" if manifest.get("parts", 1) > 1 else ""
    added = record_contiguity(folder, manifest)
    todo = f"recorded that its {', '.join(added)} documents lie back to back" if added else "nothing to do"
    log(f"{name}: up to date ({manifest['splits']['train']['tokens']:,} train tokens{parts}); {todo}")
    return manifest


def _part_job(data_dump: dict[str, Any], name: str, part: int, parts: int) -> list[str]:
    """One part in a process of its own (`jobs` > 1): its log lines come back to the parent."""
    data = DataConfig.model_validate(data_dump)
    source = next(s for s in data.sources if s.name == name)
    tok = tokenizer_info(data.tokenizer)
    add_bos = resolve_add_bos(data.add_bos, tok)
    lines: list[str] = []
    with _Workers(tok, data.workers, tok.bos_id if add_bos else None) as pool:
        _, described, fingerprint = _identity(source, data, tok, add_bos)
        _tokenize_part(source, data, tok, pool, described, fingerprint, part, parts, False, lines.append)
    return lines


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _tokenize_part(
    source: SourceConfig, data: DataConfig, tok: TokenizerInfo, pool: "_Workers", described: dict[str, Any],
    fingerprint: str, part: int, parts: int, progress: bool, log: Callable[[str], None],
) -> dict[str, Any]:
    """Part `part` of `parts` of a source, unless it is already current: shards, then its manifest."""
    folder = source_dir(data.shard_dir, source.name)
    path = part_manifest_path(folder, part, parts)
    old = _read_json(path)
    if part_current(old, fingerprint, parts, folder):
        log(f"{source.name} part {part}/{parts}: up to date; nothing to do")
        return old  # type: ignore[return-value]
    path.unlink(missing_ok=True)  # the part does not look done while its shards are replaced
    dtype = token_dtype(tok.vocab_size)
    files: dict[str, list[dict[str, Any]]] = {}
    splits: dict[str, Any] = {}
    start, cpu = time.perf_counter(), time.process_time()
    for split in SPLITS:
        files[split] = split_files(described[split], parts)[part] if described[split] else []
        if files[split]:
            prefix = part_prefix(split, part, parts)
            splits[split] = _tokenize_split(
                source, split, files[split], data, dtype, pool, folder, progress, log, prefix=prefix, parts=parts
            )
            splits[split]["prefix"] = prefix
    add_bos = pool.bos_id is not None
    manifest = part_manifest(
        source.name, part, parts, files, tok, data.skip_bad_records, dtype, fingerprint, splits, add_bos
    )
    atomic_write_bytes(path, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    tokens = sum(info["tokens"] for info in splits.values())
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    log(f"{source.name} part {part}/{parts}: wrote {tokens:,} tokens from {sum(map(len, files.values()))} file(s) "
        f"in {took:.2f} s, {cpu:.2f} s CPU ({tokens / max(took, 1e-9):,.0f} tokens/s)")  # fmt: skip
    return manifest


def _assemble(
    source: SourceConfig, data: DataConfig, tok: TokenizerInfo, add_bos: bool, described: dict[str, Any],
    fingerprint: str, parts: int, log: Callable[[str], None],
) -> dict[str, Any] | None:
    """The source's manifest once all `parts` parts are current (None before): the parts in order."""
    folder = source_dir(data.shard_dir, source.name)
    found = []
    for i in range(parts):
        part = _read_json(part_manifest_path(folder, i, parts))
        if not part_current(part, fingerprint, parts, folder):
            return None
        found.append(part)
    splits = {}
    for split in SPLITS:
        if described[split]:
            splits[split] = merge_part_splits([p["splits"][split] for p in found if split in p["splits"]], _EXAMPLES)
            if not splits[split]["documents"]:
                raise DataError(
                    f"source {source.name} ({split}): no documents in {', '.join(f['path'] for f in described[split])}"
                    "; every record was empty or bad"
                )
    dtype = token_dtype(tok.vocab_size)
    manifest = {**new_manifest(described, tok, data.skip_bad_records, dtype, fingerprint, splits, add_bos),
                "parts": parts}  # fmt: skip
    write_manifest(folder, manifest)
    for split in SPLITS:  # a one-shard tokenization of earlier inputs is superseded
        for suffix in (".bin", ".idx"):
            (folder / f"{split}{suffix}").unlink(missing_ok=True)
    log(f"{source.name}: all {parts} parts done; wrote {folder / MANIFEST}")
    return manifest


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
        return _kept(source.name, folder, old, log)  # type: ignore[arg-type]
    # no manifest while shards are being replaced (half-done work never looks complete); parts of an
    # unfinished run of N parts made from these inputs are refused, stale ones removed
    _prepare_folder(source, folder, fingerprint, tok, 1, log)
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
    pool: "_Workers", folder: Path, progress: bool, log: Callable[[str], None], prefix: str | None = None,
    parts: int = 1,
) -> dict[str, Any]:
    """One split (or, with `parts` > 1, one part of it: may hold no document) into `folder/prefix`."""
    paths = [(Path(f["path"]), f["format"]) for f in files]
    tally = _Tally(log)
    chunks = iter_chunks(paths, source.text_field, data.chunk_documents, data.skip_bad_records)
    bar = _Progress(f"{source.name}/{prefix or split}", sum(f["size"] for f in files), progress)
    with ShardWriter(folder / (prefix or split), dtype) as writer, bar:
        for (tokens, lengths, han, other, bad), nbytes in _encoded(chunks, source, data, pool, tally):
            writer.add(tokens, lengths)
            tally.han += han
            tally.other += other
            tally.note_bad(bad)
            bar.advance(nbytes, len(tokens))
        if writer.documents == 0 and parts == 1:  # a part may be empty; the split as a whole may not
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
        "contiguous": writer.contiguous,
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
