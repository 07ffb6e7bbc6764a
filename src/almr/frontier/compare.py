"""Two (or more) studies side by side — e.g. the base tokenizer against an extended one
(`almr vocab extend`) at the same token budget: where each study's optimum lies, what it scores,
and its held-out losses per character, the unit two tokenizers share.

Contract of `compare_studies(sweep_dirs, labels, out_dir)`: each sweep's `frontier/frontier.json`
(run `almr frontier SWEEP` first) and `sweep.yaml` are read; for each study the recommended
(ALMR, LR), the averaged metric there (when the study has one), the predicted validation loss
per source in nats per token and in bits per character (tokens per character measured by
encoding each source's held-out files, up to 2M characters, with that study's tokenizer), and
the ALMR as a share of characters. Writes `comparison.md` and `comparison.json` to `out_dir`.
Studies whose token budgets differ are compared all the same, with a note saying so.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from almr.config import AlmrConfig
from almr.errors import DataError
from almr.vocab.report import character_share

SAMPLE_CHARACTERS = 2_000_000


@dataclass
class StudySide:
    label: str
    sweep_dir: str
    tokenizer: str | None
    token_budget: int | None
    almr: float
    lr: float
    objective: str
    metric: float | None
    loss_per_token: dict[str, float] = field(default_factory=dict)
    tokens_per_character: dict[str, float] = field(default_factory=dict)
    almr_in_characters: float | None = None

    @property
    def bits_per_character(self) -> dict[str, float]:
        return {s: loss * self.tokens_per_character[s] / math.log(2) for s, loss in self.loss_per_token.items()
                if s in self.tokens_per_character}  # fmt: skip


def _budget(config: AlmrConfig) -> int | None:
    batch = config.cpt.batch
    if config.cpt.steps:
        return config.cpt.steps * batch.global_batch_size * batch.seq_len
    return config.cpt.total_tokens


def _tokens_per_character(config: AlmrConfig) -> dict[str, float]:
    from tokenizers import Tokenizer

    from almr.data.sources import iter_texts

    if not config.data.tokenizer:
        return {}
    tokenizer = Tokenizer.from_file(str(Path(config.data.tokenizer) / "tokenizer.json"))
    out = {}
    for source in config.data.sources:
        texts, left = [], SAMPLE_CHARACTERS
        for text in iter_texts(source.valid or source.train, source.format, source.text_field):
            texts.append(text[:left])
            left -= len(texts[-1])
            if left <= 0:
                break
        characters = sum(map(len, texts))
        if characters:
            tokens = sum(len(e.ids) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False))
            out[source.name] = tokens / characters
    return out


def _objective(rec: dict[str, Any]) -> str:
    """What the recommendation optimised: `metric`, or the loss it minimised (`frontier.json`'s
    `objective.target`)."""
    objective = rec.get("objective", "metric")
    return str(objective.get("target", "metric")) if isinstance(objective, dict) else str(objective)


def study_side(sweep_dir: Path, label: str) -> StudySide:
    summary_path, spec_path = sweep_dir / "frontier" / "frontier.json", sweep_dir / "sweep.yaml"
    for path, make in ((spec_path, "almr sweep"), (summary_path, "almr frontier")):
        if not path.is_file():
            raise DataError(f"{path} is missing: run `{make} {sweep_dir if make == 'almr frontier' else 'SPEC'}` first")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    config = AlmrConfig.model_validate(yaml.safe_load(spec_path.read_text(encoding="utf-8")))
    rec = summary["recommendation"]
    metric = rec.get("metric")
    side = StudySide(
        label, str(sweep_dir), config.data.tokenizer, _budget(config), float(rec["almr"]), float(rec["lr"]),
        _objective(rec), float(metric["mean"]) if isinstance(metric, dict) else None,
        {s: float(v["mean"]) for s, v in (rec.get("val_loss") or {}).items()}, _tokens_per_character(config),
    )  # fmt: skip
    language = config.mixture.additional_language
    added = [s.name for s in config.data.sources if s.language == language and s.name in side.tokens_per_character]
    others = [s.name for s in config.data.sources if s.language != language and s.name in side.tokens_per_character]
    if added and others:
        per_char = {name: 1 / side.tokens_per_character[name] for name in added + others}
        side.almr_in_characters = character_share(
            side.almr, sum(per_char[n] for n in added) / len(added), sum(per_char[n] for n in others) / len(others)
        )
    return side


def compare_studies(sweep_dirs: list[Path], labels: list[str] | None, out_dir: Path) -> str:
    """`almr compare` (module doc); returns the Markdown it writes."""
    labels = labels or [Path(d).name for d in sweep_dirs]
    if len(labels) != len(sweep_dirs):
        raise DataError(f"--labels names {len(labels)} studies but {len(sweep_dirs)} sweep folders are given")
    sides = [study_side(Path(d), label) for d, label in zip(sweep_dirs, labels, strict=True)]
    sources = sorted({s for side in sides for s in side.loss_per_token})
    lines = ["# Studies compared", "", "| | " + " | ".join(s.label for s in sides) + " |",
             "|---|" + "---:|" * len(sides)]  # fmt: skip

    def row(name: str, values: list[Any]) -> None:
        lines.append(f"| {name} | " + " | ".join(values) + " |")

    row("tokenizer", [f"`{s.tokenizer}`" for s in sides])
    row("token budget", [f"{s.token_budget:,}" if s.token_budget else "–" for s in sides])
    row("recommended ALMR", [f"{s.almr:.3f}" for s in sides])
    row("… as a share of characters", [f"{s.almr_in_characters:.3f}" if s.almr_in_characters else "–" for s in sides])
    row("recommended LR", [f"{s.lr:.3g}" for s in sides])
    row("chosen by", [s.objective for s in sides])
    row("averaged metric there", [f"{s.metric:.2f}" if s.metric is not None else "–" for s in sides])
    for source in sources:
        row(f"{source}: loss (nats/token)", [f"{s.loss_per_token[source]:.4f}" if source in s.loss_per_token
                                             else "–" for s in sides])  # fmt: skip
        row(f"{source}: bits/character", [f"{s.bits_per_character[source]:.4f}" if source in s.bits_per_character
                                          else "–" for s in sides])  # fmt: skip
        row(f"{source}: tokens/character", [f"{s.tokens_per_character[source]:.3f}" if source in
                                            s.tokens_per_character else "–" for s in sides])  # fmt: skip
    notes = []
    if len({s.token_budget for s in sides}) > 1:
        notes.append("The token budgets differ: the studies are not compared at a fixed budget.")
    notes.append(
        "Losses per token are not comparable across tokenizers; bits per character are (loss × tokens per "
        "character / ln 2). Predictions are the loss surfaces' at each recommended point."
    )
    text = "\n".join([*lines, "", *notes]) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(text, encoding="utf-8")
    payload = [asdict(s) | {"bits_per_character": s.bits_per_character} for s in sides]
    (out_dir / "comparison.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return text
