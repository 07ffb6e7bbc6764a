"""Benchmark files in their published layouts, read and checked before any model work.

Contract: `task_files(task, data_dir, data_files)` resolves a task's files and raises
`DataError` naming the task, the expected path and where to get the data when one is missing;
`missing_files(task, ...)` says the same as a reason (None when every file is there), so that a
caller can report every missing task at once or skip them;
`load_records(task, ...)` returns the task's records as plain dicts, each checked for the
fields its task needs (a bad record raises `DataError` naming file, line and field).

Layouts read (docs/tasks/*.md say the same per task):

- JSON Lines (`.jsonl`, and FewCLUE's `.json` files, which hold one JSON object per line);
- SQuAD-style JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`), the published
  form of CMRC 2018 and DRCD, flattened to one record per question as `hfl/cmrc2018` does.

A world task's data directory may be the world itself or its `bench/` folder.
"""

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from almr.data.jsonl import json_lines
from almr.errors import DataError
from almr.evaluate.registry import TASKS, TaskInfo

Record = dict[str, Any]


def _locate(
    task: TaskInfo, data_dir: str | Path | None, data_files: Mapping[str, str] | None
) -> tuple[list[Path], str | None]:
    """The task's paths and, when they cannot all be read, why and where to get the data."""
    overrides = dict(data_files or {})
    paths: list[Path] = []
    for i, rel in enumerate(task.files):
        if i == 0 and task.name in overrides:
            paths.append(Path(overrides[task.name]))
            continue
        if data_dir is None:
            return paths, (
                f"no data directory given; pass --data-dir DIR holding {rel} "
                f"(or --data-file {task.name}=PATH); get it from {task.source}"
            )
        base = Path(data_dir)
        if task.world and (base / "bench").is_dir():
            base = base / "bench"
        paths.append(base / rel)
    absent = [str(path) for path in paths if not path.is_file()]
    if len(absent) == 1:
        return paths, f"data file {absent[0]} does not exist; get it from {task.source}"
    if absent:
        return paths, f"data files {', '.join(absent)} do not exist; get them from {task.source}"
    return paths, None


def missing_files(
    task: TaskInfo, data_dir: str | Path | None, data_files: Mapping[str, str] | None = None
) -> str | None:
    """Why the task's files cannot be read (no data directory, files that do not exist) and where to
    get them; None when every file is there. Their records are not read (`check_data` does that)."""
    return _locate(task, data_dir, data_files)[1]


def task_files(task: TaskInfo, data_dir: str | Path | None, data_files: Mapping[str, str] | None = None) -> list[Path]:
    """The task's files: `data_files[task.name]` when given (its first file), else under `data_dir`."""
    paths, missing = _locate(task, data_dir, data_files)
    if missing:
        raise DataError(f"task {task.name}: {missing}")
    return paths


def check_data(tasks: list[TaskInfo], data_dir: str | Path | None, data_files: Mapping[str, str] | None) -> None:
    """Read and check every file of our tasks now, so that bad data fails before a model loads."""
    for task in tasks:
        if task.kind in ("ours", "judge"):
            load_records(task.name, data_dir, data_files)


# --------------------------------------------------------------------------- readers


def read_jsonl(path: Path) -> list[tuple[int, Record]]:
    """(line number, record) for each non-blank line; a line that is not a JSON object is an error."""
    with path.open(encoding="utf-8-sig") as f:
        return list(json_lines(f, path))


