"""Table 8 from the pairwise stage's report (almr.pairwise.report): each model's win rate
(W + ½T)/N against each other model with its bootstrap interval, and the %Chinese of its replies.
Human votes when there are any, else the first judge's (an LLM, or the demo world's rule; the caption
says which)."""

from typing import Any

from almr.report.collect import Loaded, Outputs
from almr.report.document import MISSING, Table
from almr.report.paper_numbers import paper_value

# Our model label -> the paper's row of Table 8 (70B).
PAPER_ROWS = {"instruct": "Llama3-70B-Instruct", "c-sft-empathy": "C-SFT-Empathy (ours)"}
DEFAULT_MODELS = ("instruct", "c-sft-empathy")


def load_pairwise(out: Outputs) -> Loaded:
    return out.first(["pairwise/report.json", "pairwise/pairwise_report.json"])


def section_of(report: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(which votes, their statistics): the human votes, else the first judge's."""
    if report.get("human"):
        return "human votes", report["human"]
    for judge, section in (report.get("judges") or {}).items():
        return f"judge {judge} (no human votes yet)", section
    return "no votes", None


def _paper_label(model: str) -> str | None:
    name = model.lower()
    return next((row for label, row in PAPER_ROWS.items() if name == label or name.endswith("/" + label)), None)


def win_rate(out: Outputs, a: str, b: str) -> tuple[float | None, tuple[float, float] | None, str]:
    """(a's win rate over b ×100, its bootstrap interval, the file) from the pairwise report's votes."""
    loaded = load_pairwise(out)
    _, section = section_of(loaded.data) if loaded.data else ("", None)
    for p in (section or {}).get("pairs", []):
        if {p.get("a"), p.get("b")} == {a, b} and p.get("n") and p.get("score_rate") is not None:
            rate, ci = 100 * p["score_rate"], p.get("ci_score_rate")
            interval = (100 * ci[0], 100 * ci[1]) if ci else None
            if p["a"] == b:  # stored from the other side
                rate, interval = 100 - rate, (100 - interval[1], 100 - interval[0]) if interval else None
            return rate, interval, loaded.path
    return None, None, loaded.path


def table8(out: Outputs, *, paper_size: str | None) -> Table:
    loaded = load_pairwise(out)
    report = loaded.data
    models = [str(m) for m in report.get("models", [])] if report else list(DEFAULT_MODELS)
    which, section = section_of(report) if report else ("", None)
    cell: dict[tuple[str, str], str] = {}
    for p in (section or {}).get("pairs", []):
        if not p.get("n") or p.get("score_rate") is None:
            continue
        rate, ci = 100 * p["score_rate"], p.get("ci_score_rate")
        lo, hi = (100 * ci[0], 100 * ci[1]) if ci else (None, None)
        cell[(p["a"], p["b"])] = f"{rate:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if ci else "")
        cell[(p["b"], p["a"])] = f"{100 - rate:.1f}" + (f" [{100 - hi:.1f}, {100 - lo:.1f}]" if ci else "")
    zh_eval = out.zh_shares(None)
    zh_pair = (report or {}).get("chinese") or {}
    paper = paper_size == "70B"
    header = ["Model", *[f"vs {m}" for m in models], "%Chinese"]
    if paper:
        header += ["paper: vs Llama3-70B-Instruct", "paper: vs GPT4", "paper: %Chinese"]
    header.append("Source")
    rows = []
    for m in models:
        row = [m, *("N/A" if m == o else cell.get((m, o), MISSING) for o in models)]
        sources = [loaded.path] if report else []
        if isinstance(zh_pair.get(m), int | float):
            row.append(f"{zh_pair[m]:.1f}")
        elif m in zh_eval:
            row.append(f"{zh_eval[m].value:.1f}")
            sources.append(str(zh_eval[m].source))
        else:
            row.append(MISSING)
        if paper:
            prow = _paper_label(m)
            row += [MISSING if (v := paper_value("8", "70B", prow, c)) is None else f"{v:.1f}"
                    for c in ("vs Llama3-70B-Instruct", "vs GPT4", "%Chinese")]  # fmt: skip
        if not report:
            sources.append(f"{MISSING} {loaded.path} {loaded.problem}: run {out.rerun('pairwise')}")
        row.append("; ".join(sources))
        rows.append(row)
    notes = []
    failed = (report or {}).get("judge_failures") or []
    if failed:
        notes.append(f"{len(failed)} item(s) the judge gave no usable verdict on (first: "
                     f"{str(failed[0].get('error', '?'))[:80]}); they are not counted.")  # fmt: skip
    if report and section is None:
        notes.append(f"No votes yet in {loaded.path}: no annotator and no judge has voted on the study's items.")
    elif report:
        boot = report.get("bootstrap") or {}
        level, unit = 100 * boot.get("confidence", 0.95), boot.get("unit", "conversation")
        notes.append(f"Win rate (W + ½T)/N ×100 of the row model against the column model, from the {which}; "
                     f"{level:g}% bootstrap interval by {unit} in brackets. %Chinese: share of Chinese in the "
                     "model's replies in the study.")  # fmt: skip
    if paper:
        notes.append("paper: the paper's Table 8 (70B, human annotators, one week of online conversations); GPT4 "
                     "is not among our models.")  # fmt: skip
    return Table(
        [header], rows, "Table 8. Pairwise comparison of the deployed chat models (the paper's Table 8)", notes
    )
