"""The `almr` command: its tree, how it starts, how it reports bad input, and the data commands end to end."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from almr.cli import app, main

EVERY_COMMAND = {
    "run", "demo", "cpt", "sft", "dpo", "ablation", "sweep", "frontier", "config show", "config keys", "world build",
    "world pretrain", "world stats",
    "data tokenize", "data plan", "data inspect", "eval table", "eval judge", "eval tasks", "vocab extend", "compare",
    "serve token add", "serve export", "serve delete-user",
    "pairwise make", "pairwise annotate", "pairwise token add", "pairwise report", "pairwise judge", "pairwise export",
    "pairwise import",
}  # fmt: skip
HEAVY = ("torch", "transformers", "optuna", "scipy", "sklearn", "matplotlib", "submitit", "trl")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"}, terminal_width=200)


def listed(help_text: str) -> set[str]:
    """Names in the Commands panel of a rich help page."""
    return {line.split()[1] for line in help_text.splitlines() if line.startswith("│ ") and len(line.split()) > 2}


def command_tree() -> dict[str, list[str]]:
    """Every group of the CLI (by its path) with the names of its subcommands."""
    groups: dict[str, list[str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            groups[" ".join(path)] = list(command.commands)
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return groups


def test_help_lists_every_stage_with_one_line() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert {"config", "world", "demo", "data", "cpt", "eval"} <= listed(result.output)


def test_every_command_is_listed_by_the_help_of_its_group() -> None:
    groups = command_tree()
    leaves = {f"{path} {name}".strip() for path, names in groups.items() for name in names} - set(groups)
    assert leaves == EVERY_COMMAND
    for path, names in groups.items():
        result = invoke(*path.split(), "--help")
        assert result.exit_code == 0, result.output
        assert set(names) <= listed(result.output), path


def test_python_m_almr_cli_starts_the_command() -> None:
    # the sweep's launchers start runs as `python -m almr.cli cpt FILE` (and `torchrun -m almr.cli cpt FILE`)
    done = subprocess.run([sys.executable, "-m", "almr.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "cpt" in done.stdout


def test_importing_the_cli_loads_no_heavy_library() -> None:
    # `almr --help` must stay fast: torch, transformers, optuna … load inside the commands that use them
    code = f"import sys, almr.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_bad_input_is_one_message_printed_as_written(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    missing = tmp_path / "[bold]missing[/bold].yaml"  # brackets that rich would read as markup
    monkeypatch.setattr(sys, "argv", ["almr", "config", "show", str(missing)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "[bold]missing[/bold].yaml" in err and "Traceback" not in err


def test_config_keys_of_one_section() -> None:
    result = invoke("config", "keys", "cpt.batch")
    assert result.exit_code == 0, result.output
    keys = [line.split("`")[1] for line in result.output.splitlines()[2:] if line.startswith("| `")]
    assert keys and all(key.startswith("cpt.batch.") for key in keys)


def test_eval_without_a_model_prints_its_help() -> None:
    result = invoke("eval")
    assert result.exit_code == 0 and {"table", "judge", "tasks"} <= listed(result.output)


def test_data_tokenize_plan_and_inspect(small_world: Path, tmp_path: Path) -> None:
    from almr.world.build import world_data

    data = world_data(small_world, tmp_path / "shards").model_dump(mode="json")
    batch = {"micro_batch_size": 4, "global_batch_size": 8, "seq_len": 32}
    config = tmp_path / "mix.yaml"
    # the budget comes from cpt.total_tokens when mixture.token_budget is not set, as `almr cpt` plans it
    config.write_text(
        yaml.safe_dump({"data": data, "mixture": {"almr": 0.3}, "cpt": {"batch": batch, "total_tokens": 8192}})
    )
    tokenized = invoke("data", "tokenize", str(config))
    assert tokenized.exit_code == 0, tokenized.output
    assert "tokens, %Chinese" in tokenized.output

    planned = invoke("data", "plan", str(config))
    assert planned.exit_code == 0, planned.output
    plan_file = Path(planned.output.split("wrote ")[-1].strip())
    plan = json.loads(plan_file.read_text())
    assert plan_file == tmp_path / "shards" / f"plan-{plan['hash'][:12]}.json"
    assert plan["token_budget"] == 8192 and f"plan {plan['hash'][:12]}" in planned.output

    inspected = invoke("data", "inspect", str(plan_file), "--sample-steps", "2")
    assert inspected.exit_code == 0, inspected.output
    report = json.loads(plan_file.with_suffix(".inspect.json").read_text())
    assert report["plan"] == plan["hash"] and plan_file.with_suffix(".png").is_file()
    assert "ALMR over windows of 1 batch(es)" in inspected.output

    after = invoke("data", "plan", str(config), "--after", str(plan_file), "--consumed", "64", "-o",
                   str(tmp_path / "phase2.json"))  # fmt: skip
    assert after.exit_code == 0, after.output
    phase2 = json.loads((tmp_path / "phase2.json").read_text())
    assert phase2["previous"] == {"hash": plan["hash"], "consumed_sequences": 64}
    assert phase2["token_budget"] == 8192


def test_eval_fills_settings_from_the_config_and_writes_the_default_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import almr.evaluate.harness as harness

    seen: dict[str, Any] = {}

    def fake_run_eval(model: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(model=model, **kwargs)
        return {"format": "almr-eval/1", "model": model, "suite": None, "wall_s": 0.5, "tasks": {}}

    monkeypatch.setattr(harness, "run_eval", fake_run_eval)
    monkeypatch.chdir(tmp_path)
    result = invoke("eval", "--model", "runs/cpt-a/hf/", "--tasks", "world_mmlu,world_ceval", "--data-file",
                    "world_mmlu=m.jsonl", "--set", "eval.limit=5", "--set", "eval.batch_size=3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["tasks"] == ["world_mmlu", "world_ceval"] and seen["data_files"] == {"world_mmlu": "m.jsonl"}
    assert seen["limit"] == 5 and seen["batch_size"] == 3
    # named by the run (the export's parent folder), so that two runs' results do not share a file
    assert (tmp_path / "eval" / "cpt-a-tasks.json").is_file() and "wrote eval/cpt-a-tasks.json" in result.output
    bad = invoke("eval", "--model", "m", "--data-file", "no-equals-sign")
    assert bad.exit_code != 0 and "expected TASK=PATH" in str(bad.exception)
