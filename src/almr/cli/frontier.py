"""`almr frontier`: the frontier analysis of a sweep and the recommended (ALMR, LR)."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import ConfigOption, SetOption, load, say, warn
from almr.frontier.report import headline

app = typer.Typer()


@app.command("frontier")
def frontier(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory (runs/*/record.json, optional baseline.json).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default SWEEP_DIR/frontier).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fit the loss and averaged-metric surfaces, both frontiers, the recommended (ALMR, LR) with P(best),
    D-CPT and CMR baselines; write report.md, frontier.json and Fig. 1/Fig. 2 (docs/frontier.md)."""
    from almr.frontier.analyze import analyze_sweep  # heavy: scipy, scikit-learn, matplotlib; keeps --help fast

    analysis = analyze_sweep(sweep_dir, load(config, set_).frontier, out)
    for e in analysis.summary["excluded"]:
        warn(f"excluded {e['run_id']} (ALMR {e['almr']:g}, LR {e['lr']:.3g}): {e['status']}: {e['reason']}")
    say(headline(analysis.summary))
    say(f"wrote {analysis.files['report']} and {analysis.files['json']}")


@app.command("compare")
def compare(
    sweep_dirs: Annotated[list[Path], typer.Argument(help="Sweep directories, each analyzed by `almr frontier`.")],
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated names, one per study.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of comparison.md and comparison.json.")] = Path(
        "comparison"
    ),
) -> None:
    """Studies side by side (e.g. base against extended vocabulary): optimum, metric there, held-out losses
    per token and per character (docs/vocab.md)."""
    from almr.frontier.compare import compare_studies  # heavy: tokenizers

    say(compare_studies(sweep_dirs, labels.split(",") if labels else None, out))