def read_squad(path: Path) -> list[tuple[int, Record]]:
    """SQuAD-style JSON flattened to one record per question (`line` is the question's index)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: expected SQuAD-style JSON with a top-level 'data' list")
    out: list[tuple[int, Record]] = []
    for article in doc["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                answers = qa.get("answers", [])
                record = {
                    "id": qa.get("id"),
                    "context": para.get("context"),
                    "question": qa.get("question"),
                    "answers": {
                        "text": [a.get("text") for a in answers if isinstance(a, dict)],
                        "answer_start": [a.get("answer_start") for a in answers if isinstance(a, dict)],
                    },
                }
                out.append((len(out) + 1, record))
    return out


def _get(record: Record, dotted: str, kind: type | tuple[type, ...], path: Path, lineno: int) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"{path}:{lineno}: missing field '{dotted}'")
        node = node[part]
    if not isinstance(node, kind) or (isinstance(node, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}:{lineno}: field '{dotted}' must be {names}, got {node!r}")
    return node


# --------------------------------------------------------------------------- per-task record checks
# Each check returns the record with the fields its task's YAML reads; extra fields are kept.


def _mmlu(r: Record, p: Path, n: int) -> Record:
    _get(r, "question", str, p, n)
    choices = _get(r, "choices", list, p, n)
    answer = _get(r, "answer", int, p, n)
    if not 0 <= answer < len(choices):
        raise DataError(f"{p}:{n}: field 'answer' {answer} is not an index into choices ({len(choices)})")
    return r


def _ceval(r: Record, p: Path, n: int) -> Record:
    for key in ("question", "A", "B", "C", "D", "answer"):
        _get(r, key, (str, int, float), p, n)
    if r["answer"] not in ("A", "B", "C", "D"):
        raise DataError(f"{p}:{n}: field 'answer' must be one of A, B, C, D, got {r['answer']!r}")
    r = {**r, **{k: str(r[k]) for k in "ABCD"}}
    r.setdefault("fact_source", "")
    return r


def _reading(r: Record, p: Path, n: int) -> Record:
    _get(r, "context", str, p, n)
    _get(r, "question", str, p, n)
    texts = _get(r, "answers.text", list, p, n)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{p}:{n}: field 'answers.text' must be a non-empty list of strings")
    return r


def _gsm8k(r: Record, p: Path, n: int) -> Record:
    _get(r, "question", str, p, n)
    _get(r, "answer", str, p, n)
    return {**r, "lang": r.get("lang", "en")}


def _humaneval(r: Record, p: Path, n: int) -> Record:
    for key in ("task_id", "prompt", "test", "entry_point"):
        _get(r, key, str, p, n)
    return r


def _translation(r: Record, p: Path, n: int) -> Record:
    _get(r, "translation.en", str, p, n)
    _get(r, "translation.zh", str, p, n)
    return r


def _lcsts(r: Record, p: Path, n: int) -> Record:
    _get(r, "text", str, p, n)
    _get(r, "summary", str, p, n)
    return r


def _eprstmt(r: Record, p: Path, n: int) -> Record:
    _get(r, "sentence", str, p, n)
    if _get(r, "label", str, p, n) not in ("Positive", "Negative"):
        raise DataError(f"{p}:{n}: field 'label' must be Positive or Negative, got {r['label']!r}")
    return r


def _cluewsc(r: Record, p: Path, n: int) -> Record:
    _get(r, "text", str, p, n)
    _get(r, "target.span1_text", str, p, n)
    _get(r, "target.span2_text", str, p, n)
    if _get(r, "label", str, p, n) not in ("true", "false"):
        raise DataError(f'{p}:{n}: field \'label\' must be "true" or "false", got {r["label"]!r}')
    return r


def _seceu(r: Record, p: Path, n: int) -> Record:
    _get(r, "scenario", str, p, n)
    _get(r, "subject", str, p, n)
    emotions = _get(r, "emotions", list, p, n)
    norm = _get(r, "norm", list, p, n)
    if len(norm) != len(emotions) or not all(isinstance(x, int | float) for x in norm):
        raise DataError(f"{p}:{n}: field 'norm' must hold one number per emotion ({len(emotions)})")
    return {**r, "lang": r.get("lang", "zh")}


def _taptap(r: Record, p: Path, n: int) -> Record:
    _get(r, "text", str, p, n)
    choices = _get(r, "choices", list, p, n)
    label = r.get("label")
    if isinstance(label, str) and label in choices:
        label = choices.index(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise DataError(f"{p}:{n}: field 'label' must be an index into choices or one of them, got {label!r}")
    return {**r, "label": label}


def _prompt(r: Record, p: Path, n: int) -> Record:
    _get(r, "prompt", str, p, n)
    return r


def _belle(r: Record, p: Path, n: int) -> Record:
    _get(r, "question", str, p, n)
    return {**r, "std_answer": r.get("std_answer", ""), "class": r.get("class", "")}


def _dialogue(r: Record, p: Path, n: int) -> Record:
    turns = _get(r, "opening", list, p, n)
    if not turns or not all(isinstance(t, str) for t in turns):
        raise DataError(f"{p}:{n}: field 'opening' must be a non-empty list of utterances")
    return r


_CHECKS: dict[str, Callable[[Record, Path, int], Record]] = {
    "world_mmlu": _mmlu,
    "world_ceval": _ceval,
    "world_ceval_zh": _ceval,
    "world_ceval_en_only": _ceval,
    "world_zh_share": _ceval,
    "world_cmrc": _reading,
    "world_gsm8k": _gsm8k,
    "world_humaneval": _humaneval,
    "world_wmt_zh-en": _translation,
    "world_wmt_en-zh": _translation,
    "world_lcsts": _lcsts,
    "world_eprstmt": _eprstmt,
    "world_seceu": _seceu,
    "cmrc2018": _reading,
    "drcd": _reading,
    "lcsts": _lcsts,
    "cluewsc": _cluewsc,
    "eprstmt": _eprstmt,
    "wmt22_zh-en": _translation,
    "wmt22_en-zh": _translation,
    "seceu": _seceu,
    "taptap": _taptap,
    "zh_share": _prompt,
    "belle_eval": _belle,
    "turing_test": _dialogue,
}


def _population(path: Path) -> tuple[float, float]:
    try:
        pop = json.loads(path.read_text(encoding="utf-8"))
        mean, sd = float(pop["mean"]), float(pop["sd"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise DataError(f"{path}: expected JSON with numbers 'mean' and 'sd' (the population's SECEU scores)") from None
    if sd <= 0:
        raise DataError(f"{path}: 'sd' must be positive, got {sd}")
    return mean, sd


def load_records(
    task_name: str, data_dir: str | Path | None, data_files: Mapping[str, str] | None = None
) -> list[Record]:
    """The task's records, checked. SECEU records carry the population's `pop_mean`, `pop_sd`."""
    task = TASKS[task_name]
    paths = task_files(task, data_dir, data_files)
    main = paths[0]
    rows = read_squad(main) if main.suffix == ".json" and task_name in ("cmrc2018", "drcd") else read_jsonl(main)
    if not rows:
        raise DataError(f"task {task_name}: {main} holds no records")
    check = _CHECKS[task_name]
    records = [check(record, main, lineno) for lineno, record in rows]
    if task.primary == "eq":
        mean, sd = _population(paths[1])
        records = [{**r, "pop_mean": mean, "pop_sd": sd} for r in records]
    if task_name == "world_ceval_zh":
        records = [r for r in records if r["fact_source"] == "zh"]
    elif task_name == "world_ceval_en_only":
        records = [r for r in records if r["fact_source"] == "en_only"]
    return records
