"""Every task almr knows, by name: its family (the column group of the paper's Tables 4–5),
where its data comes from, how it is scored, and its primary metric; and the named suites.

Three kinds of task:

- `ours`: an lm-eval YAML task shipped in `almr/evaluate/tasks/`, reading local files in the
  benchmark's published layout from the data directory (`files`, relative to it);
- `builtin`: an lm-eval task used as it is, whose data must be in the local Hugging Face
  cache: the repositories are lm-eval's own `dataset_path`s, looked up in its task index
  (`catalog.with_overrides` fills `hf_dataset`; None here means "not looked up yet");
- `judge`: scored by an LLM judge over an OpenAI-compatible endpoint (`almr.evaluate.judge`).

A world task reads the demo world's `bench/` folder, which `almr world build` writes.
"""

from dataclasses import dataclass, field
from typing import Literal

from almr.errors import ConfigError

Family = Literal["chinese", "english", "reasoning", "translation", "emotion", "zh_share", "other"]

FAMILIES: dict[str, str] = {
    "chinese": "Chinese",
    "english": "English",
    "reasoning": "Reasoning / math / code",
    "translation": "Translation",
    "emotion": "Emotional intelligence",
    "zh_share": "%Chinese",
    "other": "Other lm-eval tasks",
}


@dataclass(frozen=True)
class TaskInfo:
    name: str
    family: Family
    title: str
    kind: Literal["ours", "builtin", "judge"]
    primary: str
    mode: Literal["loglikelihood", "generation", "judge", "perplexity"]
    shots: int = 0
    files: tuple[str, ...] = ()
    source: str = ""
    hf_dataset: str | None = ""
    runs_code: bool = False
    chat: bool = False
    world: bool = False
    metrics: tuple[str, ...] = field(default=())


def _world(
    name: str, family: Family, title: str, primary: str, mode: str, files: tuple[str, ...], **kw: object
) -> TaskInfo:
    return TaskInfo(
        name, family, title, "ours", primary, mode, files=files, world=True,
        source="`almr world build DIR` writes it to DIR/bench/", **kw,
    )  # type: ignore[arg-type]  # fmt: skip


_TASKS: list[TaskInfo] = [
    # ------------------------------------------------------------------ the demo world (one per family)
    _world("world_ceval", "chinese", "C-Eval (world)", "acc", "loglikelihood", ("ceval.jsonl",)),
    _world("world_ceval_zh", "chinese", "C-Eval zh facts", "acc", "loglikelihood", ("ceval.jsonl",)),
    _world("world_ceval_en_only", "chinese", "C-Eval en-only facts", "acc", "loglikelihood", ("ceval.jsonl",)),
    _world("world_cmrc", "chinese", "CMRC (world)", "f1", "generation", ("cmrc.jsonl",), metrics=("em", "f1")),
    _world("world_lcsts", "chinese", "LCSTS (world)", "rougeL", "generation", ("lcsts.jsonl",),
           metrics=("rouge1", "rouge2", "rougeL")),
    _world("world_eprstmt", "chinese", "EPRSTMT (world)", "acc", "loglikelihood", ("eprstmt.jsonl",)),
    _world("world_mmlu", "english", "MMLU (world)", "acc", "loglikelihood", ("mmlu.jsonl",)),
    _world("world_gsm8k", "reasoning", "GSM8K (world)", "exact_match", "generation", ("gsm8k.jsonl",)),
    _world("world_humaneval", "reasoning", "HumanEval (world)", "pass@1", "generation", ("humaneval.jsonl",),
           runs_code=True),
    _world("world_wmt_zh-en", "translation", "WMT zh→en (world)", "bleu", "generation", ("wmt_zh-en.jsonl",)),
    _world("world_wmt_en-zh", "translation", "WMT en→zh (world)", "bleu", "generation", ("wmt_en-zh.jsonl",)),
    _world("world_seceu", "emotion", "SECEU EQ (world)", "eq", "loglikelihood",
           ("seceu.jsonl", "seceu_population.json"), metrics=("eq", "seceu")),
    _world("world_zh_share", "zh_share", "%Chinese (world)", "zh_share", "generation", ("ceval.jsonl",)),
    # ------------------------------------------------------------------ Chinese (ours)
    TaskInfo("cmrc2018", "chinese", "CMRC 2018", "ours", "f1", "generation", 0, ("cmrc2018/cmrc2018_dev.json",),
             "https://github.com/ymcui/cmrc2018 (squad-style-data/cmrc2018_dev.json)", metrics=("em", "f1")),
    TaskInfo("drcd", "chinese", "DRCD", "ours", "f1", "generation", 0, ("drcd/DRCD_dev.json",),
             "https://github.com/DRCKnowledgeTeam/DRCD (DRCD_dev.json)", metrics=("em", "f1")),
    TaskInfo("lcsts", "chinese", "LCSTS", "ours", "rougeL", "generation", 0, ("lcsts/test.jsonl",),
             "http://icrc.hitsz.edu.cn/Article/show/139.html (LCSTS PART_III, on application)",
             metrics=("rouge1", "rouge2", "rougeL")),
    TaskInfo("cluewsc", "chinese", "CLUEWSC", "ours", "acc", "loglikelihood", 0, ("fewclue/cluewsc/test_public.json",),
             "https://github.com/CLUEbenchmark/FewCLUE (datasets/cluewsc/test_public.json)"),
    TaskInfo("eprstmt", "chinese", "EPRSTMT", "ours", "acc", "loglikelihood", 0, ("fewclue/eprstmt/test_public.json",),
             "https://github.com/CLUEbenchmark/FewCLUE (datasets/eprstmt/test_public.json)"),
    TaskInfo("ceval-valid", "chinese", "C-Eval", "builtin", "acc", "loglikelihood", 5, hf_dataset=None),
    TaskInfo("belle_eval", "chinese", "BelleEval", "judge", "score", "judge", 0, ("belle_eval/eval_set.jsonl",),
             "https://github.com/LianjiaTech/BELLE (eval/eval_set.json)", chat=True),
    # ------------------------------------------------------------------ English (built in)
    TaskInfo("mmlu", "english", "MMLU", "builtin", "acc", "loglikelihood", 5, hf_dataset=None),
    TaskInfo("agieval", "english", "AGI-Eval", "builtin", "acc", "loglikelihood", 0, hf_dataset=None),
    TaskInfo("triviaqa", "english", "TriviaQA", "builtin", "exact_match", "generation", 0, hf_dataset=None),
    # ------------------------------------------------------------------ reasoning, math, code (built in)
    # lm-eval 0.4.13's `bbh`: its 27 subtasks 3-shot with chain of thought (SaylorTwift/bbh), scored on the
    # answer after "the answer is" (filter get-answer); `bbh_fewshot` is the answer-only variant
    TaskInfo("bbh", "reasoning", "BBH", "builtin", "exact_match", "generation", 3, hf_dataset=None),
    TaskInfo("gsm8k", "reasoning", "GSM8K", "builtin", "exact_match", "generation", 5, hf_dataset=None),
    # lm-eval's humaneval as ours (tasks/humaneval.yaml): same data, prompt and stops, pass@1 in almr's sandbox
    TaskInfo("humaneval", "reasoning", "HumanEval", "builtin", "pass@1", "generation", 0, hf_dataset=None,
             runs_code=True),
    # ------------------------------------------------------------------ translation (ours)
    TaskInfo("wmt22_zh-en", "translation", "WMT22 zh→en", "ours", "bleu", "generation", 0, ("wmt22/zh-en.jsonl",),
             "https://github.com/wmt-conference/wmt22-news-systems (txt/sources, txt/references), or "
             "`sacrebleu -t wmt22 -l zh-en --echo src ref`"),
    TaskInfo("wmt22_en-zh", "translation", "WMT22 en→zh", "ours", "bleu", "generation", 0, ("wmt22/en-zh.jsonl",),
             "https://github.com/wmt-conference/wmt22-news-systems (txt/sources, txt/references), or "
             "`sacrebleu -t wmt22 -l en-zh --echo src ref`"),
    # ------------------------------------------------------------------ emotional intelligence
    TaskInfo("seceu", "emotion", "SECEU EQ", "ours", "eq", "loglikelihood", 0,
             ("seceu/seceu.jsonl", "seceu/population.json"),
             "https://github.com/ECNU-ICALK/EmotionalIntelligence (items, norms and the human mean/SD)",
             metrics=("eq", "seceu")),
    TaskInfo("taptap", "emotion", "TAPTAP", "ours", "acc", "loglikelihood", 0, ("taptap/test.jsonl",),
             "your TAPTAP-style emotion-classification set (no public release; layout in docs/tasks/taptap.md)"),
    TaskInfo("turing_test", "emotion", "Turing test", "judge", "human_rate", "judge", 0,
             ("turing_test/dialogues.jsonl",), "BotChat-style opening dialogues (docs/tasks/turing_test.md)",
             chat=True),
    # ------------------------------------------------------------------ %Chinese of replies
    TaskInfo("zh_share", "zh_share", "%Chinese", "ours", "zh_share", "generation", 0, ("zh_share/prompts.jsonl",),
             "any Chinese prompts, one `{\"prompt\": …}` per line (e.g. BelleEval's questions)", chat=True),
]  # fmt: skip

