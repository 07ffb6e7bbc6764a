"""The prompts of a study: user turns with the history before them, read from a JSONL of dialogues
or from the conversation export of `almr serve` (`Store.export`).

A dialogue line (docs/pairwise.md):

    {"id": "c1", "turns": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}, …]}

`id` is the conversation id (bootstrap intervals resample conversations, so turns of one
conversation stay together); roles alternate user/assistant (system turns are dropped: every model
gets the same history, and `pairwise.system_prompt` when set). Each user turn becomes a prompt with
the turns before it as history; the assistant turn after it, when there is one, is the *logged*
reply (the source `logged` of `almr pairwise make`: the deployed model's own answer).

A serve export line is a conversation tree: `{"id", "messages": [{"id", "parent_id", "role",
"content", "model", …}], "user", …}`. Each user message becomes a prompt whose history is its path
from the root; its logged reply is its first assistant child (a regenerated reply is a later sibling).
"""

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from almr.data.jsonl import json_lines
from almr.errors import DataError

Message = dict[str, str]
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """One user turn to answer: `history` (user/assistant turns before it), `user` (the turn itself)."""

    key: str
    conversation_id: str
    turn: int
    history: list[Message] = field(hash=False)
    user: str
    logged: str | None = None  # the reply the conversation log holds after this turn
    logged_model: str | None = None

    def messages(self, system_prompt: str | None = None) -> list[Message]:
        """The chat request for this turn."""
        head = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*head, *self.history, {"role": "user", "content": self.user}]


def read_prompts(path: str | Path, turns: Literal["all", "last", "first"] = "all", max_prompts: int | None = None,
                 seed: int = 0) -> list[Prompt]:  # fmt: skip
    """Every prompt of the dialogues (or serve export) at `path`, in file order; `turns` picks which user
    turns of a conversation; `max_prompts` keeps a seeded sample (still in file order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dialogue file {path} does not exist")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for line_no, record in _records(path):
        where = f"{path}:{line_no}"
        if "turns" in record:
            found = _from_dialogue(record, where)
        elif "messages" in record:
            found = _from_serve_export(record, where)
        else:
            raise DataError(f"{where}: a line needs `turns` (a dialogue) or `messages` (an `almr serve` export); "
                            f"it has {sorted(record)}")  # fmt: skip
        if not found:
            continue
        cid = found[0].conversation_id
        if cid in seen:
            raise DataError(f"{where}: conversation id {cid!r} appears twice; ids must be unique")
        seen.add(cid)
        prompts.extend(found if turns == "all" else [found[-1] if turns == "last" else found[0]])
    if not prompts:
        raise DataError(f"{path} holds no user turn to compare replies on")
    if max_prompts is not None and max_prompts < len(prompts):
        keep = set(random.Random(seed).sample(range(len(prompts)), max_prompts))
        prompts = [p for i, p in enumerate(prompts) if i in keep]
    return prompts


def _records(path: Path) -> Iterable[tuple[int, Mapping[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        yield from json_lines(lines, path)


def _conversation_id(record: Mapping[str, Any], where: str) -> str:
    cid = record.get("id")
    if not isinstance(cid, str | int) or isinstance(cid, bool) or str(cid) == "":
        raise DataError(f"{where}: `id` (the conversation id) must be a non-empty string or integer")
    return str(cid)


def _message(turn: Any, where: str, index: int) -> Message:
    if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or "role" not in turn:
        raise DataError(f'{where}: turns[{index}] must be {{"role": …, "content": "…"}}')
    if turn["role"] not in (*ROLES, "system"):
        raise DataError(f"{where}: turns[{index}].role is {turn['role']!r}; use user, assistant or system")
    return {"role": turn["role"], "content": turn["content"]}


def _from_dialogue(record: Mapping[str, Any], where: str) -> list[Prompt]:
    cid = _conversation_id(record, where)
    turns = record["turns"]
    if not isinstance(turns, list):
        raise DataError(f"{where}: `turns` must be a list of {{role, content}}")
    messages = [m for i, t in enumerate(turns) if (m := _message(t, where, i))["role"] != "system"]
    for i, m in enumerate(messages):
        if m["role"] != ROLES[i % 2]:
            raise DataError(f"{where}: turns must alternate user, assistant, … starting with user (system turns "
                            f"aside); turn {i} is {m['role']}")  # fmt: skip
    prompts = []
    for i in range(0, len(messages), 2):
        logged = messages[i + 1]["content"] if i + 1 < len(messages) else None
        prompts.append(Prompt(f"{cid}#{i // 2}", cid, i // 2, messages[:i], messages[i]["content"], logged,
                              record.get("model") if isinstance(record.get("model"), str) else None))  # fmt: skip
    return prompts


def _from_serve_export(record: Mapping[str, Any], where: str) -> list[Prompt]:
    cid = _conversation_id(record, where)
    raw = record["messages"]
    if not isinstance(raw, list):
        raise DataError(f"{where}: `messages` must be a list")
    nodes: dict[str, Mapping[str, Any]] = {}
    for i, m in enumerate(raw):
        _message(m, where, i)
        if not isinstance(m.get("id"), str):
            raise DataError(f"{where}: messages[{i}] has no `id`; is this an `almr serve` export?")
        nodes[m["id"]] = m
    prompts = []
    for m in raw:
        if m["role"] != "user":
            continue
        path = _path(nodes, m, where)
        history = [{"role": n["role"], "content": n["content"]} for n in path[:-1] if n["role"] != "system"]
        child = next((n for n in raw if n.get("parent_id") == m["id"] and n["role"] == "assistant"), None)
        prompts.append(Prompt(f"{cid}#{m['id']}", cid, len(prompts), history, m["content"],
                              child["content"] if child else None, child.get("model") if child else None))  # fmt: skip
    return prompts


def _path(nodes: Mapping[str, Mapping[str, Any]], node: Mapping[str, Any], where: str) -> Sequence[Mapping[str, Any]]:
    path = [node]
    while (parent := path[-1].get("parent_id")) is not None:
        if parent not in nodes or len(path) > len(nodes):
            raise DataError(
                f"{where}: message {path[-1]['id']} has parent {parent!r}, which is not in the conversation"
            )
        path.append(nodes[parent])
    return path[::-1]
