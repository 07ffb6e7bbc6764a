from typer.testing import CliRunner

from almr.cli import app


def test_help_lists_every_stage_with_one_line() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    listed = {line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {"config", "world", "demo", "data", "cpt", "eval"} <= listed
