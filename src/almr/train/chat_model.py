"""What SFT and DPO share about a chat model: load it and refuse a checkpoint that is not one,
check its chat template and the loss mask the template yields, give the chat special tokens a
base model never trained a starting point, pick the precision for the device, and save the
result as a Hugging Face directory that transformers, vLLM and `almr eval` read.

The loss mask is checked rather than trusted: a template without `{% generation %}` markers, or
with markers in the wrong place, trains the user's text or never trains the end-of-turn token,
and the trainer does not say so (TRL issues #3781, #3728, #3927; transformers #34172). Here a
few conversations are rendered and the mask is compared with where each reply and its
end-of-turn token really are; a wrong mask stops the stage before any compute.

Untrained special tokens: a base model (Llama-3 base, a CPT checkpoint) never saw the chat
tokens (`<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>`), and Llama-3 base leaves
their input embedding rows at zero (and Llama-3.1 its output rows at one shared value). A row
counts as untrained when it is about zero (norm at most `UNTRAINED_NORM_RATIO` × the median row
norm of its matrix) or exactly equal to another row, in the input embedding or the untied output
one. Such rows are set to the mean of the other non-zero rows, in both matrices, so that the
first SFT steps start from an ordinary token instead of a zero vector; after training each row
has moved its own way, so a later stage (the empathy SFT from C-SFT) finds them trained.
"""

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging

from almr.errors import ConfigError
from almr.train.config import ModelConfig
from almr.train.model import refusing_unreadable_model

# A row whose norm is at most this fraction of the median row norm is (about) zero: never trained.
UNTRAINED_NORM_RATIO = 1e-3
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
# The conversation every mask check renders first, whatever the data: a system turn and two
# rounds, so that each role and a second reply are covered.
PROBE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "I am an assistant. How can I help?"},
    {"role": "user", "content": "Say something short."},
    {"role": "assistant", "content": "Something short."},
]


# ---------------------------------------------------------------------------------------- loading


def chat_model_path(model_config: ModelConfig) -> str:
    """`model.name_or_path` when it names a local Hugging Face model directory with weights (or
    a hub id); refused with the key and the fix otherwise. Cheap: reads no weights."""
    name = model_config.name_or_path
    if not name:
        raise ConfigError(
            "model.name_or_path is not set; point it at the Hugging Face directory of the model to fine-tune "
            "(a CPT run's checkpoints/step_N/hf, an SFT run's hf/, or a downloaded Llama-3)"
        )
    path = Path(name).expanduser()
    if not path.exists():
        if _looks_like_hub_id(name):
            return name  # transformers reaches the hub, or says it cannot (load_chat_model reports it)
        raise ConfigError(f"model.name_or_path={name} does not exist; point it at a Hugging Face model directory")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(
            f"model.name_or_path={name} is not a Hugging Face model directory (no config.json); point it at a "
            "directory written by save_pretrained, such as a CPT run's checkpoints/step_N/hf"
        )
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_FILES):
        raise ConfigError(
            f"model.name_or_path={name} holds a config.json but no weights (*.safetensors or *.bin); "
            "train it first (the demo world's model/ is a shape only: `almr world pretrain`), or point at a checkpoint"
        )
    return str(path)


def load_chat_tokenizer(model_config: ModelConfig) -> Any:
    """The tokenizer saved with the model at `model.name_or_path`."""
    path = chat_model_path(model_config)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        if not Path(path).exists():
            raise ConfigError(
                f"model.name_or_path={path} is not a local directory and the hub did not provide it "
                f"({_first_line(err)}); download it first, or point at a local directory"
            ) from None
        raise ConfigError(
            f"model.name_or_path={path} has no tokenizer that transformers can load ({_first_line(err)}); "
            "a chat model directory must ship its tokenizer: save it there with tokenizer.save_pretrained"
        ) from None


