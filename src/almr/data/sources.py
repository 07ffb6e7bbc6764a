"""Streaming readers for raw corpora: JSONL (plain, .gz, .zst), Parquet and .txt files.

Contract
- `resolve_files(patterns, fmt)` turns a source's paths, directories and glob patterns into a
  sorted list of `(path, format)`; a pattern that matches nothing is a `DataError`.
- `iter_chunks(files, text_field, chunk_documents, skip_bad_records)` reads the files as a
  stream (never a whole corpus in memory; one .txt file or one chunk of lines at a time) and
  yields `Chunk`s of *raw* records: undecoded JSONL lines with their line numbers, Parquet
  values with their row numbers, or whole .txt files. Decoding is left to `decode_chunk`, so
  that it runs in the tokenizer processes, not in the reading one.
- `decode_chunk(chunk, text_field, skip_bad_records)` returns the texts and the `BadRecord`s.
  Every bad record — non-UTF-8 bytes, malformed JSON, a record that is not an object, a
  missing or non-string text field, an empty file — names its file and line (Parquet: row).
  Without `skip_bad_records` the first one raises `DataError`; with it, it is returned so
  the caller counts it. Nothing is dropped silently. Whitespace-only JSONL lines are not
  records (a trailing newline is common) and are ignored.
- `iter_texts(...)` chains the two for callers that just want the strings.
"""

import glob
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import zstandard

from almr.errors import DataError

Format = Literal["jsonl", "parquet", "txt"]

_SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".jsonl.gz": "jsonl", ".json.gz": "jsonl",
    ".jsonl.zst": "jsonl", ".json.zst": "jsonl", ".parquet": "parquet", ".txt": "txt",
}


@dataclass(frozen=True)
class BadRecord:
    """One record that could not be read: where it is and why."""

    file: str
    line: int  # 1-based line (JSONL, .txt) or row (Parquet); 0 for the whole file
    reason: str
    count: int = 1  # records it stands for (a Parquet file without the text column: all its rows)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


@dataclass
class Chunk:
    """Raw records of one file handed to a decoder: `items[i]` is at line/row `first_line + i`
    (for "txt", each item is a whole file and `files[i]` names it)."""

    kind: Format
    file: str
    first_line: int
    items: list[Any]
    files: list[str] = field(default_factory=list)


def detect_format(path: Path) -> Format | None:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def resolve_files(patterns: list[str], fmt: str = "auto") -> list[tuple[Path, Format]]:
    """Each pattern is a file, a directory (all readable files below it) or a glob pattern."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _readable(p, fmt))
            if not matches:
                raise DataError(f"{pattern}: directory holds no {fmt if fmt != 'auto' else 'jsonl/parquet/txt'} files")
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{pattern}: no file matches; check the path in data.sources")
        found.extend(matches)
    out: list[tuple[Path, Format]] = []
    for path in found:
        kind = detect_format(path) if fmt == "auto" else fmt
        if kind is None:
            raise DataError(
                f"{path}: unknown file type; use .jsonl[.gz|.zst], .parquet or .txt, or set the source's format"
            )
        out.append((path, kind))  # type: ignore[arg-type]
    return out


def _readable(path: Path, fmt: str) -> bool:
    kind = detect_format(path)
    return kind is not None and (fmt == "auto" or kind == fmt)


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(raw)  # type: ignore[arg-type]
    return path.open("rb")


def iter_chunks(
    files: list[tuple[Path, Format]], text_field: str, chunk_documents: int = 256, skip_bad_records: bool = False
) -> Iterator[Chunk | BadRecord]:
    """Raw records in file order, `chunk_documents` at a time; file-level problems come as BadRecord
    (with skip_bad_records) or raise DataError."""
    txt_items: list[bytes] = []
    txt_files: list[str] = []
    for path, kind in files:
        if kind == "txt":
            data = path.read_bytes()
            if not data.strip():
                yield _file_problem(path, "empty file: no text", skip_bad_records)
                continue
            txt_items.append(data)
            txt_files.append(str(path))
            if len(txt_items) >= chunk_documents:
                yield Chunk("txt", "", 1, txt_items, txt_files)
                txt_items, txt_files = [], []
        elif kind == "jsonl":
            yield from _jsonl_chunks(path, chunk_documents, skip_bad_records)
        else:
            yield from _parquet_chunks(path, text_field, chunk_documents, skip_bad_records)
    if txt_items:
        yield Chunk("txt", "", 1, txt_items, txt_files)


def _file_problem(path: Path, reason: str, skip: bool, count: int = 1) -> BadRecord:
    bad = BadRecord(str(path), 0, reason, count)
    if not skip:
        raise DataError(f"{bad} (set data.skip_bad_records=true to skip and count such records)")
    return bad


def _jsonl_chunks(path: Path, chunk_documents: int, skip: bool) -> Iterator[Chunk | BadRecord]:
    items: list[bytes] = []
    first = 1
    records = 0
    try:
        with _open_binary(path) as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue  # blank lines are not records
                if not items:
                    first = number
                # keep line numbers exact: pad with None for the skipped blank lines
                items.extend([None] * (number - first - len(items)))
                items.append(line)
                records += 1
                if len(items) >= chunk_documents:
                    yield Chunk("jsonl", str(path), first, items)
                    items = []
    except (OSError, EOFError, zlib.error) as err:
        # truncated or corrupt compressed streams: everything up to here was yielded; name the file
        kind = type(err).__name__
        raise DataError(f"{path}: cannot read the file ({kind}: {err}); is it truncated or corrupt?") from None
    except zstandard.ZstdError as err:
        raise DataError(f"{path}: corrupt zstd stream ({err})") from None
    if items:
        yield Chunk("jsonl", str(path), first, items)
    if records == 0:
        yield _file_problem(path, "empty file: no records", skip)


def _parquet_chunks(path: Path, text_field: str, chunk_documents: int, skip: bool) -> Iterator[Chunk | BadRecord]:
    # imported here: only Parquet sources need pyarrow, and the tokenizer processes import this module
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    rows = parquet.metadata.num_rows
    names = parquet.schema_arrow.names
    if rows == 0:
        yield _file_problem(path, "empty file: no rows", skip)
        return
    if text_field not in names:
        yield _file_problem(
            path, f"no column '{text_field}' (columns: {', '.join(names)}); set the source's text_field", skip, rows
        )
        return
    row = 1
    for batch in parquet.iter_batches(batch_size=chunk_documents, columns=[text_field]):
        values = batch.column(0).to_pylist()
        yield Chunk("parquet", str(path), row, values)
        row += len(values)


def decode_chunk(chunk: Chunk, text_field: str, skip_bad_records: bool = False) -> tuple[list[str], list[BadRecord]]:
    """The texts of a chunk's good records, in order, and its bad records."""
    texts: list[str] = []
    bad: list[BadRecord] = []
    for decoded in _decoded(chunk, text_field):
        if isinstance(decoded, str):
            texts.append(decoded)
        elif skip_bad_records:
            bad.append(decoded)
        else:
            raise DataError(f"{decoded} (set data.skip_bad_records=true to skip and count such records)")
    return texts, bad


