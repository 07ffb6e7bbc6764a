"""The model a training stage starts from: any Hugging Face causal LM and its tokenizer, loaded
(or built from its config.json with random weights) in fp32 master weights, checked against
each other before any compute. A bad directory — missing, a truncated or corrupt weights file,
a config.json that disagrees with the weights — is one message naming the path and the fix."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from almr.errors import ConfigError
from almr.train.config import ModelConfig

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    stored_dtype: torch.dtype | None  # the dtype the directory's config.json names (how it was shipped)


def build_model(config: ModelConfig, *, random_init: bool = False) -> LoadedModel:
    """The causal LM and its tokenizer from `config.name_or_path`; with `random_init`, the
    architecture from its config.json with weights drawn from the seeded RNG. The model's
    config is left as the directory has it (an export writes it back unchanged)."""
    path = model_path(config)
    hf_config = read_hf_config(config)
    shipped = stored_dtype(hf_config)  # before the build, which sets the config's dtype to fp32
    model_kw = model_kwargs(config)
    with refusing_unreadable_model(path, getattr(hf_config, "vocab_size", "?")):
        if random_init:
            model = AutoModelForCausalLM.from_config(hf_config, **model_kw)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, config=hf_config, **model_kw)
    tokenizer = load_tokenizer(config, vocab_size(model))
    return LoadedModel(model, tokenizer, shipped)


def read_hf_config(config: ModelConfig) -> Any:
    """The model directory's config.json, refused with the path and the fix when unreadable."""
    path = model_path(config)
    try:
        return AutoConfig.from_pretrained(path, **hub_kwargs(config))
    except (OSError, ValueError) as err:
        where = "there" if Path(path).expanduser().exists() else "(no local directory of that name, nor on the hub)"
        raise ConfigError(
            f"model.name_or_path={path}: no Hugging Face model config {where}: {_first_line(err)}; point it at a "
            "directory holding config.json"
        ) from None


def model_kwargs(config: ModelConfig) -> dict[str, Any]:
    """What every build of the model passes transformers: fp32 master weights, the hub options and
    the attention implementation."""
    model_kw: dict[str, Any] = {"dtype": torch.float32, **hub_kwargs(config)}
    if config.attn_implementation:
        model_kw["attn_implementation"] = config.attn_implementation
    return model_kw


def load_tokenizer(config: ModelConfig, vocab: int) -> Any:
    """The directory's tokenizer, refused when missing or larger than the model's `vocab` rows."""
    path = model_path(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs(config))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.name_or_path={path} has no tokenizer that transformers can load ({_first_line(err)}); "
            "checkpoints must ship one, so save the tokenizer into that directory"
        ) from None
    if len(tokenizer) > vocab:
        raise ConfigError(
            f"the tokenizer at {path} has {len(tokenizer)} tokens but the model's embedding has {vocab} rows; "
            "use the tokenizer the model was built for (or resize the model's embeddings)"
        )
    return tokenizer


def stored_dtype(hf_config: Any) -> torch.dtype | None:
    """The dtype the directory's config.json names (how the model was shipped)."""
    return _as_dtype(getattr(hf_config, "dtype", None))


def model_path(config: ModelConfig) -> str:
    """`model.name_or_path`, refused when unset or when it names a local path that does not exist
    (anything but a plain hub id such as `meta-llama/Meta-Llama-3-8B`)."""
    if not config.name_or_path:
        raise ConfigError("model.name_or_path is not set; point it at a Hugging Face model directory (or hub id)")
    path = config.name_or_path
    if not Path(path).expanduser().exists() and not _HUB_ID.match(path):
        raise ConfigError(f"model.name_or_path={path}: no such directory; point it at a Hugging Face model directory")
    return path


def hub_kwargs(config: ModelConfig) -> dict[str, Any]:
    """What every from_pretrained of the model's directory passes: revision, trust_remote_code."""
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    if config.revision:
        kwargs["revision"] = config.revision
    return kwargs


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the input embedding: every token id the model accepts is below this."""
    return model.get_input_embeddings().weight.shape[0]


def _as_dtype(value: Any) -> torch.dtype | None:
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype):
        return getattr(torch, value)
    return None


@contextmanager
def refusing_unreadable_model(path: str | Path, vocab_size: Any = "?") -> Iterator[None]:
    """transformers' and safetensors' errors while a causal LM is built from `path` (not a causal
    LM, unreadable, a config.json that disagrees with the weights, a truncated weights file), as one
    ConfigError naming the folder and the fix. CPT, SFT and DPO load through it."""
    try:
        yield
    except ValueError as err:
        raise ConfigError(
            f"model.name_or_path={path} is not a causal language model that transformers can train "
            f"({_first_line(err)}); point it at a *ForCausalLM checkpoint such as a Llama"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read a model from model.name_or_path={path}: {_first_line(err)}") from None
    except RuntimeError as err:
        if "mismatch" in str(err).lower():
            raise shape_mismatch(path, vocab_size) from None
        raise ConfigError(f"cannot read the weights in model.name_or_path={path}: {_first_line(err)}") from None
    except Exception as err:  # safetensors' own error type: a truncated or corrupt file
        if type(err).__name__ != "SafetensorError":
            raise
        raise ConfigError(
            f"model.name_or_path={path}: a weights file (*.safetensors) is truncated or corrupt "
            f"({_first_line(err)}); copy or download it again"
        ) from None


def shape_mismatch(path: str | Path, vocab_size: Any = "?") -> ConfigError:
    """The error for weights whose shapes differ from what the config.json builds."""
    return ConfigError(
        f"model.name_or_path={path}: its config.json does not match the weights' shapes (for instance "
        f"vocab_size={vocab_size} against the embedding's rows); restore the config.json that was saved with "
        "these weights"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
