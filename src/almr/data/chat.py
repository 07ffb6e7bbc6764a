"""Fine-tuning data: SFT conversations and DPO preference pairs, read from the formats users
already have, validated before any training, and mixed by weight into one deterministic list.

Contract
- `read_conversations(dataset)` reads one data set (`ChatDatasetConfig`) into SFT examples
  `{"messages": [...], "language", "dataset"}` (ESConv adds `"strategies"`, one list of support
  strategies per assistant turn: metadata, never in the text). `read_preferences(dataset)` reads
  DPO examples `{"prompt": [...], "chosen": [...], "rejected": [...], "language", "dataset"}`
  (TRL's conversational preference format). `dataset` is the data set's label: its path, or
  `path#entry` for an entry of a LlamaFactory `dataset_info.json`.
- Formats: `messages`, LlamaFactory's `sharegpt` / `alpaca` / `ranking` (column names and role
  tags from `dataset_info.json`, LlamaFactory's defaults when absent), `prompt_completion`,
  ESConv's JSON (`esconv`), TRL's `preference`; `auto` takes the format from the
  `dataset_info.json` entry, or from the first record's keys. Files: `.jsonl`, `.json` (a list,
  or JSON Lines), either plain, `.gz` or `.zst`.
- Every conversation is checked: roles system/user/assistant only; a system turn only first;
  then user and assistant alternate, starting with the user; SFT: the last turn is the
  assistant's; DPO: the prompt ends with a user turn and chosen differs from rejected; every
  content a non-blank string. The first problem raises `DataError` naming the file, the line
  (JSONL: `a.jsonl:3`) or record (JSON list, 0-based: `a.json[3]`), the field and the fix.
  Nothing is dropped silently; the only reshaping is ESConv's (see `_esconv_conversation`).
- `load_sft_mix` / `load_preference_mix` mix several data sets (the mixing rule: `_scaled`),
  leave out those whose language is in `exclude_languages` (reported in `skipped`) and shuffle
  with the seed: the same configs and seed give the same list, in the same order.
- `fingerprint(examples)` is the sha256 of their canonical JSON: a cache key for anything
  derived from the examples (the DPO reference log-probabilities).
"""

import gzip
import hashlib
import json
import math
import random
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from almr.data.config import ChatDatasetConfig
from almr.data.jsonl import json_lines
from almr.errors import DataError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Example = dict[str, Any]

ROLES = ("system", "user", "assistant")
SFT_FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "esconv")
PREFERENCE_FORMATS = ("preference", "ranking")
DATASET_INFO = "dataset_info.json"

# LlamaFactory's defaults (its DatasetAttr): columns per formatting, and the sharegpt role tags.
_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": None, "system": None}
_SHAREGPT_COLUMNS = {"messages": "conversations", "system": None}
_SHAREGPT_TAGS = {
    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system",
}  # fmt: skip
_OPENAI_TAGS = {
    "role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
    "system_tag": "system",
}  # fmt: skip
_PAIR_COLUMNS = {"chosen": "chosen", "rejected": "rejected"}
_FILE_SUFFIXES = (".jsonl", ".json")
_COMPRESSIONS = ("", ".gz", ".zst")


@dataclass(frozen=True)
class ChatMix:
    """What was read, for the run's report and metrics."""

    examples: list[dict[str, Any]]  # the mixed, shuffled examples
    counts: dict[str, int]  # examples taken per data set (label -> count), in config order
    skipped: dict[str, int]  # examples left out by exclude_languages, per data set label


@dataclass(frozen=True)
class _Source:
    """One data set resolved: its files, its concrete format and how its columns are named."""

    label: str
    files: list[Path]
    format: str  # one of SFT_FORMATS or PREFERENCE_FORMATS, never "auto"
    columns: dict[str, str | None]
    tags: dict[str, str]
    style: str  # ranking only: "alpaca" or "sharegpt" (how the prompt is given)


Record = tuple[str, dict[str, Any]]  # (where: "a.jsonl:3" or "a.json[3]", the record)


# ---------------------------------------------------------------------------- public API


