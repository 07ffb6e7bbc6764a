"""The chat page's own API under /api: its settings, a user's conversations and feedback, and
the admin's export and deletions. A user sees only their own conversations: another user's id
answers 404, as a missing one does."""

import asyncio
import io
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from almr.serve.deps import AdminUser, CurrentUser, State
from almr.serve.schemas import ApiError
from almr.serve.store import NotFound

router = APIRouter(prefix="/api")


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = ""


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Literal[1, -1] | None


@router.get("/config")
async def page_config(state: State) -> dict[str, Any]:
    c = state.config
    return {
        "model": state.engine.model_name,
        "crisis_line": c.crisis_line,
        "consent_notice": c.consent_notice,
        "auth_required": c.auth.required,
    }


@router.get("/me")
async def me(user: CurrentUser) -> dict[str, Any]:
    return {"name": user.name, "admin": user.is_admin}


@router.post("/conversations")
async def new_conversation(body: NewConversation, user: CurrentUser, state: State) -> dict[str, str]:
    conversation = await asyncio.to_thread(state.store.new_conversation, user.id, body.title)
    return {"id": conversation.id}


@router.get("/conversations")
async def list_conversations(user: CurrentUser, state: State) -> list[dict[str, Any]]:
    return await asyncio.to_thread(state.store.conversations, user.id)


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, user: CurrentUser, state: State) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(state.store.conversation, user.id, conversation_id)
    except NotFound:
        raise ApiError(404, f"no conversation {conversation_id} for this user") from None


@router.post("/messages/{message_id}/feedback")
async def feedback(message_id: str, body: Feedback, user: CurrentUser, state: State) -> dict[str, Any]:
    try:
        await asyncio.to_thread(state.store.set_feedback, user.id, message_id, body.value)
    except NotFound:
        raise ApiError(404, f"no reply {message_id} for this user") from None
    return {"id": message_id, "feedback": body.value}


@router.delete("/me/data")
async def delete_my_data(user: CurrentUser, state: State) -> dict[str, int]:
    deleted = await asyncio.to_thread(state.store.delete_user_data, user.name, True)
    return {"deleted_conversations": deleted}


@router.get("/admin/export")
async def export(admin: AdminUser, state: State, user: str | None = None) -> Response:
    def dump() -> str:
        out = io.StringIO()
        state.store.export(out, user)
        return out.getvalue()

    return Response(await asyncio.to_thread(dump), media_type="application/x-ndjson")


@router.delete("/admin/users/{name}")
async def delete_user(name: str, admin: AdminUser, state: State) -> dict[str, int]:
    try:
        deleted = await asyncio.to_thread(state.store.delete_user_data, name, False)
    except NotFound:
        raise ApiError(404, f"no user {name}") from None
    return {"deleted_conversations": deleted}
