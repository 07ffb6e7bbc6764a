"""The conversation store: users, conversations and messages as a tree, in SQLAlchemy.

SQLite in WAL mode by default (one server process; readers never block the writer), PostgreSQL
by URL when many server processes share it. The store lives in the API layer, so every
front-end pointed at `/v1` is logged, not just the chat page.

A conversation is a tree of messages: each message points at its parent, so a regenerated reply
is a sibling of the first one, and an edited user turn starts a new branch. A chat request
carries the whole history, and `begin_turn` walks it down the tree, reusing the messages already
stored and adding the new ones; requests from the chat page name their conversation
(`metadata.conversation_id`), others continue the user's conversation whose stored path matches
their history, and a request with a single turn starts a new conversation.

Acknowledged means stored: a reply is committed before the client receives its last byte (the
final SSE chunk and `data: [DONE]`, or the JSON body), so a turn a client saw completed survives
a kill -9 of the server. SQLite's WAL survives a process crash with `synchronous=NORMAL`; only a
power loss can drop the last transactions, and `Store(url, sync_full=True)` closes that.
"""

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from almr.errors import ConfigError


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    conversations: Mapped[list["Conversation"]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    user: Mapped[User] = relationship(back_populates="conversations")
    messages: Mapped[list["Message"]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", order_by="Message.seq"
    )


class Message(Base):
    __tablename__ = "messages"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(32), index=True)
    path_hash: Mapped[str] = mapped_column(String(64), index=True)  # the path from the root: finds a history
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    latency_ms: Mapped[float | None]
    first_token_ms: Mapped[float | None]
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    feedback: Mapped[int | None]  # +1 thumbs up, -1 thumbs down
    created_at: Mapped[datetime] = mapped_column(default=_now)
    conversation: Mapped[Conversation] = relationship(back_populates="messages")


def path_hash(parent_hash: str, role: str, content: str) -> str:
    return hashlib.sha256(json.dumps([parent_hash, role, content], ensure_ascii=False).encode()).hexdigest()


@dataclass
class Turn:
    """Where a reply goes: its conversation, its parent (the last user message) and its new id."""

    conversation_id: str
    parent_id: str
    parent_hash: str
    reply_id: str


class NotFound(LookupError):
    """A conversation or message that does not exist for this user (another user's looks the same)."""


