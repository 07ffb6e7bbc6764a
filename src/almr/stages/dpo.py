"""The DPO stage (`almr dpo CONFIG`): a whole config in, a run folder out.

Everything that can be wrong is checked before any compute: the start model (a Hugging Face
directory with config.json, weights and a tokenizer whose chat template exists), the
preference data (read and validated by `almr.data.chat`: roles in order, a prompt ending with the
user, chosen different from rejected) and every pair rendered with the model's chat template.
Then `almr.train.dpo.train_dpo` trains with the model and dpo sections; the run folder stores the
whole resolved config.

`preference_accuracy` measures a model on held-out pairs (docs/post-training.md, "DPO"): the share
of pairs whose chosen reply the model prefers, by the summed log-probability of the response
tokens, or by DPO's implicit reward against a reference model when one is given.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jinja2 import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer

from almr.config import AlmrConfig
from almr.data.chat import load_preference_mix
from almr.errors import ConfigError, DataError
from almr.train.chat_model import load_chat_tokenizer
from almr.train.config import ModelConfig
from almr.train.dpo import DpoResult, pair_logps, train_dpo


def run_dpo(config: AlmrConfig, *, resume: bool = False, progress: bool = True) -> DpoResult:
    """Run (or with `resume`, continue) the DPO stage `config` describes."""
    tokenizer = check_model_dir(config.model)  # the cheapest check first: before the data is read
    mix = load_preference_mix(config.dpo.datasets, config.dpo.exclude_languages, config.dpo.seed)
    check_renders(mix.examples, tokenizer, config.model.name_or_path or "")
    return train_dpo(config.model, config.dpo, mix.examples, resume=resume, record=config.model_dump(mode="json"),
                     progress=progress)  # fmt: skip


def check_model_dir(model: ModelConfig) -> Any:
    """The tokenizer of `model.name_or_path` once it is known to be a Hugging Face model directory
    (config.json, weights) whose tokenizer carries a chat template."""
    tokenizer = load_chat_tokenizer(model)  # refuses a missing, non-HF or weightless directory first
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"the tokenizer at model.name_or_path={model.name_or_path} has no chat template, so preference pairs "
            "cannot be rendered; start from an SFT checkpoint (almr sft saves the template with it), or save a "
            "chat template with the tokenizer (docs/post-training.md)"
        )
    return tokenizer


def check_renders(examples: Sequence[Mapping[str, Any]], tokenizer: Any, model_dir: str) -> None:
    """Every pair renders with the chat template: the prompt with the generation prompt, and the
    prompt followed by each reply, whose text the rendering keeps."""
    for index, example in enumerate(examples):
        where = f"pair {index} of {example.get('dataset', 'the data')}"
        try:
            tokenizer.apply_chat_template(list(example["prompt"]), tokenize=False, add_generation_prompt=True)
            for side in ("chosen", "rejected"):
                full = tokenizer.apply_chat_template(list(example["prompt"]) + list(example[side]), tokenize=False)
                if any(message["content"].strip() not in full for message in example[side]):
                    raise DataError(
                        f"{where}: the chat template of {model_dir} drops its {side} reply; use a template that "
                        "renders assistant turns (the Llama-3 template saved by almr sft does)"
                    )
        except (TemplateError, TypeError, KeyError, ValueError) as err:
            raise DataError(
                f"{where} does not render with the chat template of {model_dir}: {err}; fix the pair's messages "
                "(roles system/user/assistant, string content) or the template"
            ) from None


def preference_accuracy(
    model_dir: str | Path, examples: Sequence[Mapping[str, Any]], tokenizer: Any = None, *,
    reference_dir: str | Path | None = None, batch_size: int = 8, max_length: int | None = None,
) -> float:  # fmt: skip
    """The share of `examples` (held-out preference pairs) whose chosen reply the model at
    `model_dir` prefers (`preference_margins` > 0); a tie counts as half a pair."""
    margin = preference_margins(model_dir, examples, tokenizer, reference_dir=reference_dir, batch_size=batch_size,
                                max_length=max_length)  # fmt: skip
    if len(margin) == 0:
        raise DataError("preference_accuracy needs at least one held-out pair")
    return float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())


def preference_margins(
    model_dir: str | Path, examples: Sequence[Mapping[str, Any]], tokenizer: Any = None, *,
    reference_dir: str | Path | None = None, batch_size: int = 8, max_length: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Per pair: log p(chosen) − log p(rejected), each summed over the response tokens given the
    prompt (cut to `max_length` tokens as DPO cuts them); with `reference_dir`, DPO's implicit
    reward margin instead: that margin minus the reference model's (β left out: it scales, never
    flips, the sign)."""
    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
    chosen, rejected = _logps(model_dir, examples, tokenizer, batch_size, max_length)
    margin = chosen - rejected
    if reference_dir is not None:
        ref_chosen, ref_rejected = _logps(reference_dir, examples, tokenizer, batch_size, max_length)
        margin = margin - (ref_chosen - ref_rejected)
    return margin


def _logps(
    model_dir: str | Path, examples: Sequence[Mapping[str, Any]], tokenizer: Any, batch_size: int,
    max_length: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return pair_logps(model, tokenizer, examples, batch_size=batch_size, max_length=max_length)
