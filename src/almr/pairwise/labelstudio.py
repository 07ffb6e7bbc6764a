"""Label Studio's pairwise format, both ways, for teams that annotate there.

`export_tasks` writes a JSON list of tasks (Label Studio's import/export format) and the labeling
config to create the project with: a `Pairwise` control over the two replies (`{"selected": "left"}`
or `"right"`) and a `Choices` control for the two other verdicts (`tie`, `both_bad`). Tasks stay
blind: `data` holds the item id, the conversation and the two replies, never a model name, and a
`check` digest (keyed by a secret kept in the study) that `import_votes` compares, so annotations
of another study, or of items whose models or prompt differ, are refused rather than scored.
Existing votes travel as `annotations`, the annotator's name in `created_username`.

`import_votes` reads Label Studio's JSON export (or ours) back into the study: one vote per
annotation (the last counts, as on the page); an annotation's author is `created_username`, else
`completed_by` (an e-mail or a user id); authors not yet annotators of the study are added without
a usable token (the one issued is never shown).
"""

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from almr.errors import DataError
from almr.pairwise.study import Item, Study

LABEL_CONFIG = """<View>
  <Header value="Which reply to the user's last message is better?"/>
  <Text name="conversation" value="$conversation"/>
  <Pairwise name="comparison" toName="left,right"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1;"><Text name="left" value="$left"/></View>
    <View style="flex: 1;"><Text name="right" value="$right"/></View>
  </View>
  <Choices name="verdict" toName="left" choice="single" showInline="true">
    <Choice value="tie"/>
    <Choice value="both_bad"/>
  </Choices>
</View>
"""


def _secret(study: Study) -> str:
    meta = study.meta()
    if "export_secret" not in meta:
        study.set_meta("export_secret", secrets.token_hex(16))
        meta = study.meta()
    return str(meta["export_secret"])


def _check(secret: str, item: Item) -> str:
    message = json.dumps([item.id, item.prompt_key, item.model_left, item.model_right], ensure_ascii=False)
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()[:16]


def _conversation(view: dict[str, Any]) -> str:
    lines = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in view["history"]]
    return "\n".join([*lines, f"User: {view['user']}"])


def _result(choice: str) -> list[dict[str, Any]]:
    if choice in ("left", "right"):
        return [{"from_name": "comparison", "to_name": "left,right", "type": "pairwise", "value": {"selected": choice}}]
    return [{"from_name": "verdict", "to_name": "left", "type": "choices", "value": {"choices": [choice]}}]


def export_tasks(study: Study, out: str | Path) -> tuple[Path, Path, int]:
    """Write the tasks JSON at `out` and the labeling config beside it; (tasks, config, n tasks)."""
    secret = _secret(study)
    votes: dict[int, list[tuple[str, str]]] = {}
    for v in study.votes():
        votes.setdefault(v.item_id, []).append((v.annotator, v.choice))
    tasks = []
    for item in study.items():
        view = study.item_view(item.id)
        tasks.append({
            "data": {"item_id": item.id, "check": _check(secret, item), "conversation": _conversation(view),
                     "left": view["left"], "right": view["right"]},
            "annotations": [{"created_username": who, "result": _result(choice)} for who, choice in
                            votes.get(item.id, [])],
        })  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    config = out.with_name(out.stem + "_label_config.xml")
    config.write_text(LABEL_CONFIG, encoding="utf-8")
    return out, config, len(tasks)


def _choice(result: list[Any], where: str) -> str | None:
    choice = None
    for region in result:
        value = region.get("value", {}) if isinstance(region, dict) else {}
        if region.get("type") == "pairwise" and value.get("selected") in ("left", "right"):
            choice = choice or value["selected"]
        elif region.get("type") == "choices":
            picked = value.get("choices") or []
            if picked and picked[0] in ("tie", "both_bad"):
                choice = picked[0]  # an explicit tie or both-bad outranks a side also clicked
            elif picked:
                raise DataError(f"{where}: verdict {picked[0]!r} is not tie or both_bad")
    return choice


def _author(annotation: dict[str, Any]) -> str | None:
    who = annotation.get("created_username") or annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who in (None, "") else (f"labelstudio-{who}" if isinstance(who, int) else str(who))


def import_votes(study: Study, path: str | Path) -> dict[str, int]:
    """Read annotations of an export of `export_tasks`' tasks into `study`; counts of votes and skips."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a Label Studio JSON export ({err})") from None
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio JSON export is a list of tasks")
    secret = _secret(study)
    items = {i.id: i for i in study.items()}
    known = set(study.annotators())
    planned: list[tuple[int, str, str]] = []
    skipped = 0
    for n, task in enumerate(tasks):
        where = f"{path}: task {n}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or "item_id" not in data:
            raise DataError(f"{where}: no data.item_id; export tasks with `almr pairwise export`")
        item = items.get(data["item_id"])
        if item is None or not hmac.compare_digest(str(data.get("check", "")), _check(secret, item)):
            raise DataError(f"{where}: item {data['item_id']} is not this study's item (its models or prompt differ, "
                            f"or it comes from another study than {study.path})")  # fmt: skip
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                skipped += 1
                continue
            who = _author(annotation)
            choice = _choice(annotation.get("result") or [], where)
            if who is None or choice is None:
                skipped += 1
                continue
            planned.append((item.id, who, choice))
    for who in sorted({w for _, w, _ in planned} - known):
        study.add_annotator(who)  # its token is never shown: an imported author cannot use the page
    study.add_votes(planned)
    return {"votes": len(planned), "skipped": skipped}
