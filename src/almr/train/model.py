"""The model a training stage starts from: any Hugging Face causal LM and its tokenizer, loaded
(or built from its config.json with random weights) in fp32 master weights, checked against
each other before any compute."""

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from almr.errors import ConfigError
from almr.train.config import ModelConfig


def build_model(config: ModelConfig, *, random_init: bool = False) -> tuple[torch.nn.Module, Any]:
    """The causal LM and its tokenizer from `config.name_or_path`; with `random_init`, the
    architecture from its config.json with weights drawn from the seeded RNG."""
    path = model_path(config)
    try:
        if random_init:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except ValueError as err:
        raise ConfigError(
            f"model.name_or_path={path} is not a causal language model that transformers can train "
            f"({str(err).splitlines()[0]}); point it at a *ForCausalLM checkpoint such as a Llama"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read a model from model.name_or_path={path}: {str(err).splitlines()[0]}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.name_or_path={path} has no tokenizer that transformers can load ({str(err).splitlines()[0]}); "
            "checkpoints must ship one, so save the tokenizer into that directory"
        ) from None
    vocab = vocab_size(model)
    if len(tokenizer) > vocab:
        raise ConfigError(
            f"the tokenizer at {path} has {len(tokenizer)} tokens but the model's embedding has {vocab} rows; "
            "use the tokenizer the model was built for (or resize the model's embeddings)"
        )
    model.config.use_cache = False
    return model, tokenizer


def model_path(config: ModelConfig) -> str:
    """`model.name_or_path`, refused when unset."""
    if not config.name_or_path:
        raise ConfigError("model.name_or_path is not set; point it at a Hugging Face model directory (or hub id)")
    return config.name_or_path


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the input embedding: every token id the model accepts is below this."""
    return model.get_input_embeddings().weight.shape[0]