def read_conversations(dataset: ChatDatasetConfig) -> list[dict[str, Any]]:
    """One data set as SFT examples, normalized and validated."""
    source, records = _open_dataset(dataset)
    if source.format not in SFT_FORMATS:
        raise DataError(
            f"{source.label}: format {source.format} holds preference pairs, not conversations; "
            "list it under dpo.datasets, or give a conversation file to sft.datasets"
        )
    examples = []
    for where, record in records:
        example: Example = {"messages": [], "language": _language(record, dataset, where), "dataset": source.label}
        if source.format == "esconv":
            example["messages"], example["strategies"] = _esconv_conversation(record, where)
        else:
            example["messages"] = _CONVERSATION_READERS[source.format](record, where, source)
        _check_conversation(example["messages"], where, _field_name(source), final="assistant")
        examples.append(example)
    return examples


def read_preferences(dataset: ChatDatasetConfig) -> list[dict[str, Any]]:
    """One data set as DPO examples (TRL's conversational prompt/chosen/rejected), validated."""
    source, records = _open_dataset(dataset)
    if source.format not in PREFERENCE_FORMATS:
        raise DataError(
            f"{source.label}: format {source.format} holds conversations, not preference pairs; DPO needs "
            "prompt/chosen/rejected (format preference) or LlamaFactory's ranking format (ranking: true)"
        )
    read = _preference_pair if source.format == "preference" else _ranking_pair
    examples = []
    for where, record in records:
        prompt, chosen, rejected = read(record, where, source)
        _check_pair(prompt, chosen, rejected, where)
        examples.append(
            {"prompt": prompt, "chosen": chosen, "rejected": rejected,
             "language": _language(record, dataset, where), "dataset": source.label}
        )  # fmt: skip
    return examples


def load_sft_mix(datasets: list[ChatDatasetConfig], exclude_languages: Iterable[str] = (), seed: int = 0) -> ChatMix:
    """The SFT data sets read, validated, scaled by weight and shuffled into one list."""
    return _load_mix(datasets, exclude_languages, seed, read_conversations)


def load_preference_mix(
    datasets: list[ChatDatasetConfig], exclude_languages: Iterable[str] = (), seed: int = 0
) -> ChatMix:
    """The DPO data sets read, validated, scaled by weight and shuffled into one list."""
    return _load_mix(datasets, exclude_languages, seed, read_preferences)


