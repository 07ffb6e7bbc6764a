"""`almr pairwise report`: Table 8 from a study file — per pair W/T/L, win rates W/N and (W + ½T)/N
with bootstrap intervals resampled by conversation, agreement, the position-bias check, optional
Bradley–Terry strengths, the %Chinese of each model's replies, and the replies that could not be
collected. The LLM judge's verdicts, when there are any, get their own section with the same
statistics: they are never mixed with the human votes.

Counting: every vote is one comparison (an item voted on by three annotators counts three times;
the bootstrap resamples whole conversations, so this does not narrow the interval); `tie` and
`both_bad` are both ties (T), and `both_bad` is also shown on its own.
"""

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from almr.chinese import ScriptCounts
from almr.errors import AlmrError
from almr.pairwise.config import PairwiseConfig
from almr.pairwise.judge import consistent
from almr.pairwise.stats import agreement, bradley_terry, cluster_bootstrap, position_bias, win_counts
from almr.pairwise.study import CHOICES, Item, Study


def check_items(study: Study, items: Sequence[Item]) -> None:
    """Refuse items whose models are not the study's pair of two different models."""
    known = set(study.models)
    bad = [i for i in items if {i.model_left, i.model_right} - known or i.model_left == i.model_right]
    if bad:
        listed = "; ".join(f"item {i.id}: {i.model_left} vs {i.model_right}" for i in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise AlmrError(f"{study.path}: {len(bad)} items compare models that are not the study's "
                        f"({', '.join(study.models)}): {listed}{more}; remove them or make a new study")  # fmt: skip


def score_of_first(item: Item, choice: str, order: dict[str, int]) -> tuple[str, str, float]:
    """(a, b, score of a) with a the pair's model listed first in the study."""
    a, b = sorted((item.model_left, item.model_right), key=order.__getitem__)
    if choice in ("tie", "both_bad"):
        return a, b, 0.5
    winner = item.model_left if choice == "left" else item.model_right
    return a, b, 1.0 if winner == a else 0.0


def vote_section(study: Study, items: dict[int, Item], votes: Sequence[tuple[int, str, str]], config: PairwiseConfig,
                 with_bradley_terry: bool) -> dict[str, Any]:  # fmt: skip
    """The statistics of one set of (item id, voter, choice) votes."""
    order = {m: i for i, m in enumerate(study.models)}
    per_pair: dict[tuple[str, str], list[tuple[float, str, str]]] = defaultdict(list)
    comparisons = []
    for item_id, _, choice in votes:
        item = items[item_id]
        a, b, score = score_of_first(item, choice, order)
        per_pair[(a, b)].append((score, item.conversation_id, choice))
        comparisons.append((a, b, score))
    pairs = []
    for seed_offset, (a, b) in enumerate(combinations(study.models, 2)):
        rows = per_pair.get((a, b), [])
        counts = win_counts([s for s, _, _ in rows])
        entry: dict[str, Any] = {"a": a, "b": b, "wins": counts.wins, "ties": counts.ties, "losses": counts.losses,
                                 "both_bad": sum(c == "both_bad" for _, _, c in rows), "n": counts.n,
                                 "conversations": len({c for _, c, _ in rows}), "win_rate": counts.win_rate,
                                 "score_rate": counts.score_rate, "ci_win_rate": None,
                                 "ci_score_rate": None}  # fmt: skip
        if rows:
            ci = cluster_bootstrap([s for s, _, _ in rows], [c for _, c, _ in rows], config.bootstrap_resamples,
                                   config.confidence, config.seed + seed_offset)  # fmt: skip
            entry["ci_win_rate"], entry["ci_score_rate"] = list(ci["win_rate"]), list(ci["score_rate"])
        pairs.append(entry)
    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    for item_id, voter, choice in votes:
        by_item[item_id][voter] = choice
    section: dict[str, Any] = {
        "votes": len(votes),
        "items_voted": len(by_item),
        "voters": sorted({v for _, v, _ in votes}),
        "pairs": pairs,
        "position_bias": position_bias([c for _, _, c in votes]),
        "bradley_terry": None,
    }
    if with_bradley_terry and comparisons:
        section["bradley_terry"] = bradley_terry(study.models, comparisons)
        # a model that never lost (or never won) has no finite maximum-likelihood strength
        won = {m: [s if m == a else 1 - s for a, b, s in comparisons if m in (a, b)] for m in study.models}
        section["bradley_terry_unbounded"] = sorted(m for m, s in won.items() if s and (min(s) == 1 or max(s) == 0))
    return section


def chinese_shares(study: Study) -> dict[str, float | None]:
    """%Chinese (×100) of each model's collected replies: a ratio of sums over its replies."""
    shares: dict[str, float | None] = {}
    for model, replies in study.replies().items():
        counts = ScriptCounts()
        for text in replies.values():
            counts.add(text)
        shares[model] = 100 * counts.chinese_share if replies else None
    return shares


def build_report(study: Study, config: PairwiseConfig, with_bradley_terry: bool = False) -> dict[str, Any]:
    """The whole report as a JSON-able dict; `markdown(report)` renders it."""
    items = study.items()
    check_items(study, items)
    by_id = {i.id: i for i in items}
    votes = [(v.item_id, v.annotator, v.choice) for v in study.votes()]
    judged = [j for j in study.judge_votes() if j["choice"] is not None]
    if not votes and not judged:
        raise AlmrError(f"study {study.path} has no votes yet: issue tokens (`almr pairwise token add`), annotate "
                        "(`almr pairwise annotate`), or have an LLM judge it (`almr pairwise judge`)")  # fmt: skip
    report: dict[str, Any] = {
        "study": str(study.path),
        "models": study.models,
        "items": len(items),
        "conversations": len({i.conversation_id for i in items}),
        "chinese": chinese_shares(study),
        "failures": study.failures(),
        "human": None,
        "agreement": None,
        "judges": {},
        "bootstrap": {"resamples": config.bootstrap_resamples, "confidence": config.confidence, "unit": "conversation"},
    }
    if votes:
        report["human"] = vote_section(study, by_id, votes, config, with_bradley_terry)
        by_item: dict[int, dict[str, str]] = defaultdict(dict)
        for item_id, annotator, choice in votes:
            by_item[item_id][annotator] = choice
        report["agreement"] = agreement(by_item)
    for judge in sorted({j["judge"] for j in judged}):
        mine = [j for j in judged if j["judge"] == judge]
        section = vote_section(study, by_id, [(j["item_id"], judge, j["choice"]) for j in mine], config,
                               with_bradley_terry)  # fmt: skip
        section["consistent"] = sum(consistent(j["first"], j["second"]) for j in mine)
        # the raw verdicts, each in the side terms it was shown in: a judge's own preference for the
        # first-shown reply is what the swap exists to cancel
        section["position_bias"] = position_bias([v for j in mine for v in (j["first"], j["second"]) if v])
        section["failed"] = [{"item": j["item_id"], "error": j["error"]} for j in study.judge_votes()
                             if j["judge"] == judge and j["choice"] is None]  # fmt: skip
        report["judges"][judge] = section
    return report


# ------------------------------------------------------------------------------------------- rendering


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def table8(models: Sequence[str], section: dict[str, Any], chinese: dict[str, float | None], confidence: float) -> str:
    """Rows: each model's (W + ½T)/N against each column model, with its interval; then %Chinese."""
    cell: dict[tuple[str, str], str] = {}
    for p in section["pairs"]:
        if not p["n"]:
            continue
        lo, hi = p["ci_score_rate"]
        cell[(p["a"], p["b"])] = f"{_pct(p['score_rate'])}{_ci([lo, hi])}"
        cell[(p["b"], p["a"])] = f"{_pct(1 - p['score_rate'])}{_ci([1 - hi, 1 - lo])}"
    head = "| Model | " + " | ".join(f"vs {m}" for m in models) + " | %Chinese |"
    lines = [head, "|---|" + "---:|" * (len(models) + 1)]
    for row in models:
        cells = ["N/A" if row == col else cell.get((row, col), "–") for col in models]
        zh = chinese.get(row)
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {'–' if zh is None else f'{zh:.1f}'} |")
    lines.append("")
    lines.append(f"Win rate (W + ½T)/N ×100 of the row model against the column model, "
                 f"{100 * confidence:g}% bootstrap interval by conversation in brackets.")  # fmt: skip
    return "\n".join(lines)


def pair_table(section: dict[str, Any]) -> str:
    lines = ["| a vs b | W | T (both bad) | L | N | conversations | W/N | interval | (W+½T)/N | interval |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]  # fmt: skip
    for p in section["pairs"]:
        lines.append(f"| {p['a']} vs {p['b']} | {p['wins']} | {p['ties']} ({p['both_bad']}) | {p['losses']} | "
                     f"{p['n']} | {p['conversations']} | {_pct(p['win_rate'])} |{_ci(p['ci_win_rate'])} | "
                     f"{_pct(p['score_rate'])} |{_ci(p['ci_score_rate'])} |")  # fmt: skip
    return "\n".join(lines)


def _bias_line(bias: dict[str, Any]) -> str:
    if not bias["decisive"]:
        return "Position bias: no decisive (left or right) vote."
    return (f"Position bias: {bias['left']} of {bias['decisive']} decisive votes chose the left side "
            f"({_pct(bias['left_share'])}%), two-sided binomial p = {bias['p_value']:.3g} against 50%.")  # fmt: skip


def _bt_lines(bt: dict[str, float] | None, unbounded: Sequence[str]) -> list[str]:
    if not bt:
        return []
    lines = ["", "Bradley–Terry strengths (log scale, mean 0; Elo-like = 1000 + 400·θ/ln 10):", "",
             "| model | θ | Elo-like |", "|---|---:|---:|"]  # fmt: skip
    for model, theta in sorted(bt.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {model} | {theta:.3f} | {1000 + 400 * theta / math.log(10):.0f} |")
    if unbounded:
        lines += ["", f"{', '.join(unbounded)}: never lost or never won, so the strength is only a bound (kept "
                      "finite by a tiny ridge penalty)."]  # fmt: skip
    return lines


def markdown(report: dict[str, Any]) -> str:
    conf = report["bootstrap"]["confidence"]
    out = [f"# Pairwise study {report['study']}", "",
           f"{report['items']} items over {report['conversations']} conversations; models: "
           f"{', '.join(report['models'])}.", ""]  # fmt: skip
    human = report["human"]
    if human is None:
        out += ["## Human votes", "", "No human votes yet.", ""]
    else:
        out += ["## Human votes", "",
                f"{human['votes']} votes on {human['items_voted']} items by {len(human['voters'])} annotator(s).", "",
                table8(report["models"], human, report["chinese"], conf), "", pair_table(human), "",
                _bias_line(human["position_bias"])]  # fmt: skip
        agree = report["agreement"]
        if agree["available"]:
            fleiss = agree["fleiss_kappa"]
            out += ["", f"Agreement on {agree['items']} items voted by several annotators "
                        f"({agree['annotators']} annotators): Krippendorff's α = {_num(agree['krippendorff_alpha'])}, "
                        f"Fleiss' κ = {_num(fleiss)} ({agree['fleiss_items']} items with "
                        f"{agree['fleiss_votes_per_item']} votes), mean Cohen's κ over annotator pairs = "
                        f"{_num(agree['cohen_kappa_mean'])}, pairwise agreement "
                        f"{_pct(agree['percent_agreement'])}%."]  # fmt: skip
        else:
            out += ["", f"Agreement cannot be computed: {agree['reason']}."]
        out += _bt_lines(human["bradley_terry"], human.get("bradley_terry_unbounded", []))
    for judge, section in report["judges"].items():
        out += ["", f"## Judge {judge} (not human votes)", "",
                f"{section['votes']} items judged in both orders; {section['consistent']} consistent, "
                f"{section['votes'] - section['consistent']} inconsistent (counted as ties); "
                f"{len(section['failed'])} not judged.", "",
                table8(report["models"], section, report["chinese"], conf), "", pair_table(section), "",
                _bias_line(section["position_bias"])]  # fmt: skip
        out += _bt_lines(section["bradley_terry"], section.get("bradley_terry_unbounded", []))
    failures = report["failures"]
    out += ["", "## Replies not collected", ""]
    if not failures:
        out.append("None: every model answered every prompt.")
    else:
        per_model: dict[str, int] = defaultdict(int)
        for f in failures:
            per_model[f["model"]] += 1
        out.append("; ".join(f"{m}: {n}" for m, n in per_model.items()) + " (items of those prompts with that model "
                   "were not made):")  # fmt: skip
        out += [f"- {f['model']} on {f['prompt']}: {f['error']}" for f in failures]
    return "\n".join(out) + "\n"


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "pairwise_report.md", out / "pairwise_report.json"
    md.write_text(markdown(report), encoding="utf-8")
    js.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return md, js


__all__ = ["CHOICES", "build_report", "markdown", "write_report"]
