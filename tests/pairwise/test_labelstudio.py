"""Label Studio's pairwise JSON: blind tasks out, annotations back in, the same votes after the trip."""

import json
from pathlib import Path

import pytest
from hand_study import MODELS, hand_study

from almr.errors import DataError
from almr.pairwise.labelstudio import LABEL_CONFIG, export_tasks, import_votes

ITEMS = [("c1", "ours", "llama70b"), ("c2", "gpt4", "ours"), ("c3", "llama70b", "gpt4")]


def test_export_then_import_gives_back_the_same_votes(tmp_path: Path) -> None:
    study, _ = hand_study(tmp_path / "a.db", ITEMS)
    for item, who, choice in [(1, "ann1", "left"), (1, "ann2", "tie"), (2, "ann1", "right"), (3, "ann3", "both_bad")]:
        study.vote(item, who, choice)
    tasks, config, n = export_tasks(study, tmp_path / "ls" / "tasks.json")
    assert n == 3 and config.read_text() == LABEL_CONFIG and '<Pairwise name="comparison"' in LABEL_CONFIG
    exported = json.loads(tasks.read_text())
    text = json.dumps(exported)
    assert all(name not in text for name in MODELS)  # blind
    first = exported[0]
    assert first["annotations"][0] == {
        "created_username": "ann1",
        "result": [
            {"from_name": "comparison", "to_name": "left,right", "type": "pairwise", "value": {"selected": "left"}}
        ],
    }
    # the same study file in another place (a copy), with its votes cleared, reads them back
    copy = tmp_path / "b.db"
    copy.write_bytes((tmp_path / "a.db").read_bytes())
    import sqlite3

    with sqlite3.connect(copy) as db:
        db.execute("DELETE FROM votes")
    from almr.pairwise.study import Study

    again = Study(copy)
    assert import_votes(again, tasks) == {"votes": 4, "skipped": 0}
    assert again.votes() == study.votes()


def test_label_studio_authors_and_a_foreign_study_are_handled(tmp_path: Path) -> None:
    study, _ = hand_study(tmp_path / "a.db", ITEMS)
    tasks, _, _ = export_tasks(study, tmp_path / "tasks.json")
    exported = json.loads(tasks.read_text())
    # as Label Studio exports: completed_by a user id or {email}, a cancelled annotation, both controls clicked
    exported[0]["annotations"] = [
        {"completed_by": 7, "result": [{"type": "pairwise", "value": {"selected": "right"}}]},
        {
            "completed_by": {"email": "li@example.org"},
            "result": [
                {"type": "pairwise", "value": {"selected": "left"}},
                {"type": "choices", "value": {"choices": ["tie"]}},
            ],
        },
        {"completed_by": 8, "was_cancelled": True, "result": []},
    ]
    (tmp_path / "from_ls.json").write_text(json.dumps(exported))
    assert import_votes(study, tmp_path / "from_ls.json") == {"votes": 2, "skipped": 1}
    assert [(v.annotator, v.choice) for v in study.votes()] == [("labelstudio-7", "right"), ("li@example.org", "tie")]
    other, _ = hand_study(tmp_path / "other.db", ITEMS)
    with pytest.raises(DataError, match=r"task 0: item 1 is not this study's item"):
        import_votes(other, tasks)
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="a list of tasks"):
        import_votes(study, tmp_path / "bad.json")