def fingerprint(examples: list[dict[str, Any]]) -> str:
    """sha256 hex of the examples' canonical JSON (sorted keys, no spaces, UTF-8): one
    character changed anywhere changes it; the order of the examples counts."""
    canonical = json.dumps(examples, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def dataset_label(dataset: ChatDatasetConfig) -> str:
    """The name a data set goes by in counts, reports and error messages."""
    return dataset.path if dataset.dataset is None else f"{dataset.path}#{dataset.dataset}"


# ---------------------------------------------------------------------------- mixing


def _load_mix(
    datasets: list[ChatDatasetConfig],
    exclude_languages: Iterable[str],
    seed: int,
    read: Callable[[ChatDatasetConfig], list[Example]],
) -> ChatMix:
    if not datasets:
        raise DataError("no data sets: list at least one under sft.datasets / dpo.datasets")
    labels = [dataset_label(d) for d in datasets]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise DataError(f"data set(s) listed twice: {', '.join(twice)}; list each once and raise its weight instead")
    excluded = set(exclude_languages)
    taken: list[Example] = []
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for dataset, label in zip(datasets, labels, strict=True):
        examples = read(dataset)  # excluded ones too: the report says how many examples they had
        kept = [e for e in examples if e["language"] not in excluded]
        if len(kept) < len(examples):
            skipped[label] = len(examples) - len(kept)
        if not kept:
            continue
        scaled = _scaled(kept, dataset.weight, random.Random(f"almr-chat:{seed}:{label}"), label)
        counts[label] = len(scaled)
        taken += scaled
    if not counts:
        raise DataError(
            f"exclude_languages {sorted(excluded)} leaves no data: every example of {', '.join(labels)} is tagged "
            "with an excluded language; keep one language or add a data set in another"
        )
    random.Random(f"almr-chat:{seed}:shuffle").shuffle(taken)
    return ChatMix(examples=taken, counts=counts, skipped=skipped)


def _language(record: dict[str, Any], dataset: ChatDatasetConfig, where: str) -> str:
    """The example's language tag: its record's `language_field` when the data set names one."""
    if dataset.language_field is None:
        return dataset.language
    value = record.get(dataset.language_field)
    if not isinstance(value, str) or not value:
        raise DataError(
            f"{where}: field {dataset.language_field!r} (language_field) must hold a language tag such as zh, "
            f"got {value!r}; fill it, or drop language_field and tag the whole data set with language"
        )
    return value


def _scaled(examples: list[Example], weight: float, rng: random.Random, label: str) -> list[Example]:
    """The mixing rule: a data set of n examples (after max_samples) with weight w contributes
    m = round(w·n) examples (half up): floor(m/n) whole copies, plus m mod n distinct examples
    drawn without replacement by a generator seeded with (seed, label), kept in file order.
    Weight 1 takes every example once; 2 takes each twice; 0.5 half of them."""
    n = len(examples)
    m = math.floor(weight * n + 0.5)
    if m == 0:
        raise DataError(
            f"{label}: weight {weight} × {n} examples rounds to 0 examples; raise its weight to at least {0.5 / n:.3g}"
        )
    copies, rest = divmod(m, n)
    return examples * copies + [examples[i] for i in sorted(rng.sample(range(n), rest))]


# ---------------------------------------------------------------------------- resolving a data set


def _open_dataset(dataset: ChatDatasetConfig) -> tuple[_Source, list[Record]]:
    """The data set's resolved format and its records (the first max_samples of them)."""
    label = dataset_label(dataset)
    path = Path(dataset.path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data set {label}); check its path")
    if path.is_dir():
        entry_name, entry = _dataset_info_entry(path, dataset.dataset)
        files = _entry_files(path, entry_name, entry)
    else:
        if dataset.dataset is not None:
            raise DataError(f"{label}: dataset: {dataset.dataset} needs a folder holding {DATASET_INFO}, not a file")
        entry = None
        files = [path]
    records: list[Record] = []
    for file in files:
        records += _read_records(file, None if dataset.max_samples is None else dataset.max_samples - len(records))
        if dataset.max_samples is not None and len(records) >= dataset.max_samples:
            break
    if not records:
        raise DataError(f"{label}: no records in {', '.join(map(str, files))}")
    return _resolve(label, files, dataset.format, entry, records[0]), records


def _dataset_info_entry(folder: Path, name: str | None) -> tuple[str, dict[str, Any]]:
    info_path = folder / DATASET_INFO
    if not info_path.is_file():
        raise DataError(f"{folder}: a folder without {DATASET_INFO}; point path at a data file, or add LlamaFactory's "
                        f"{DATASET_INFO} describing its files")  # fmt: skip
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{info_path}: not valid JSON ({err})") from None
    if not isinstance(info, dict) or not info:
        raise DataError(f"{info_path}: expected an object of named data sets")
    known = ", ".join(sorted(info))
    if name is None:
        if len(info) > 1:
            raise DataError(f"{info_path}: holds several data sets ({known}); set dataset: to one of them")
        name = next(iter(info))
    if name not in info:
        raise DataError(f"{info_path}: no data set '{name}'; known: {known}")
    entry = info[name]
    if not isinstance(entry, dict):
        raise DataError(f"{info_path}: entry '{name}' is not an object")
    return name, entry


def _entry_files(folder: Path, name: str, entry: dict[str, Any]) -> list[Path]:
    if "file_name" not in entry:
        hub = next((k for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if k in entry), None)
        why = f"it names {hub}, and almr reads local files only: download it" if hub else "add"
        raise DataError(f"{folder / DATASET_INFO}: entry '{name}' has no file_name; {why} and set file_name")
    target = folder / entry["file_name"]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.is_file() and _data_suffix(p) is not None)
        if not files:
            raise DataError(f"{target}: folder of data set '{name}' holds no .json/.jsonl files")
        return files
    if not target.is_file():
        raise DataError(f"{target}: file of data set '{name}' does not exist; fix file_name in {DATASET_INFO}")
    return [target]


