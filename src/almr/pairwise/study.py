"""The study file: one SQLite file holds a whole pairwise study — its models, prompts, the replies
collected (and those that could not be), the blind items, the annotators, their votes, and the LLM
judge's verdicts (kept apart from the human votes).

Plain `sqlite3`, WAL mode: the annotation page and the admin commands may touch the file at once
(readers never block the writer); every call opens its own connection, so the page's worker threads
share nothing. An annotator is a name and the SHA-256 of a random token (shown once when issued):
the token has 256 bits, so a fast hash is enough and lookup is one indexed query.

Votes: one per (item, annotator); voting again on an item replaces the earlier vote (the last
counts) and increments `revisions`, so a changed mind is kept visible in the data.
"""

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from almr.errors import AlmrError
from almr.pairwise.dialogues import Prompt

SCHEMA_VERSION = 1
CHOICES = ("left", "right", "tie", "both_bad")
TOKEN_PREFIX = "almr-ann-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    key TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, turn INTEGER NOT NULL, history TEXT NOT NULL,
    user TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replies (
    prompt_key TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL, scrubbed INTEGER NOT NULL,
    PRIMARY KEY (prompt_key, model));
CREATE TABLE IF NOT EXISTS failures (
    prompt_key TEXT NOT NULL, model TEXT NOT NULL, error TEXT NOT NULL, PRIMARY KEY (prompt_key, model));
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, prompt_key TEXT NOT NULL, model_left TEXT NOT NULL, model_right TEXT NOT NULL,
    rank INTEGER NOT NULL, required INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    item_id INTEGER NOT NULL, annotator TEXT NOT NULL, choice TEXT NOT NULL, created_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (item_id, annotator));
CREATE TABLE IF NOT EXISTS judge_votes (
    item_id INTEGER NOT NULL, judge TEXT NOT NULL, first TEXT, second TEXT, choice TEXT, error TEXT,
    PRIMARY KEY (item_id, judge));
"""


@dataclass(frozen=True)
class Item:
    """One blind comparison: a prompt, and two models' replies on fixed sides."""

    id: int
    prompt_key: str
    conversation_id: str
    model_left: str
    model_right: str
    required: int


