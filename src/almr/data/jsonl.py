"""JSON Lines records for the readers that take whole small files (chat data sets, pairwise
dialogues, benchmark files): each non-blank line one JSON object, and a bad line one `DataError`
naming `file:line`. The corpus reader (`data.sources`) streams and may skip bad records, so it
keeps its own decoding."""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from almr.errors import DataError


def json_lines(lines: Iterable[str], path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each non-blank line (a trailing newline is common) of `path`."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: malformed JSON: {err.msg} at column {err.colno}") from None
        if not isinstance(record, dict):
            kind = "null" if record is None else f"a {type(record).__name__}"
            raise DataError(f"{path}:{number}: record is {kind}, not a JSON object; one JSON object per line")
        yield number, record