def _resolve(label: str, files: list[Path], fmt: str, entry: dict[str, Any] | None, first: Record) -> _Source:
    """The concrete format, columns and tags: from the entry of dataset_info.json when there is
    one (LlamaFactory's defaults for what it leaves out), else from the first record's keys."""
    where, record = first
    if entry is not None:
        formatting = entry.get("formatting", "alpaca")
        if formatting not in ("alpaca", "sharegpt", "openai"):
            raise DataError(f"{label}: formatting '{formatting}' in {DATASET_INFO}; almr reads alpaca and sharegpt")
        style = "alpaca" if formatting == "alpaca" else "sharegpt"
        if fmt == "auto":
            fmt = "ranking" if entry.get("ranking", False) else style
        for key in ("columns", "tags"):
            if not isinstance(entry.get(key, {}), dict):
                raise DataError(f"{label}: {key} in {DATASET_INFO} is not an object of names")
        base = dict(_ALPACA_COLUMNS if style == "alpaca" else _SHAREGPT_COLUMNS)
        tags = dict(_OPENAI_TAGS if formatting == "openai" else _SHAREGPT_TAGS)
        columns = {**base, **_PAIR_COLUMNS, **entry.get("columns", {})}
        tags.update(entry.get("tags", {}))
        return _Source(label, files, fmt, columns, tags, style)
    if fmt == "auto":
        fmt = _guess_format(record, where)
    # A plain file has no dataset_info.json to declare the optional columns: read them when present.
    style = "sharegpt" if ("conversations" in record or "messages" in record) else "alpaca"
    columns: dict[str, str | None] = {**_ALPACA_COLUMNS, "history": "history", "system": "system", **_PAIR_COLUMNS}
    if style == "sharegpt":
        columns["messages"] = "conversations" if "conversations" in record else "messages"
    return _Source(label, files, fmt, columns, _plain_tags(record, columns.get("messages")), style)


def _plain_tags(record: dict[str, Any], messages_column: str | None) -> dict[str, str]:
    """ShareGPT's from/value/human/gpt, or OpenAI's role/content/user/assistant: by the first message."""
    turns = record.get(messages_column) if messages_column else None
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
        return dict(_OPENAI_TAGS)
    return dict(_SHAREGPT_TAGS)


def _guess_format(record: dict[str, Any], where: str) -> str:
    keys = set(record)
    if "dialog" in keys:
        return "esconv"
    if {"chosen", "rejected"} <= keys:
        return "ranking" if keys & {"conversations", "instruction"} else "preference"
    if "messages" in keys:
        turns = record["messages"]
        from_tags = isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]
        return "sharegpt" if from_tags else "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    raise DataError(
        f"{where}: cannot tell the format from the keys ({', '.join(sorted(keys)) or 'none'}); set the data set's "
        "format (messages, sharegpt, alpaca, prompt_completion, esconv, preference, ranking)"
    )


def _field_name(source: _Source) -> str:
    """The field a conversation's turns came from, for messages about roles and order."""
    if source.format == "esconv":
        return "dialog"
    if source.format == "sharegpt":
        return str(source.columns.get("messages"))
    return "messages" if source.format == "messages" else "conversation"


# ---------------------------------------------------------------------------- files


def _data_suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in _FILE_SUFFIXES:
        for compression in _COMPRESSIONS:
            if name.endswith(suffix + compression):
                return suffix
    return None


def _read_bytes(path: Path) -> bytes:
    # The same decompression as almr.data.sources' streaming reader; a chat data set is read whole.
    try:
        with path.open("rb") as f:
            if path.name.lower().endswith(".gz"):
                return gzip.decompress(f.read())
            if path.name.lower().endswith(".zst"):
                with zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as reader:
                    return reader.read()
            return f.read()
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
        raise DataError(
            f"{path}: cannot read the file ({type(err).__name__}: {err}); is it truncated or corrupt?"
        ) from None


def _read_records(path: Path, limit: int | None) -> list[Record]:
    """The records of a .jsonl or .json file (a JSON list; JSON Lines also accepted), at most `limit`."""
    suffix = _data_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown file type; use .jsonl or .json, plain, .gz or .zst")
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: non-UTF-8 bytes at byte {err.start}; save the file as UTF-8") from None
    if suffix == ".json" and text.lstrip().startswith("["):
        records = _json_list(path, text)
    else:
        records = _json_lines(path, text, limit)
    if not records:
        raise DataError(f"{path}: empty file: no records")
    return records if limit is None else records[:limit]