TASKS: dict[str, TaskInfo] = {t.name: t for t in _TASKS}

WORLD_SUITE = [t.name for t in _TASKS if t.world and not t.runs_code]

SUITES: dict[str, list[str]] = {
    "world": WORLD_SUITE,
    "chinese": ["ceval-valid", "cmrc2018", "drcd", "lcsts", "cluewsc", "eprstmt"],
    "english": ["mmlu", "agieval", "triviaqa"],
    "reasoning": ["bbh", "gsm8k", "humaneval"],
    "translation": ["wmt22_zh-en", "wmt22_en-zh"],
    "emotion": ["seceu", "taptap"],
    "zh_share": ["zh_share"],
    "judge": ["belle_eval", "turing_test"],
}
SUITES["paper"] = [name for key in ("chinese", "english", "reasoning", "translation", "emotion", "zh_share")
                   for name in SUITES[key]]  # fmt: skip
# A CPT (base) checkpoint has no chat template, so it cannot answer the chat tasks: it is scored on the
# paper's suite without them (as Fig. 2 follows C-Eval, LCSTS, GSM8K and HumanEval during CPT).
SUITES["paper-base"] = [name for name in SUITES["paper"] if not TASKS[name].chat]


def resolve_tasks(suite: str | None, tasks: list[str] | None) -> list[TaskInfo]:
    """The tasks of a suite, or the named tasks (a task name may also be a suite name); a name
    outside almr's registry is looked up in lm-eval's own catalogue (`catalog.lm_eval_info`)."""
    if suite and suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; suites: {', '.join(SUITES)}")
    names: list[str] = []
    for name in ([suite] if suite else []) + list(tasks or []):
        names += SUITES.get(name, [name])
    if not names:
        raise ConfigError("no tasks: pass --suite NAME or --tasks a,b (see `almr eval tasks`)")
    return [TASKS[n] if n in TASKS else _lm_eval_info(n) for n in dict.fromkeys(names)]


def _lm_eval_info(name: str) -> TaskInfo:
    from almr.evaluate.catalog import lm_eval_info  # scans lm-eval's task index: only for names not ours

    return lm_eval_info(name)