class Store:
    """Open (and create) the store at a SQLAlchemy URL."""

    def __init__(self, url: str, sync_full: bool = False) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True)
        except Exception as err:  # a malformed URL or a driver that is not installed
            raise ConfigError(f"serve.store={url!r} cannot be opened: {err}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", lambda conn, _: _sqlite_pragmas(conn, sync_full))
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------ users

    def add_user(self, name: str, token_hash: str | None, admin: bool = False) -> User:
        with self.session.begin() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                user = User(name=name)
                s.add(user)
            user.token_hash, user.is_admin = token_hash, admin
            return user

    def user_by_token(self, token_hash: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.token_hash == token_hash))

    def user_by_name(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.name == name))

    def delete_user_data(self, name: str, keep_user: bool = False) -> int:
        """Delete a user's conversations (and the user unless `keep_user`); the number of conversations."""
        with self.session.begin() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFound(name)
            conversations = list(s.scalars(select(Conversation).where(Conversation.user_id == user.id)))
            for c in conversations:
                s.delete(c)
            if not keep_user:
                s.delete(user)
            return len(conversations)

    # ------------------------------------------------------------------------------ turns

    def new_conversation(self, user_id: int, title: str = "") -> Conversation:
        with self.session.begin() as s:
            conversation = Conversation(user_id=user_id, title=title[:200])
            s.add(conversation)
            return conversation

    def begin_turn(self, user_id: int, messages: list[dict[str, str]], conversation_id: str | None) -> Turn:
        """Store the request's history (reusing what is stored) and say where its reply goes."""
        with self.session.begin() as s:
            conversation = None
            if conversation_id is not None:
                conversation = s.get(Conversation, conversation_id)
                if conversation is None or conversation.user_id != user_id:
                    raise NotFound(conversation_id)
            elif len([m for m in messages if m["role"] != "system"]) > 1:
                conversation = self._matching(s, user_id, messages[:-1])
            if conversation is None:
                first = next((m["content"] for m in messages if m["role"] == "user"), "")
                conversation = Conversation(user_id=user_id, title=first[:80])
                s.add(conversation)
                s.flush()
            parent_id, parent_hash = None, ""
            for m in messages:
                h = path_hash(parent_hash, m["role"], m["content"])
                node = s.scalar(
                    select(Message).where(Message.conversation_id == conversation.id, Message.path_hash == h).limit(1)
                )
                if node is None:
                    node = Message(
                        conversation_id=conversation.id,
                        parent_id=parent_id,
                        path_hash=h,
                        role=m["role"],
                        content=m["content"],
                    )
                    s.add(node)
                    s.flush()
                parent_id, parent_hash = node.id, h
            conversation.updated_at = _now()
            return Turn(conversation.id, parent_id or "", parent_hash, _id())

    def _matching(self, s: Session, user_id: int, history: list[dict[str, str]]) -> Conversation | None:
        h = ""
        for m in history:
            h = path_hash(h, m["role"], m["content"])
        query = (
            select(Conversation)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Conversation.user_id == user_id, Message.path_hash == h)
            .order_by(Conversation.updated_at.desc())
            .limit(1)
        )
        return s.scalar(query)

    def add_reply(
        self,
        turn: Turn,
        content: str,
        *,
        model: str,
        params: dict[str, Any],
        finish_reason: str | None,
        latency_ms: float,
        first_token_ms: float | None,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        with self.session.begin() as s:
            s.add(
                Message(
                    id=turn.reply_id,
                    conversation_id=turn.conversation_id,
                    parent_id=turn.parent_id,
                    path_hash=path_hash(turn.parent_hash, "assistant", content),
                    role="assistant",
                    content=content,
                    model=model,
                    params=params,
                    finish_reason=finish_reason,
                    latency_ms=latency_ms,
                    first_token_ms=first_token_ms,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
            )

    def set_feedback(self, user_id: int, message_id: str, value: int | None) -> None:
        with self.session.begin() as s:
            message = s.scalar(select(Message).where(Message.id == message_id))
            if message is None or message.conversation.user_id != user_id or message.role != "assistant":
                raise NotFound(message_id)
            message.feedback = value

    # ------------------------------------------------------------------------------ reading

    def conversations(self, user_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(
                select(Conversation).where(Conversation.user_id == user_id).order_by(Conversation.updated_at.desc())
            )
            return [{"id": c.id, "title": c.title, "updated_at": c.updated_at.isoformat()} for c in rows]

    def conversation(self, user_id: int, conversation_id: str) -> dict[str, Any]:
        with self.session() as s:
            c = s.get(Conversation, conversation_id)
            if c is None or c.user_id != user_id:
                raise NotFound(conversation_id)
            return _as_dict(c)

    def export(self, out: IO[str], user: str | None = None) -> int:
        """Every conversation (of `user`, or all) as one JSON line each; the number written."""
        n = 0
        for record in self.iter_export(user):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
        return n

    def iter_export(self, user: str | None = None) -> Iterator[dict[str, Any]]:
        with self.session() as s:
            query = select(Conversation).join(User).order_by(Conversation.created_at)
            if user is not None:
                query = query.where(User.name == user)
            for c in s.scalars(query):
                yield _as_dict(c) | {"user": c.user.name}

    def count_replies(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(Message).where(Message.role == "assistant")) or 0)


def _as_dict(c: Conversation) -> dict[str, Any]:
    fields = (
        "id",
        "parent_id",
        "role",
        "content",
        "model",
        "params",
        "finish_reason",
        "latency_ms",
        "first_token_ms",
        "prompt_tokens",
        "completion_tokens",
        "feedback",
    )
    messages = [{f: getattr(m, f) for f in fields} | {"created_at": m.created_at.isoformat()} for m in c.messages]
    return {"id": c.id, "title": c.title, "created_at": c.created_at.isoformat(), "messages": messages}


def _sqlite_pragmas(connection: Any, sync_full: bool) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={'FULL' if sync_full else 'NORMAL'}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