def _json_list(path: Path, text: str) -> list[Record]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg} at column {err.colno}") from None
    records = []
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{path}[{index}]: record is {_kind(record)}, not a JSON object")
        records.append((f"{path}[{index}]", record))
    return records


def _json_lines(path: Path, text: str, limit: int | None) -> list[Record]:
    records: list[Record] = []
    for number, record in json_lines(text.splitlines(), path):
        records.append((f"{path}:{number}", record))
        if limit is not None and len(records) >= limit:
            break
    return records


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


# ---------------------------------------------------------------------------- fields and checks


def _get(record: dict[str, Any], key: str | None, where: str, fix: str) -> Any:
    if key is None or key not in record:
        fields = ", ".join(sorted(record)) or "none"
        raise DataError(f"{where}: no field '{key}' (fields: {fields}); {fix}")
    return record[key]


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {field}: content is {_kind(value)}, not a string; give the text as a string")
    if not value.strip():
        raise DataError(f"{where}: {field}: empty content; write the turn's text or remove the record")
    return value


def _check_conversation(messages: list[Message], where: str, field: str, final: str) -> None:
    """System only first; then user, assistant, user, ... ; the last turn's role is `final`;
    SFT needs an assistant turn to learn from. (Roles and contents are checked on reading.)"""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    offset = len(messages) - len(body)
    for i, message in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            where_turn = f"{field}[{i + offset}]"
            if message["role"] == "system":
                raise DataError(f"{where}: {where_turn}: a system turn after the first turn; only the first turn "
                                "may be a system turn: merge it into that one or drop it")  # fmt: skip
            raise DataError(
                f"{where}: {where_turn}: roles out of order: {message['role']} where {expected} is due; after an "
                "optional system turn, user and assistant turns alternate, starting with the user"
            )
    if final == "assistant" and not any(m["role"] == "assistant" for m in body):
        raise DataError(f"{where}: {field}: no assistant turn, so nothing to learn; add the assistant's reply")
    if body and body[-1]["role"] != final:
        last = f"{field}[{len(messages) - 1}]"
        fix = "end it with the assistant's reply" if final == "assistant" else "end the prompt with the user's turn"
        article = "an" if body[-1]["role"] == "assistant" else "a"
        raise DataError(f"{where}: {last}: the conversation ends with {article} {body[-1]['role']} turn; {fix}")
    if not body:
        raise DataError(f"{where}: {field}: no user turn; add the user's message")


def _check_pair(prompt: list[Message], chosen: list[Message], rejected: list[Message], where: str) -> None:
    _check_conversation(prompt, where, "prompt", final="user")
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply:
            raise DataError(f"{where}: {name}: no reply; give the assistant's {name} reply")
        _check_conversation(prompt + reply, where, f"prompt + {name}", final="assistant")
    if chosen == rejected:
        raise DataError(f"{where}: chosen equals rejected, so the pair teaches nothing; fix the rejected reply or "
                        "remove the record")  # fmt: skip


def _message(value: Any, where: str, field: str, role_key: str, content_key: str, roles: dict[str, str]) -> Message:
    """One turn {role_key: tag, content_key: text} mapped through `roles` (tag -> role)."""
    if not isinstance(value, dict):
        raise DataError(f"{where}: {field}: a turn is {_kind(value)}, not an object with {role_key} and {content_key}")
    if role_key not in value or content_key not in value:
        keys = ", ".join(sorted(value)) or "none"
        raise DataError(f"{where}: {field}: a turn needs '{role_key}' and '{content_key}' (it has {keys}); for "
                        "LlamaFactory data set tags.role_tag / tags.content_tag in dataset_info.json")  # fmt: skip
    tag = value[role_key]
    if tag not in roles:
        known = ", ".join(t if t == r else f"{t} (as {r})" for t, r in roles.items())
        raise DataError(f"{where}: {field}.{role_key}: unknown role {tag!r}; almr reads {known}")
    return {"role": roles[tag], "content": _text(value[content_key], where, f"{field}.{content_key}")}


