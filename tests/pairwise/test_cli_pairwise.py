"""`almr pairwise …` end to end, as a user runs it (`python -m almr.cli`)."""

import json
import subprocess
import sys
from pathlib import Path

from fake_endpoint import FakeEndpoint

from almr.pairwise.study import Study


def almr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "almr.cli", "pairwise", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )


def test_make_token_report_export_import_judge(tmp_path: Path) -> None:
    dialogues = tmp_path / "d.jsonl"
    dialogues.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"c{i}",
                    "turns": [{"role": "user", "content": f"问{i}"}, {"role": "assistant", "content": f"答{i}"}],
                },
                ensure_ascii=False,
            )
            + "\n"
            for i in range(6)
        ),
        encoding="utf-8",
    )
    study = tmp_path / "s.db"
    with FakeEndpoint(["other"], lambda body: (200, "reply " + body["messages"][-1]["content"])) as other:
        made = almr(
            "make",
            str(dialogues),
            "--model",
            "ours=logged",
            "--model",
            f"other={other.url}",
            "--out",
            str(study),
            "--set",
            "pairwise.retries=0",
        )
    assert made.returncode == 0, made.stderr
    assert "6 prompts; replies: ours 6 (0 failed, 0 scrubbed), other 6 (0 failed, 0 scrubbed); 6 items" in made.stdout

    empty = almr("report", str(study))
    assert empty.returncode == 2 and "error:" in empty.stderr and "has no votes yet" in empty.stderr

    token = almr("token", "add", str(study), "ann1")
    assert token.returncode == 0 and token.stdout.strip().startswith("almr-ann-")
    s = Study(study)
    assert s.annotator(token.stdout.strip()) == "ann1"
    for item in s.items():
        s.vote(item.id, "ann1", "left" if item.model_left == "ours" else "right")

    report = almr("report", str(study), "--out", str(tmp_path / "r"), "--bradley-terry")
    assert report.returncode == 0, report.stderr
    assert "| ours | N/A | 100.0 [100.0, 100.0] | 50.0 |" in report.stdout
    assert "Agreement cannot be computed: only 1 annotator voted (ann1)" in report.stdout
    assert json.loads((tmp_path / "r" / "pairwise_report.json").read_text())["human"]["pairs"][0]["wins"] == 6

    exported = almr("export", str(study), "--out", str(tmp_path / "ls.json"))
    assert exported.returncode == 0 and "wrote 6 tasks" in exported.stdout
    imported = almr("import", str(study), str(tmp_path / "ls.json"))
    assert imported.returncode == 0 and "imported 6 votes" in imported.stdout

    with FakeEndpoint(["judge-x"], lambda body: (200, "[[C]]")) as judge:
        judged = almr("judge", str(study), "--judge", judge.url)
    assert judged.returncode == 0, judged.stderr
    assert "judge judge-x: 6 items judged, 6 consistent in both orders, 0 failed" in judged.stdout


def test_bad_input_is_one_message_and_exit_code_2(tmp_path: Path) -> None:
    bad_model = almr("make", str(tmp_path / "d.jsonl"), "--model", "ours", "--out", str(tmp_path / "s.db"))
    assert bad_model.returncode == 2 and "--model 'ours': write NAME=SOURCE" in bad_model.stderr
    missing = almr("report", str(tmp_path / "missing.db"))
    assert missing.returncode == 2 and "study file" in missing.stderr and "does not exist" in missing.stderr
    (tmp_path / "junk.db").write_text("not sqlite")
    junk = almr("token", "add", str(tmp_path / "junk.db"), "x")
    assert junk.returncode == 2 and "is not a study file" in junk.stderr
    bad_set = almr("report", str(tmp_path / "missing.db"), "--set", "pairwise.confidence=2")
    assert bad_set.returncode == 2 and "pairwise.confidence" in bad_set.stderr