@dataclass(frozen=True)
class Vote:
    item_id: int
    annotator: str
    choice: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Study:
    """An existing study file (`Study.create` makes one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AlmrError(f"study file {self.path} does not exist; make one with `almr pairwise make`")
        try:
            with self._connect() as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'models'").fetchone()
        except sqlite3.DatabaseError as err:
            raise AlmrError(f"{self.path} is not a study file ({err})") from None
        if row is None:
            raise AlmrError(f"{self.path} is not a study file (no models recorded); make one with `almr pairwise make`")
        self.models: list[str] = json.loads(row[0])

    @classmethod
    def create(cls, path: str | Path, models: Sequence[str], meta: Mapping[str, Any]) -> "Study":
        path = Path(path)
        if path.exists():
            raise AlmrError(f"study file {path} already exists; choose another --out or delete it")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        try:
            db.executescript(_SCHEMA)
            values = {"models": list(models), "schema_version": SCHEMA_VERSION, "created_at": _now(), **meta}
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v, ensure_ascii=False)) for k, v in values.items()])  # fmt: skip
            db.commit()
        finally:
            db.close()
        return cls(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # ---------------------------------------------------------------------------------------- writing

    def meta(self) -> dict[str, Any]:
        with self._connect() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def set_meta(self, key: str, value: Any) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        rows = [(p.key, p.conversation_id, p.turn, json.dumps(p.history, ensure_ascii=False), p.user) for p in prompts]
        with self._connect() as db:
            db.executemany("INSERT INTO prompts VALUES (?, ?, ?, ?, ?)", rows)

    def add_replies(self, model: str, replies: Mapping[str, tuple[str, int]], failures: Mapping[str, str]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)",
                           [(key, model, text, n) for key, (text, n) in replies.items()])  # fmt: skip
            db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)",
                           [(key, model, error) for key, error in failures.items()])  # fmt: skip

    def add_items(self, rows: Sequence[tuple[str, str, str, int, int]]) -> None:
        """(prompt_key, model_left, model_right, rank, required) rows; ids follow the order given."""
        with self._connect() as db:
            db.executemany("INSERT INTO items (prompt_key, model_left, model_right, rank, required) "
                           "VALUES (?, ?, ?, ?, ?)", rows)  # fmt: skip

    # ---------------------------------------------------------------------------------------- annotators

    def add_annotator(self, name: str) -> str:
        """Issue a token for annotator `name` (a new one replaces the old); returns the token, shown once."""
        if not name.strip() or len(name) > 100:
            raise AlmrError("an annotator name must be 1-100 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._connect() as db:
            db.execute("INSERT INTO annotators VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "token_hash = excluded.token_hash", (name, hash_token(token), _now()))  # fmt: skip
        return token

    def annotator(self, token: str) -> str | None:
        """The annotator holding `token`, or None."""
        with self._connect() as db:
            row = db.execute("SELECT name FROM annotators WHERE token_hash = ?", (hash_token(token),)).fetchone()
        return row[0] if row else None

    def annotators(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM annotators ORDER BY name")]

    # ---------------------------------------------------------------------------------------- votes

    def vote(self, item_id: int, annotator: str, choice: str) -> int:
        """Record `annotator`'s vote; a second vote on the item replaces the first (the last counts).
        Returns how many times this annotator has changed this vote."""
        return self.add_votes([(item_id, annotator, choice)])[0]

    def add_votes(self, votes: Sequence[tuple[int, str, str]]) -> list[int]:
        """Record (item, annotator, choice) votes in one transaction (all or none), as `vote` each."""
        with self._connect() as db:
            items = {r[0] for r in db.execute("SELECT id FROM items")}
            annotators = {r[0] for r in db.execute("SELECT name FROM annotators")}
            for item_id, annotator, choice in votes:
                if choice not in CHOICES:
                    raise AlmrError(f"choice {choice!r} is not one of {', '.join(CHOICES)}")
                if item_id not in items:
                    raise AlmrError(f"item {item_id} is not in study {self.path}")
                if annotator not in annotators:
                    raise AlmrError(f"{annotator!r} is not an annotator of study {self.path} "
                                    "(`almr pairwise token add`)")  # fmt: skip
            revisions = []
            for item_id, annotator, choice in votes:
                db.execute("INSERT INTO votes VALUES (?, ?, ?, ?, 0) ON CONFLICT(item_id, annotator) DO UPDATE SET "
                           "choice = excluded.choice, created_at = excluded.created_at, revisions = revisions + 1",
                           (item_id, annotator, choice, _now()))  # fmt: skip
                revisions.append(int(db.execute("SELECT revisions FROM votes WHERE item_id = ? AND annotator = ?",
                                                (item_id, annotator)).fetchone()[0]))  # fmt: skip
            return revisions

    def votes(self) -> list[Vote]:
        with self._connect() as db:
            rows = db.execute("SELECT item_id, annotator, choice FROM votes ORDER BY item_id, annotator")
            return [Vote(*r) for r in rows]

    def next_item(self, annotator: str) -> int | None:
        """The item this annotator should see next: one they have not voted on that still lacks votes,
        items others started first (so shared items gather their full set of annotators), then by the
        study's seeded order; None when nothing is left for them."""
        with self._connect() as db:
            row = db.execute(
                "SELECT i.id FROM items i LEFT JOIN (SELECT item_id, COUNT(*) AS n FROM votes GROUP BY item_id) v "
                "ON v.item_id = i.id WHERE COALESCE(v.n, 0) < i.required AND i.id NOT IN "
                "(SELECT item_id FROM votes WHERE annotator = ?) ORDER BY COALESCE(v.n, 0) > 0 DESC, i.rank LIMIT 1",
                (annotator,),
            ).fetchone()
        return row[0] if row else None

    def progress(self, annotator: str | None = None) -> dict[str, int]:
        with self._connect() as db:
            needed = db.execute("SELECT COALESCE(SUM(required), 0) FROM items").fetchone()[0]
            done = db.execute("SELECT COUNT(DISTINCT item_id) FROM votes").fetchone()[0]
            counted = db.execute(
                "SELECT COALESCE(SUM(MIN(n, r)), 0) FROM (SELECT COUNT(*) AS n, i.required AS r "
                "FROM votes JOIN items i ON i.id = item_id GROUP BY item_id)"
            ).fetchone()[0]
            mine = (db.execute("SELECT COUNT(*) FROM votes WHERE annotator = ?", (annotator,)).fetchone()[0]
                    if annotator else 0)  # fmt: skip
        return {"votes_needed": int(needed), "votes_done": int(counted), "items_started": int(done), "mine": int(mine)}

    # ---------------------------------------------------------------------------------------- reading

    def items(self) -> list[Item]:
        with self._connect() as db:
            rows = db.execute("SELECT i.id, i.prompt_key, p.conversation_id, i.model_left, i.model_right, i.required "
                              "FROM items i JOIN prompts p ON p.key = i.prompt_key ORDER BY i.id")  # fmt: skip
            return [Item(*r) for r in rows]

    def item_view(self, item_id: int) -> dict[str, Any]:
        """What an annotator sees of an item: the history, the user turn and the two replies — never
        the models' names."""
        with self._connect() as db:
            row = db.execute(
                "SELECT p.history, p.user, l.text, r.text FROM items i JOIN prompts p ON p.key = i.prompt_key "
                "JOIN replies l ON l.prompt_key = i.prompt_key AND l.model = i.model_left "
                "JOIN replies r ON r.prompt_key = i.prompt_key AND r.model = i.model_right WHERE i.id = ?",
                (item_id,),
            ).fetchone()
        if row is None:
            raise AlmrError(f"item {item_id} is not in study {self.path}")
        return {"id": item_id, "history": json.loads(row[0]), "user": row[1], "left": row[2], "right": row[3]}

    def prompts(self) -> dict[str, dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT key, conversation_id, turn, history, user FROM prompts")
            return {k: {"conversation_id": c, "turn": t, "history": json.loads(h), "user": u} for k, c, t, h, u in rows}

    def replies(self) -> dict[str, dict[str, str]]:
        """{model: {prompt_key: reply}}."""
        out: dict[str, dict[str, str]] = {m: {} for m in self.models}
        with self._connect() as db:
            for key, model, text in db.execute("SELECT prompt_key, model, text FROM replies"):
                out.setdefault(model, {})[key] = text
        return out

    def failures(self) -> list[dict[str, str]]:
        with self._connect() as db:
            rows = db.execute("SELECT model, prompt_key, error FROM failures ORDER BY model, prompt_key")
            return [{"model": m, "prompt": k, "error": e} for m, k, e in rows]

    def save_judge_verdict(self, item_id: int, judge: str, first: str | None, second: str | None,
                           choice: str | None, error: str | None) -> None:  # fmt: skip
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO judge_votes VALUES (?, ?, ?, ?, ?, ?)",
                       (item_id, judge, first, second, choice, error))  # fmt: skip

    def judge_votes(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT item_id, judge, first, second, choice, error FROM judge_votes ORDER BY item_id")
            return [dict(zip(("item_id", "judge", "first", "second", "choice", "error"), r, strict=True)) for r in rows]
