"""The annotation page: a FastAPI `APIRouter` that `almr pairwise annotate` serves on its own and
`almr serve` can mount (`app.include_router(annotate_router(study))`).

- `GET /annotate`: the page (static HTML; it asks for the annotator's token once and keeps it in
  the browser's localStorage, sending it as `Authorization: Bearer TOKEN`).
- `GET /annotate/api/next`: the next item for this annotator (`Study.next_item`) and their progress.
- `GET /annotate/api/item/{id}`: one item again (to change a vote).
- `POST /annotate/api/vote` `{"item_id", "choice"}`: choice one of left, right, tie, both_bad; voting
  again on an item replaces the earlier vote (the last counts).

Items are blind: the API returns the history, the user turn and the two replies, never a model
name, and the page renders every text with `textContent` (replies are untrusted model output). A
request without a token, or with one that no annotator holds, is refused with 401.
"""

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from almr.errors import AlmrError
from almr.pairwise.page import PAGE
from almr.pairwise.study import Study


class VoteIn(BaseModel):
    item_id: int
    choice: Literal["left", "right", "tie", "both_bad"]


def annotate_router(study: Study, prefix: str = "/annotate") -> APIRouter:
    router = APIRouter(prefix=prefix)

    def annotator(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        name = study.annotator(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if name is None:
            raise HTTPException(401, "not an annotator's token: ask the study's admin for one "
                                     "(`almr pairwise token add STUDY NAME`)")  # fmt: skip
        return name

    Annotator = Annotated[str, Depends(annotator)]

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    @router.get("/api/next")
    def next_item(who: Annotator) -> dict[str, Any]:
        item_id = study.next_item(who)
        return {"annotator": who, "item": None if item_id is None else study.item_view(item_id),
                "progress": study.progress(who)}  # fmt: skip

    @router.get("/api/item/{item_id}")
    def item(item_id: int, who: Annotator) -> dict[str, Any]:
        try:
            return study.item_view(item_id)
        except AlmrError as err:
            raise HTTPException(404, str(err)) from None

    @router.post("/api/vote")
    def vote(body: VoteIn, who: Annotator) -> dict[str, Any]:
        try:
            revisions = study.vote(body.item_id, who, body.choice)
        except AlmrError as err:
            raise HTTPException(404, str(err)) from None
        return {"ok": True, "revisions": revisions, "progress": study.progress(who)}

    return router


def create_app(study_path: str | Path) -> FastAPI:
    """A server of the annotation page alone (`almr pairwise annotate`)."""
    study = Study(study_path)
    app = FastAPI(title="almr pairwise annotation", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(annotate_router(study))
    return app


def serve(study_path: str | Path, host: str = "127.0.0.1", port: int = 8100) -> None:
    import uvicorn  # only when serving

    uvicorn.run(create_app(study_path), host=host, port=port, log_level="info")