def load_chat_model(model_config: ModelConfig, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The causal LM at `model.name_or_path` with weights in `dtype`, and its tokenizer."""
    path = chat_model_path(model_config)
    tokenizer = load_chat_tokenizer(model_config)
    with refusing_unreadable_model(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ConfigError(
            f"the tokenizer at model.name_or_path={path} has {len(tokenizer)} tokens but the model's embedding "
            f"has {rows} rows; use the tokenizer the model was trained with"
        )
    model.config.use_cache = False
    return model, tokenizer


# ---------------------------------------------------------------------------------------- template and mask


def check_chat_template(tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer without a chat template, or whose template has no `{% generation %}`
    markers (without them no trainer can tell the assistant's tokens from the rest)."""
    template = _template_text(tokenizer)
    if not template:
        raise ConfigError(
            f"the tokenizer of {where} has no chat template, so conversations cannot be rendered; save one with "
            "the tokenizer (tokenizer.chat_template = ...; tokenizer.save_pretrained(DIR)), e.g. Llama-3's with "
            "generation markers (docs/post-training.md)"
        )
    if not _GENERATION_MARKER.search(template):
        raise ConfigError(
            f"the chat template of {where} has no {{% generation %}} markers, so the loss cannot be limited to the "
            "assistant's replies; wrap each assistant reply AND its end-of-turn token in them, e.g. "
            "{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %} in a Llama-3 "
            "template, and save the tokenizer again (docs/post-training.md shows a whole template)"
        )


@dataclass(frozen=True)
class MaskReport:
    conversations: int  # conversations rendered and checked
    trained_tokens: int  # tokens in the loss over them
    end_of_turn: str  # the token the template puts after each assistant reply (Llama-3: <|eot_id|>)


def check_loss_mask(
    tokenizer: Any, examples: Sequence[Mapping[str, Any]], n: int = 4, where: str = "the model"
) -> MaskReport:
    """Render `PROBE_CONVERSATION` and the first `n` examples with the assistant-token mask the
    trainer uses, and refuse to start unless exactly each assistant reply and the end-of-turn
    token after it are trained: not an empty mask, no system/user/template token, no reply or
    end-of-turn token left out."""
    conversations = [PROBE_CONVERSATION] + [example["messages"] for example in list(examples)[:n]]
    trained, end_of_turn = 0, set()
    for index, messages in enumerate(conversations):
        what = "almr's probe conversation" if index == 0 else f"training conversation {index}"
        count, eot = _check_one_mask(tokenizer, messages, f"{what} rendered with the chat template of {where}")
        trained += count
        end_of_turn |= eot
    if len(end_of_turn) != 1:
        raise ConfigError(
            f"the chat template of {where} ends assistant replies with different tokens "
            f"({', '.join(sorted(end_of_turn))}); end every reply with one end-of-turn token (Llama-3: <|eot_id|>)"
        )
    return MaskReport(len(conversations), trained, end_of_turn.pop())


def end_of_turn_token(tokenizer: Any) -> str:
    """The token the chat template puts right after an assistant reply (Llama-3: `<|eot_id|>`)."""
    rendered = tokenizer.apply_chat_template(PROBE_CONVERSATION[1:3], tokenize=False)
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    reply = PROBE_CONVERSATION[2]["content"]
    end = rendered.rindex(reply) + len(reply)
    for token_id, (start, _) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        if start >= end:
            return tokenizer.convert_ids_to_tokens(token_id)
    raise ConfigError(
        "the chat template puts nothing after an assistant reply: end each reply with an end-of-turn token"
    )


def chat_special_tokens(tokenizer: Any) -> list[str]:
    """The special tokens the chat template writes (Llama-3: begin_of_text, the two header tokens,
    eot_id): the added tokens found in a rendered conversation, the padding token left out."""
    rendered = tokenizer.apply_chat_template(PROBE_CONVERSATION, tokenize=False)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    added = set(tokenizer.added_tokens_decoder)
    found = dict.fromkeys(i for i in ids if i in added and i != tokenizer.pad_token_id)
    return tokenizer.convert_ids_to_tokens(list(found))


def _check_one_mask(tokenizer: Any, messages: Sequence[Mapping[str, Any]], what: str) -> tuple[int, set[str]]:
    rendered = tokenizer.apply_chat_template(list(messages), tokenize=False)
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != ids:
        raise ConfigError(f"{what}: the rendered text does not tokenize to the trained ids; the mask cannot be checked")
    offsets = [tuple(span) for span in encoded["offset_mapping"]]
    if not any(mask):
        raise ConfigError(
            f"{what}: the loss mask is empty (no token inside {{% generation %}} … {{% endgeneration %}}); put the "
            "assistant's reply and its end-of-turn token inside the markers"
        )
    spans = _content_spans(rendered, messages, what)
    allowed, required_reply, eot_positions = set(), set(), []
    for role, start, end in spans:
        if role != "assistant" or start == end:
            continue
        reply = {i for i, (s, e) in enumerate(offsets) if s < end and e > start}
        after = next((i for i, (s, _) in enumerate(offsets) if s >= end), None)
        if after is None:
            raise ConfigError(
                f"{what}: nothing follows the assistant's reply; end each reply with an end-of-turn token"
            )
        allowed |= reply | {after}
        required_reply |= reply
        eot_positions.append(after)
    for i, bit in enumerate(mask):
        if bit and i not in allowed:
            raise ConfigError(f"{what}: {_describe_stray(tokenizer, rendered, offsets, i, spans)} is trained; only the "
                              "assistant's replies and their end-of-turn tokens may be inside {% generation %} … "
                              "{% endgeneration %}")  # fmt: skip
    for i in sorted(required_reply):
        if not mask[i]:
            start, end = offsets[i]
            raise ConfigError(
                f"{what}: the assistant's reply is not trained at {rendered[start:end]!r} (token {i}); put the whole "
                "reply inside {% generation %} … {% endgeneration %}"
            )
    end_tokens = set()
    for i in eot_positions:
        token = tokenizer.convert_ids_to_tokens(ids[i])
        if not mask[i]:
            raise ConfigError(
                f"{what}: the end-of-turn token {token} after the assistant's reply is not trained, so the model "
                f"would never learn to stop; move {token} inside {{% generation %}} … {{% endgeneration %}}"
            )
        end_tokens.add(token)
    return sum(mask), end_tokens


def _content_spans(rendered: str, messages: Sequence[Mapping[str, Any]], what: str) -> list[tuple[str, int, int]]:
    """(role, start, end) of each message's content in the rendered text, in order."""
    spans, cursor = [], 0
    for number, message in enumerate(messages, start=1):
        content = message.get("content")
        if not isinstance(content, str):
            raise ConfigError(f"{what}: message {number} has no text content")
        text = content.strip()
        start = rendered.find(text, cursor) if text else cursor
        if start < 0:
            raise ConfigError(
                f"{what}: message {number} ({message.get('role')}) does not appear verbatim in the rendered "
                "conversation, so the mask cannot be checked; use a template that writes each message's content "
                "as it is"
            )
        spans.append((str(message.get("role")), start, start + len(text)))
        cursor = start + len(text)
    return spans


def _describe_stray(tokenizer: Any, rendered: str, offsets: list[tuple[int, int]], index: int,
                    spans: list[tuple[str, int, int]]) -> str:  # fmt: skip
    start, end = offsets[index]
    for role, s, e in spans:
        if role != "assistant" and start < e and end > s:
            return f"{role} text ({rendered[s:e][:40]!r})"
    return f"template text outside the replies ({rendered[start:end]!r}, token {index}; e.g. a role header)"


# ---------------------------------------------------------------------------------------- untrained tokens


def init_untrained_special_tokens(model: torch.nn.Module, tokenizer: Any, tokens: Iterable[str]) -> list[str]:
    """Set the embedding rows of those `tokens` that were never trained (`untrained_rows`), in the
    input embedding or the untied output one, to the mean of the other non-zero rows, in both
    matrices; return the tokens changed."""
    inputs = model.get_input_embeddings().weight
    if inputs.is_meta:
        return []  # a process without weights (FSDP's rank-0 loading): rank 0's rows are broadcast
    output_layer = model.get_output_embeddings()
    outputs = None if output_layer is None or output_layer.weight is inputs else output_layer.weight
    matrices = [inputs] if outputs is None else [inputs, outputs]
    candidates = {}
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and 0 <= token_id < inputs.shape[0]:
            candidates[token] = token_id
    flagged = [untrained_rows(matrix, list(candidates.values())) for matrix in matrices]
    chosen = [(token, token_id) for token, token_id in candidates.items() if any(f[token_id] for f in flagged)]
    if not chosen:
        return []
    ids = [token_id for _, token_id in chosen]
    with torch.no_grad():
        for matrix in matrices:
            norms = matrix.detach().float().norm(dim=1)
            others = norms > UNTRAINED_NORM_RATIO * norms.median()
            others[ids] = False
            matrix[ids] = matrix[others].float().mean(dim=0).to(matrix.dtype)
    return [token for token, _ in chosen]


def untrained_rows(matrix: torch.Tensor, ids: Sequence[int]) -> dict[int, bool]:
    """For each row in `ids`: does it look never trained? Either about zero (norm at most
    UNTRAINED_NORM_RATIO × the median row norm: Llama-3 base's input rows of its chat tokens) or
    exactly equal to another row (rows left at a shared initial value: Llama-3.1's output rows of
    its reserved and chat tokens). Training moves each row its own way, so a model fine-tuned from
    rows set here is not reset by the next stage."""
    weights = matrix.detach()
    norms = weights.float().norm(dim=1)
    floor = UNTRAINED_NORM_RATIO * norms.median()
    return {i: bool(norms[i] <= floor) or int((weights == weights[i]).all(dim=1).sum()) > 1 for i in ids}


# ---------------------------------------------------------------------------------------- device and saving


def resolve_device(device: str) -> str:
    """`auto` → cuda when a GPU is visible, else cpu; `cuda` without a GPU is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no GPU is visible to this process; set device: auto or cpu")
    return device


def start_processes(device: str) -> None:
    """Join the process group that torchrun or accelerate launch describe in the environment (a
    no-op in one process), before the model is loaded: under an accelerate FSDP config with
    `fsdp_cpu_ram_efficient_loading: true`, transformers then reads the weights on rank 0 only
    (the others hold empty tensors) and FSDP broadcasts them when it shards the model."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState(cpu=resolve_device(device) == "cpu")


def device_settings(device: str, gradient_checkpointing: bool | None, dtype: str = "float32") -> dict[str, Any]:
    """TrainingArguments fields for the device: on a GPU bf16 autocast over fp32 weights when
    `dtype` is bfloat16 and the GPU supports it, gradient checkpointing unless turned off; on a
    CPU fp32 and no gradient checkpointing unless asked (TRL's defaults, bf16 and checkpointing,
    are ~10× slower there), `use_cpu`. (`activation_checkpointing` is transformers 5's name for
    gradient checkpointing.)"""
    kind = resolve_device(device)
    if kind == "cpu":
        return {"use_cpu": True, "bf16": False, "fp16": False, "activation_checkpointing": bool(gradient_checkpointing)}
    bf16 = dtype == "bfloat16" and torch.cuda.is_bf16_supported()
    checkpointing = True if gradient_checkpointing is None else gradient_checkpointing
    return {"use_cpu": False, "bf16": bf16, "fp16": False, "activation_checkpointing": checkpointing}


def save_chat_model(model: torch.nn.Module, tokenizer: Any, out_dir: Path, eos_tokens: Sequence[str],
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
    """A Hugging Face directory at `out_dir`: safetensors weights (LoRA adapters merged first),
    config, tokenizer with its chat template, and a generation config whose eos_token_id lists
    the tokenizer's EOS and each of `eos_tokens` (the end-of-turn token), so that generation
    in transformers and vLLM stops at the end of a reply."""
    out_dir = Path(out_dir)
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters into the weights
        model = model.merge_and_unload()
        state_dict = None
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    write_chat_files(out_dir, tokenizer, eos_tokens, getattr(model, "generation_config", None))
    return out_dir


def write_chat_files(out_dir: Path, tokenizer: Any, eos_tokens: Sequence[str],
                     base: GenerationConfig | None = None) -> None:  # fmt: skip
    """The tokenizer (with its chat template) and generation_config.json of a chat model directory
    whose weights are already there (also used after a multi-process save)."""
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    eos_ids = [tokenizer.eos_token_id, *(tokenizer.convert_tokens_to_ids(t) for t in eos_tokens)]
    eos_ids = list(dict.fromkeys(i for i in eos_ids if i is not None))
    generation = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = eos_ids
    generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(out_dir)
    config_path = out_dir / "config.json"
    if config_path.is_file():  # a model saved for training has use_cache off: serving wants it on
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("use_cache") is False:
            config["use_cache"] = True
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _template_text(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return template or ""


def _looks_like_hub_id(name: str) -> bool:
    # owner/name (one slash) or a bare name, not a path: a missing local path is reported as missing
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and "\\" not in name


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def quiet_libraries(tqdm_bars: bool = False) -> Iterator[None]:
    """No progress bars from datasets' preparation or transformers' loading and shard writing (the
    run has its own bar, and its log lines are the metrics); other tqdm bars (TRL's reference
    pass) only with `tqdm_bars`; no deprecation noise. Everything restored after."""
    datasets_bars, hf_bars = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    previous = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    if not tqdm_bars:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        with warnings.catch_warnings():
            # TRL 1.16 (with peft) still asks transformers 5 for the renamed is_gradient_checkpointing
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