def _decoded(chunk: Chunk, text_field: str) -> Iterator[str | BadRecord]:
    """Each record of a chunk in order: its text, or why it has none."""
    if chunk.kind == "txt":
        for file, data in zip(chunk.files, chunk.items, strict=True):
            yield _txt_text(file, data)
        return
    text_of = _parquet_text if chunk.kind == "parquet" else _jsonl_text
    for offset, item in enumerate(chunk.items):
        if item is None and chunk.kind == "jsonl":
            continue  # a blank line
        yield text_of(chunk.file, chunk.first_line + offset, item, text_field)


def _txt_text(file: str, data: bytes) -> str | BadRecord:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return BadRecord(file, line, f"non-UTF-8 bytes {data[err.start:err.end]!r}")


def _parquet_text(file: str, row: int, value: Any, text_field: str) -> str | BadRecord:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return BadRecord(file, row, f"field '{text_field}': non-UTF-8 bytes at byte {err.start}")
    if not isinstance(value, str):
        return BadRecord(file, row, f"field '{text_field}' is {_kind(value)}, not a string")
    return value


def _jsonl_text(file: str, line: int, raw: bytes, text_field: str) -> str | BadRecord:
    try:
        text_line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return BadRecord(file, line, f"non-UTF-8 bytes {raw[err.start:err.end]!r} at byte {err.start}")
    try:
        record = json.loads(text_line)
    except json.JSONDecodeError as err:
        return BadRecord(file, line, f"malformed JSON: {err.msg} at column {err.colno}")
    if not isinstance(record, dict):
        return BadRecord(file, line, f"record is {_kind(record)}, not a JSON object")
    if text_field not in record:
        fields = ", ".join(sorted(record)) or "none"
        return BadRecord(file, line, f"no field '{text_field}' (fields: {fields}); set the source's text_field")
    value = record[text_field]
    if not isinstance(value, str):
        return BadRecord(file, line, f"field '{text_field}' is {_kind(value)}, not a string")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def iter_texts(
    patterns: list[str], fmt: str = "auto", text_field: str = "text", skip_bad_records: bool = False
) -> Iterator[str]:
    """Every good document text of a source, streamed in file order."""
    for chunk in iter_chunks(resolve_files(patterns, fmt), text_field, 256, skip_bad_records):
        if isinstance(chunk, Chunk):
            yield from decode_chunk(chunk, text_field, skip_bad_records)[0]