def _turns(value: Any, where: str, field: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[Message]:
    if not isinstance(value, list):
        raise DataError(f"{where}: {field}: expected a list of turns, got {_kind(value)}")
    return [_message(turn, where, f"{field}[{i}]", role_key, content_key, roles) for i, turn in enumerate(value)]


_PLAIN_ROLES = {role: role for role in ROLES}


# ---------------------------------------------------------------------------- SFT formats


def _messages_conversation(record: dict[str, Any], where: str, source: _Source) -> list[Message]:
    value = _get(record, "messages", where, 'a messages record is {"messages": [{"role", "content"}, ...]}')
    return _turns(value, where, "messages", "role", "content", _PLAIN_ROLES)


def _sharegpt_roles(source: _Source) -> dict[str, str]:
    tags = source.tags
    return {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}


def _sharegpt_turns(record: dict[str, Any], where: str, source: _Source) -> list[Message]:
    """The messages column, with the system column (when declared and not already a first
    system-tag turn) in front, as LlamaFactory does."""
    column = source.columns.get("messages")
    value = _get(record, column, where, f"set columns.messages in {DATASET_INFO} to the column holding the turns")
    tags = source.tags
    turns = _turns(value, where, str(column), tags["role_tag"], tags["content_tag"], _sharegpt_roles(source))
    system = _optional_text(record, source.columns.get("system"), where)
    if system is not None and not (turns and turns[0]["role"] == "system"):
        turns.insert(0, {"role": "system", "content": system})
    return turns


def _optional_text(record: dict[str, Any], column: str | None, where: str) -> str | None:
    """An optional column (system): absent, null or "" means none."""
    value = record.get(column) if column else None
    if value is None or value == "":
        return None
    return _text(value, where, str(column))


def _alpaca_prompt(record: dict[str, Any], where: str, source: _Source) -> list[Message]:
    """System, the history's [user, assistant] pairs, then instruction and input joined by a
    newline (each left out when empty), as LlamaFactory builds them."""
    cols = source.columns
    turns: list[Message] = []
    system = _optional_text(record, cols.get("system"), where)
    if system is not None:
        turns.append({"role": "system", "content": system})
    history = record.get(cols["history"]) if cols.get("history") else None
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise DataError(f"{where}: {cols['history']}[{i}]: expected a [user, assistant] pair, got {pair!r:.60}")
        turns.append({"role": "user", "content": _text(pair[0], where, f"{cols['history']}[{i}][0]")})
        turns.append({"role": "assistant", "content": _text(pair[1], where, f"{cols['history']}[{i}][1]")})
    fix = f"set columns.prompt in {DATASET_INFO} to the column holding the instruction"
    parts = [(cols.get("prompt"), _get(record, cols.get("prompt"), where, fix))]
    if cols.get("query"):
        parts.append((cols["query"], record.get(cols["query"])))
    for column, part in parts:
        if part is not None and not isinstance(part, str):
            raise DataError(f"{where}: {column}: content is {_kind(part)}, not a string; give the text as a string")
    text = "\n".join(part for _, part in parts if part)  # empty or null parts are left out, as LlamaFactory does
    turns.append({"role": "user", "content": _text(text, where, f"{cols.get('prompt')} + {cols.get('query')}")})
    return turns


def _alpaca_conversation(record: dict[str, Any], where: str, source: _Source) -> list[Message]:
    column = source.columns.get("response")
    fix = f"set columns.response in {DATASET_INFO} to the column holding the reply"
    reply = _text(_get(record, column, where, fix), where, str(column))
    return [*_alpaca_prompt(record, where, source), {"role": "assistant", "content": reply}]


def _side(value: Any, where: str, field: str, role: str) -> list[Message]:
    """A prompt/completion/chosen/rejected value: a string (one `role` turn) or a list of messages."""
    if isinstance(value, str):
        return [{"role": role, "content": _text(value, where, field)}]
    return _turns(value, where, field, "role", "content", _PLAIN_ROLES)


def _prompt_completion_conversation(record: dict[str, Any], where: str, source: _Source) -> list[Message]:
    fix = 'a prompt_completion record is {"prompt": ..., "completion": ...}'
    prompt = _side(_get(record, "prompt", where, fix), where, "prompt", "user")
    return prompt + _side(_get(record, "completion", where, fix), where, "completion", "assistant")


def _esconv_conversation(record: dict[str, Any], where: str) -> tuple[list[Message], list[list[str]]]:
    """ESConv's dialog as messages: seeker -> user, supporter -> assistant; consecutive turns
    of one speaker joined by a newline (they are separate chat bubbles of one turn); the
    supporter's opening turns before the seeker first speaks dropped (a greeting answering
    nothing; chat templates and our checks start with the user), and so are the seeker's
    turns after the supporter's last (nothing answers them). Each assistant turn's support
    strategies (annotation.strategy) are returned beside the text, never in it."""
    dialog = _get(record, "dialog", where, "an ESConv record has a dialog list")
    if not isinstance(dialog, list):
        raise DataError(f"{where}: dialog: expected a list of turns, got {_kind(dialog)}")
    groups: list[tuple[str, list[str], list[str]]] = []  # (speaker, texts, strategies)
    for i, turn in enumerate(dialog):
        field = f"dialog[{i}]"
        if not isinstance(turn, dict):
            raise DataError(f"{where}: {field}: a turn is {_kind(turn)}, not an object with speaker and content")
        speaker = turn.get("speaker")
        if speaker not in ("seeker", "supporter"):
            raise DataError(f"{where}: {field}.speaker: unknown speaker {speaker!r}; ESConv's are seeker and supporter")
        text = _text(turn.get("content"), where, f"{field}.content").strip()
        annotation = turn.get("annotation")
        strategy = annotation.get("strategy") if isinstance(annotation, dict) else None
        if not groups or groups[-1][0] != speaker:
            groups.append((speaker, [], []))
        groups[-1][1].append(text)
        if speaker == "supporter" and strategy:
            groups[-1][2].append(str(strategy))
    while groups and groups[0][0] == "supporter":
        groups.pop(0)
    while groups and groups[-1][0] == "seeker":
        groups.pop()
    if not groups:
        raise DataError(f"{where}: dialog: no supporter turn answers the seeker, so nothing to learn; add one")
    messages = [
        {"role": "user" if speaker == "seeker" else "assistant", "content": "\n".join(texts)}
        for speaker, texts, _ in groups
    ]
    return messages, [strategies for speaker, _, strategies in groups if speaker == "supporter"]


_CONVERSATION_READERS: dict[str, Callable[[dict[str, Any], str, _Source], list[Message]]] = {
    "messages": _messages_conversation,
    "sharegpt": _sharegpt_turns,
    "alpaca": _alpaca_conversation,
    "prompt_completion": _prompt_completion_conversation,
}


# ---------------------------------------------------------------------------- preference formats

Pair = tuple[list[Message], list[Message], list[Message]]


def _preference_pair(record: dict[str, Any], where: str, source: _Source) -> Pair:
    """TRL's preference format: explicit prompt (string or messages) with chosen/rejected
    (strings or assistant messages), or the implicit-prompt form where chosen and rejected are
    whole conversations and the prompt is their common beginning up to the last user turn."""
    fix = 'a preference record is {"prompt", "chosen", "rejected"}'
    chosen_value = _get(record, "chosen", where, fix)
    rejected_value = _get(record, "rejected", where, fix)
    chosen = _side(chosen_value, where, "chosen", "assistant")
    rejected = _side(rejected_value, where, "rejected", "assistant")
    if "prompt" in record:
        return _side(record["prompt"], where, "prompt", "user"), chosen, rejected
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and chosen[shared - 1]["role"] != "user":
        shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _ranking_pair(record: dict[str, Any], where: str, source: _Source) -> Pair:
    """LlamaFactory's ranking format: an alpaca-style prompt (instruction, input, history, system)
    or a sharegpt conversation ending with the user, and chosen/rejected replies (alpaca:
    strings; sharegpt: a turn {from, value}, a string also accepted)."""
    cols = source.columns
    if source.style == "sharegpt":
        prompt = _sharegpt_turns(record, where, source)
    else:
        prompt = _alpaca_prompt(record, where, source)
    replies = []
    for name in ("chosen", "rejected"):
        column = cols.get(name)
        value = _get(record, column, where, f"set columns.{name} in {DATASET_INFO} to the column holding it")
        if isinstance(value, dict):
            tags = source.tags
            reply = _message(value, where, str(column), tags["role_tag"], tags["content_tag"], _sharegpt_roles(source))
        else:
            reply = {"role": "assistant", "content": _text(value, where, str(column))}
        replies.append([reply])
    return prompt, replies[0], replies[1]
