"""The SFT stage (`almr sft CONFIG`): a whole config in, a run folder out, a chat model in its hf/.

It checks everything it can before any compute, cheapest first: the starting checkpoint
(`model.name_or_path` is a Hugging Face directory with weights), its tokenizer's chat template
(present, with `{% generation %}` markers), the data (read and validated by almr.data.chat),
and the loss mask on a few rendered conversations. Then it loads the model, gives the chat
special tokens a base model never trained the mean embedding (and says which), and hands the
model and the mixed conversations to `almr.train.sft.train_sft` with the model and sft sections.

The same stage makes C-SFT (from a CPT checkpoint, on the SFT mix) and C-SFT-Empathy (from
C-SFT's hf/, on emotional-support conversations): only model.name_or_path, sft.run_dir and
sft.datasets differ (docs/post-training.md).
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from almr.config import AlmrConfig
from almr.data.chat import load_sft_mix
from almr.processes import is_main_process
from almr.train.chat_model import (
    chat_model_path,
    chat_special_tokens,
    check_chat_template,
    check_loss_mask,
    init_untrained_special_tokens,
    load_chat_model,
    load_chat_tokenizer,
    resolve_device,
    start_processes,
)
from almr.train.sft import SftResult, train_sft


@dataclass
class SftSummary:
    """What the stage did: written to run_dir/summary.json and said in one line."""

    run_dir: str
    hf_dir: str | None
    model: str  # the starting checkpoint
    steps: int
    examples: int  # conversations trained on
    truncated: int  # cut after their last assistant turn that fits sft.batch.seq_len
    dropped: int  # longer than seq_len up to their first reply: left out
    counts: dict[str, int]  # conversations per data set
    skipped: dict[str, int]  # data sets left out by exclude_languages
    initialized_tokens: list[str]  # untrained chat tokens set to the mean embedding
    end_of_turn: str
    packing: bool
    notes: list[str]  # asked for and done otherwise (packing refused, LoRA and new tokens), and why
    pack_fill: float | None
    padding_waste: float
    tokens: int
    tokens_per_s: float | None
    final_loss: float | None
    losses: list[float] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the command prints."""
        fitted = f"{self.truncated} truncated, {self.dropped} dropped"
        batches = f"pack fill {self.pack_fill:.1%}" if self.packing and self.pack_fill is not None else (
            f"padding waste {self.padding_waste:.1%}")  # fmt: skip
        loss = f"final loss {self.final_loss:.4f}" if self.final_loss is not None else "no loss logged"
        speed = f", {self.tokens_per_s:,.0f} tok/s" if self.tokens_per_s else ""
        return (
            f"SFT: {self.steps} steps, {self.examples:,} conversations ({fitted}), {batches}, {loss}{speed} "
            f"-> {self.hf_dir}"
        )


def run_sft(config: AlmrConfig, *, resume: bool = False, progress: bool = True,
            notify: Callable[[str], None] | None = None) -> SftSummary:  # fmt: skip
    """Run (or with `resume`, continue) the SFT stage `config` describes; one process, or this
    process's part under torchrun / accelerate launch. `notify` receives the notes worth saying
    before training starts (tokens initialized, packing refused, conversations cut)."""
    main = is_main_process()
    say = notify if notify is not None and main else (lambda text: None)
    sft = config.sft
    # ---------------------------------------------------------------- checks, cheapest first
    model_dir = chat_model_path(config.model)
    where = f"model.name_or_path={model_dir}"
    tokenizer = load_chat_tokenizer(config.model)
    check_chat_template(tokenizer, where)
    mix = load_sft_mix(sft.datasets, sft.exclude_languages, sft.seed)
    mask = check_loss_mask(tokenizer, mix.examples, where=where)
    # ---------------------------------------------------------------- model
    start_processes(sft.device)  # before loading: FSDP's rank-0-only loading needs the process group
    model, tokenizer = load_chat_model(config.model, dtype=weights_dtype(config))
    initialized = init_untrained_special_tokens(model, tokenizer, chat_special_tokens(tokenizer))
    if initialized:
        say(f"chat tokens never trained in {model_dir}: {', '.join(initialized)}; set to the mean embedding")
    for label, count in mix.skipped.items():
        say(f"left out {label} ({count} conversations): its language is in sft.exclude_languages")
    # ---------------------------------------------------------------- train
    result = train_sft(
        config.model, sft, mix.examples, model=model, tokenizer=tokenizer, resume=resume,
        record=config.model_dump(mode="json"), progress=progress,
        new_token_ids=tokenizer.convert_tokens_to_ids(initialized) if initialized else (),
    )  # fmt: skip
    summary = _summary(result, model_dir, mix.counts, mix.skipped, initialized, mask.end_of_turn)
    for note in result.notes:
        say(note)
    if main:
        path = Path(sft.run_dir) / "summary.json"
        path.write_text(json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def weights_dtype(config: AlmrConfig) -> torch.dtype:
    """fp32 master weights, except a frozen LoRA base on a GPU with model.dtype bfloat16 (half
    the memory; the adapters stay fp32)."""
    on_gpu = resolve_device(config.sft.device) == "cuda"
    lora_bf16 = config.sft.finetuning == "lora" and config.model.dtype == "bfloat16" and on_gpu
    return torch.bfloat16 if lora_bf16 else torch.float32


def _summary(result: SftResult, model_dir: str, counts: dict[str, int], skipped: dict[str, int],
             initialized: list[str], end_of_turn: str) -> SftSummary:  # fmt: skip
    return SftSummary(
        run_dir=str(result.run_dir), hf_dir=str(result.hf_dir) if result.hf_dir else None, model=model_dir,
        steps=result.steps, examples=result.examples, truncated=result.truncated, dropped=result.dropped,
        counts=dict(counts), skipped=dict(skipped), initialized_tokens=list(initialized), end_of_turn=end_of_turn,
        packing=result.packing, notes=list(result.notes), pack_fill=result.pack_fill,
        padding_waste=result.padding_waste, tokens=result.tokens, tokens_per_s=result.tokens_per_s,
        final_loss=result.final_loss, losses=list(result.losses),
    )  # fmt: skip
