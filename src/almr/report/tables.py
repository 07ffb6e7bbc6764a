"""The paper's Tables 1, 4, 5, 6, 7 and 8 in its layouts, filled from a pipeline's output.

Each benchmark column names the score keys of the real benchmark (`paper`, for a config on real
models) and of the demo world's stand-in (`world`); a column with no key for the mode at hand is
left out (so the world's tables show what the world measures, in the paper's order). For the
paper's presets, each column is followed by the paper's number for the same row and column
(`paper_numbers.py`). Each row says where its numbers came from; a row whose file is missing
shows "—" and how to make the file.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from almr.evaluate.registry import TASKS
from almr.evaluate.results import scale_of
from almr.report.collect import Loaded, Measured, Outputs, measure
from almr.report.document import MISSING, Table
from almr.report.paper_numbers import TABLE6_READING, paper_value


@dataclass(frozen=True)
class Col:
    title: str
    group: str = ""
    paper: tuple[str, ...] = ()  # score keys of the real benchmark, the first present wins
    world: str | None = None  # the demo world's stand-in
    paper_cols: tuple[str, ...] = ()  # the paper's column(s) for its numbers (several: shown "a / b")
    lower_is_better: bool = False
    share: bool = False  # %Chinese of chat replies: the eval stage's chinese_share.json in the world

    def keys(self, world: bool) -> tuple[str, ...]:
        return ((self.world,) if self.world else ()) if world else self.paper


@dataclass(frozen=True)
class Row:
    label: str  # eval/<label>.json; an ablation cell's name in Table 6
    title: str
    paper_rows: dict[str, str] = field(default_factory=dict)  # model size -> the paper's row
    marks: tuple[str, ...] = ()  # Table 6's check columns


@dataclass(frozen=True)
class Spec:
    number: str
    caption: str
    cols: tuple[Col, ...]
    rows: tuple[Row, ...]
    mark_titles: tuple[str, ...] = ()
    extra_tasks: bool = False  # add a column for every other task the rows' results hold (Table 6)
    paper_note: str = ""  # how to read the paper's numbers beside ours


# The stage that makes each evaluated model (a missing result: make the model, then evaluate it).
MODEL_STAGE = {"base": "base", "cpt": "cpt", "cpt-fixed": "baselines", "instruct": "baselines", "c-sft": "sft",
               "c-dpo": "dpo", "c-sft-empathy": "empathy"}  # fmt: skip

_EN = "English"
_ZH = "Chinese"
_RMC = "Reasoning, Math and Coding"

TABLE1 = Spec("1", "Base vs Instruct: what English-dominant fine-tuning costs in Chinese (the paper's Table 1)", (
    Col("HellaSwag", paper=("hellaswag",), paper_cols=("HellaSwag",)),
    Col("Winogrande", paper=("winogrande",), paper_cols=("Winogrande",)),
    Col("GPQA", paper=("leaderboard_gpqa", "gpqa_main_zeroshot"), paper_cols=("GPQA",)),
    Col("MUSR", paper=("leaderboard_musr",), paper_cols=("MUSR",)),
    Col("MMLU (world)", world="world_mmlu"),
    Col("LCSTS", paper=("lcsts",), world="world_lcsts", paper_cols=("LCSTS",)),
    Col("%Chinese", paper=("zh_share",), world="world_zh_share", paper_cols=("%Chinese",), share=True),
), (
    Row("base", "Base", {"8B": "Llama-3-8B", "70B": "Llama-3-70B"}),
    Row("instruct", "Instruct (SFT + DPO on English-dominant data, no CPT)",
        {"8B": "Llama-3-8B-Instruct", "70B": "Llama-3-70B-Instruct"}),
))  # fmt: skip


def table4_spec(fixed: str, chosen: str) -> Spec:
    """Table 4; `fixed` and `chosen` describe the fixed recipe's and the formal CPT's (ALMR, LR)."""
    return Spec("4", "CPT: the base model, CPT at the recommended (ALMR, LR), and a fixed-recipe CPT (the paper's "
                "Table 4)", (
        Col("C-Eval", _ZH, ("ceval-valid",), "world_ceval", ("C-Eval",)),
        Col("LCSTS", _ZH, ("lcsts",), "world_lcsts", ("LCSTS",)),
        Col("MMLU", _EN, ("mmlu",), "world_mmlu", ("MMLU",)),
        Col("AGI-Eval", _EN, ("agieval",), None, ("AGI-Eval",)),
        Col("BBH", _RMC, ("bbh",), None, ("BBH",)),
        Col("GSM8K", _RMC, ("gsm8k",), "world_gsm8k", ("GSM8K",)),
        Col("HumanEval", _RMC, ("humaneval",), "world_humaneval", ("HumanEval",)),
    ), (
        Row("base", "Base", {"8B": "Llama-3", "70B": "Llama-3"}),
        Row("cpt-fixed", f"CPT, fixed recipe ({fixed})", {"8B": "Llama-3-Chinese"}),
        Row("cpt", f"CPT at the recommended ({chosen})", {"8B": "CPT (ours)", "70B": "CPT (ours)"}),
    ))  # fmt: skip


TABLE5 = Spec("5", "Chat models on the Chinese benchmarks (the paper's Table 5)", (
    Col("LCSTS", _ZH, ("lcsts",), "world_lcsts", ("LCSTS",)),
    Col("CLUEWSC", _ZH, ("cluewsc",), None, ("CLUEWSC",)),
    Col("CMRC", _ZH, ("cmrc2018",), "world_cmrc", ("CMRC",)),
    Col("DRCD", _ZH, ("drcd",), None, ("DRCD",)),
    Col("EPRSTMT", _ZH, ("eprstmt",), "world_eprstmt", ("EPRSTMT",)),
    Col("BelleEval", _ZH, ("belle_eval",), None, ("BelleEval",)),
    Col("TriviaQA", _EN, ("triviaqa",), None, ("TriviaQA",)),
    Col("MMLU (world)", _EN, (), "world_mmlu"),
    Col("zhen", "WMT22", ("wmt22_zh-en",), "world_wmt_zh-en", ("zhen",)),
    Col("enzh", "WMT22", ("wmt22_en-zh",), "world_wmt_en-zh", ("enzh",)),
), (
    Row("instruct", "Instruct", {"8B": "Instruct", "70B": "Instruct"}),
    Row("c-sft", "C-SFT", {"8B": "C-SFT", "70B": "C-SFT"}),
    Row("c-dpo", "C-DPO", {"8B": "C-DPO", "70B": "C-DPO"}),
), paper_note="The paper reports BelleEval on a 0–1 scale.")  # fmt: skip

TABLE7 = Spec("7", "Emotional intelligence before and after the empathy stage (the paper's Table 7)", (
    Col("TAPTAP", paper=("taptap",), paper_cols=("TAPTAP",)),
    Col("Turing Test", paper=("turing_test",), paper_cols=("Turing Test",)),
    Col("SECEU score (distance, lower is better)", "SECEU", ("seceu:seceu",), "world_seceu:seceu",
        ("sent-cn", "sent-en"), lower_is_better=True),
    Col("EQ", "SECEU", ("seceu",), "world_seceu", ("EQ-cn", "EQ-en")),
), (
    Row("instruct", "Instruct", {"70B": "Llama3-70B-Instruct"}),
    Row("c-sft", "C-SFT", {"70B": "C-SFT (ours)"}),
    Row("c-sft-empathy", "C-SFT-Empathy", {"70B": "C-SFT-Empathy (ours)"}),
), paper_note="The paper's SECEU columns: its Chinese / English items (sent-cn / sent-en, EQ-cn / EQ-en); TAPTAP "
   "and its Turing test are not public.")  # fmt: skip


def table6_spec(language: str) -> Spec:
    """Table 6: the four cells of stages/ablation.py (the paper has three), each a C-DPO model."""
    ok = "✓"
    return Spec("6", f"Ablation: C-DPO with and without CPT, with and without the {language} fine-tuning data "
                "(the paper's Table 6)", (
        Col("LCSTS", _ZH, ("lcsts",), "world_lcsts", ("LCSTS",)),
        Col("CLUEWSC", _ZH, ("cluewsc",), None, ("CLUEWSC",)),
        Col("EPRSTMT", _ZH, ("eprstmt",), "world_eprstmt", ("EPRSTMT",)),
    ), (
        Row("no-cpt_without-lang", "neither", {}, ("", "")),
        Row("no-cpt_with-lang", f"{language} data only", {"8B": "w/o CPT, with Chinese data"}, ("", ok)),
        Row("cpt_without-lang", "CPT only", {"8B": "CPT, w/o Chinese data"}, (ok, "")),
        Row("cpt_with-lang", "both (C-DPO)", {"8B": "CPT, with Chinese data (C-DPO)"}, (ok, ok)),
    ), mark_titles=("CPT", f"finetune-w-{language}"), extra_tasks=True)  # fmt: skip


def fmt(m: Measured, digits: int = 2) -> str:
    if m.value is None:
        return MISSING
    return f"{m.value:.{digits}f}" + (f" ± {m.se:.{digits}f}" if m.se is not None else "")


def _extra_cols(spec: Spec, results: Sequence[dict[str, Any] | None], world: bool) -> tuple[Col, ...]:
    """A column per task in the results that no column of the layout reads."""
    used = {k.partition(":")[0] for c in spec.cols for k in c.keys(world)}
    seen: dict[str, str] = {}
    for r in results:
        if r is None:
            continue
        for task, entry in r["tasks"].items():
            if task not in used and task not in seen and measure(r, (task,), None).value is not None:
                info = TASKS.get(task)
                seen[task] = str(entry.get("title") or (info.title if info else task))
    return tuple(Col(title, "other tasks", (task,), task) for task, title in seen.items())


@dataclass
class Filled:
    """A table and the numbers behind it: `values[row label][column title]`."""

    table: Table
    values: dict[str, dict[str, Measured]]
    cols: tuple[Col, ...]


def _cell(c: Col, got: Loaded, label: str, world: bool, shares: dict[str, Measured]) -> Measured:
    """A %Chinese column reads the chat replies' share (chinese_share.json) in the world, where the
    world's own zh_share task scores raw continuations; elsewhere the zh_share task, else the file."""
    if c.share and world and label in shares:
        return shares[label]
    m = measure(got.data, c.keys(world), got.path if got.data is not None else None)
    if c.share and m.value is None and label in shares:
        return shares[label]
    return m


