"""Reading prompts: the dialogue JSONL layout, the `almr serve` export, and bad lines."""

import io
import json
from pathlib import Path

import pytest

from almr.errors import DataError
from almr.pairwise.dialogues import read_prompts


def write(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


DIALOGUE = {
    "id": "c1",
    "turns": [
        {"role": "system", "content": "persona"},
        {"role": "user", "content": "我好累"},
        {"role": "assistant", "content": "听起来你很辛苦"},
        {"role": "user", "content": "是的"},
    ],
}


def test_every_user_turn_is_a_prompt_with_its_history(tmp_path: Path) -> None:
    prompts = read_prompts(
        write(tmp_path / "d.jsonl", DIALOGUE, {"id": 7, "turns": [{"role": "user", "content": "hi"}]})
    )
    assert [(p.key, p.conversation_id, p.turn) for p in prompts] == [
        ("c1#0", "c1", 0),
        ("c1#1", "c1", 1),
        ("7#0", "7", 0),
    ]
    first, second, _ = prompts
    assert first.history == [] and first.user == "我好累" and first.logged == "听起来你很辛苦"
    assert second.history == [{"role": "user", "content": "我好累"}, {"role": "assistant", "content": "听起来你很辛苦"}]
    assert second.logged is None  # nothing was logged after the last turn
    assert second.messages("be kind")[0] == {"role": "system", "content": "be kind"}  # the input's system turn dropped
    assert [p.key for p in read_prompts(tmp_path / "d.jsonl", turns="last")] == ["c1#1", "7#0"]
    assert len(read_prompts(tmp_path / "d.jsonl", max_prompts=2, seed=1)) == 2


def test_the_serve_store_export_is_read_as_it_is(tmp_path: Path) -> None:
    store_module = pytest.importorskip("almr.serve.store")
    store = store_module.Store(f"sqlite:///{tmp_path / 'serve.db'}")
    user = store.add_user("alice", None)
    turn = store.begin_turn(user.id, [{"role": "user", "content": "我好累"}], None)
    store.add_reply(
        turn,
        "听起来你很辛苦",
        model="ours",
        params={},
        finish_reason="stop",
        latency_ms=1.0,
        first_token_ms=1.0,
        prompt_tokens=1,
        completion_tokens=1,
    )
    store.begin_turn(
        user.id,
        [
            {"role": "user", "content": "我好累"},
            {"role": "assistant", "content": "听起来你很辛苦"},
            {"role": "user", "content": "是的"},
        ],
        None,
    )
    out = io.StringIO()
    store.export(out)
    store.close()
    (tmp_path / "export.jsonl").write_text(out.getvalue(), encoding="utf-8")
    first, second = read_prompts(tmp_path / "export.jsonl")
    assert first.conversation_id == second.conversation_id
    assert (first.user, first.logged, first.logged_model) == ("我好累", "听起来你很辛苦", "ours")
    assert second.history == [{"role": "user", "content": "我好累"}, {"role": "assistant", "content": "听起来你很辛苦"}]
    assert second.user == "是的" and second.logged is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"d.jsonl:1: malformed JSON"),
        ('{"id": "c", "text": "hi"}', r"d.jsonl:1: a line needs `turns` \(a dialogue\) or `messages`"),
        ('{"turns": [{"role": "user", "content": "hi"}]}', r"d.jsonl:1: `id` \(the conversation id\) must be"),
        ('{"id": "c", "turns": [{"role": "assistant", "content": "hi"}]}', r"must alternate user, assistant"),
        ('{"id": "c", "turns": [{"role": "bot", "content": "hi"}]}', r"turns\[0\].role is 'bot'"),
        ('{"id": "c", "turns": [{"role": "user"}]}', r"turns\[0\] must be"),
    ],
)
def test_a_bad_line_is_named_with_its_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "d.jsonl").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_prompts(tmp_path / "d.jsonl")


def test_duplicate_conversations_and_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="conversation id 'c1' appears twice"):
        read_prompts(write(tmp_path / "d.jsonl", DIALOGUE, DIALOGUE))
    with pytest.raises(DataError, match="holds no user turn"):
        read_prompts(write(tmp_path / "e.jsonl", {"id": "x", "turns": []}))
    with pytest.raises(DataError, match="does not exist"):
        read_prompts(tmp_path / "missing.jsonl")