def model_table(spec: Spec, loaded: dict[str, Loaded], hints: dict[str, str], *, world: bool,
                size: str | None, shares: dict[str, Measured] | None = None) -> Filled:  # fmt: skip
    """`loaded[row label]`: the row's result file; `hints[row label]`: how to make a missing one;
    `shares[label]`: %Chinese of its chat replies (Outputs.zh_shares)."""
    shares = shares or {}
    cols = tuple(c for c in spec.cols if c.keys(world))
    if spec.extra_tasks:
        cols += _extra_cols(spec, [loaded[r.label].data for r in spec.rows], world)
    paper = size is not None and not world
    marks = ["Stages", *[""] * (len(spec.mark_titles) - 1)] if spec.mark_titles else []
    groups, titles = ["Model", *marks], ["", *spec.mark_titles]
    last = None
    for c in cols:
        for i, title in enumerate((c.title, "paper") if paper else (c.title,)):
            if i == 0 and not c.group:
                groups.append(" ")  # a column of no group: a blank of its own ("" continues the group before)
            else:
                groups.append(c.group if c.group != last and i == 0 else "")
            titles.append(title)
            last = c.group
    groups.append("Source")
    titles.append("")
    values: dict[str, dict[str, Measured]] = {}
    rows = []
    for r in spec.rows:
        got = loaded[r.label]
        title = r.title + (f" (paper: {r.paper_rows[size]})" if paper and size in r.paper_rows else "")
        row = [title, *r.marks]
        values[r.label] = {}
        sources = [got.path] if got.data is not None else []
        for c in cols:
            m = _cell(c, got, r.label, world, shares)
            if m.value is not None and m.source and m.source not in sources:
                sources.append(m.source)
            values[r.label][c.title] = m
            row.append(fmt(m))
            if paper:
                numbers = [paper_value(spec.number, size, r.paper_rows.get(size or ""), p) for p in c.paper_cols]
                row.append(" / ".join(f"{v:.2f}" for v in numbers if v is not None) or MISSING)
        if got.data is None:
            sources.append(f"{MISSING} {got.path} {got.problem}: run {hints[r.label]}")
        row.append("; ".join(sources))
        rows.append(row)
    header = [groups, titles] if any(c.group for c in cols) or spec.mark_titles else [
        ["Model", *titles[1:-1], "Source"]]  # fmt: skip
    notes = ["Each score ± its standard error (the evaluation's own, or that of a proportion over the items "
             "evaluated); \"—\": not measured."]  # fmt: skip
    if paper:
        notes.append(f"\"paper\": the paper's number ({size}) for the same row and column, from its Table "
                     f"{spec.number}; \"—\" where the paper prints none for this size.")  # fmt: skip
        if spec.paper_note:
            notes.append(spec.paper_note)
        if spec.number == "6":
            notes.append(f"The paper's Table 6: {TABLE6_READING}.")
    if world:
        dropped = [c.title for c in spec.cols if not c.keys(world)]
        if dropped:
            notes.append(f"The paper's columns without a demo-world stand-in: {', '.join(dropped)}.")
    return Filled(Table(header, rows, f"Table {spec.number}. {spec.caption}", notes), values, cols)


def load_models(out: Outputs, spec: Spec) -> tuple[dict[str, Loaded], dict[str, str]]:
    """Each row's eval/<label>.json, and how to make it when it is missing."""
    loaded, hints = {}, {}
    for r in spec.rows:
        loaded[r.label] = out.eval_result(r.label)
        hints[r.label] = out.rerun("eval", MODEL_STAGE.get(r.label, "eval"))
    return loaded, hints


def load_ablation(out: Outputs, spec: Spec) -> tuple[dict[str, Loaded], dict[str, str]]:
    loaded = {r.label: out.result(f"ablation/{r.label}/eval.json") for r in spec.rows}
    return loaded, {r.label: out.rerun("ablation") for r in spec.rows}


def is_percent_scale(key: str) -> bool:
    return scale_of(key) == "0-100"
