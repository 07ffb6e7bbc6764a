"""Replies to a study's prompts from one model: the `logged` reply of the conversation log, any
OpenAI-compatible endpoint (`http(s)://…/v1`, through almr's one HTTP client with retries), or a
Hugging Face model directory generating in this process (its chat template, padded batches: on a
CPU one padded `generate` over many prompts is ~10× faster than one per prompt, DESIGN.md).

Each collector returns `{prompt key: reply}` and `{prompt key: error}`: a reply that could not be
had is listed with its reason, never dropped. An endpoint error that every further request would
meet too (unreachable, no credentials, no such model) stops the study instead (`EndpointError`).
"""

import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from almr.errors import AlmrError, ConfigError
from almr.evaluate.endpoint import Endpoint, EndpointError
from almr.pairwise.config import PairwiseConfig
from almr.pairwise.dialogues import Prompt

LOGGED = "logged"
Collected = tuple[dict[str, str], dict[str, str]]


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def check_source(name: str, source: str, endpoint_model: str | None, config: PairwiseConfig) -> str | None:
    """Refuse a source that cannot answer before any reply is collected; the served model id of an
    endpoint (None for the others)."""
    if source == LOGGED:
        return None
    if is_url(source):
        return Endpoint(source, config.timeout_s, config.retries, config.backoff_s).model_name(
            endpoint_model, flag=f"--endpoint-model {name}=ID"
        )
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"--model {name}={source}: not `logged`, an http(s):// endpoint, or a Hugging Face model "
                          "directory (no config.json there)")  # fmt: skip
    return None


def collect(source: str, prompts: Sequence[Prompt], config: PairwiseConfig, served: str | None = None,
            log: Callable[[str], None] = lambda _: None) -> Collected:  # fmt: skip
    if source == LOGGED:
        return collect_logged(prompts)
    if is_url(source):
        return collect_endpoint(source, served or "", prompts, config, log)
    return collect_local(source, prompts, config, log)


def collect_logged(prompts: Sequence[Prompt]) -> Collected:
    replies = {p.key: p.logged for p in prompts if p.logged and p.logged.strip()}
    failures = {p.key: "the conversation log holds no reply after this turn" for p in prompts if p.key not in replies}
    return replies, failures


def collect_endpoint(url: str, served: str, prompts: Sequence[Prompt], config: PairwiseConfig,
                     log: Callable[[str], None] = lambda _: None) -> Collected:  # fmt: skip
    endpoint = Endpoint(url, config.timeout_s, config.retries, config.backoff_s)
    params: dict[str, Any] = {"max_tokens": config.max_new_tokens, "temperature": config.temperature}

    def one(prompt: Prompt) -> tuple[str, str | None, str | None]:
        try:
            return prompt.key, endpoint.chat(prompt.messages(config.system_prompt), served, **params), None
        except EndpointError as err:
            if err.fatal:
                raise
            return prompt.key, None, str(err)

    replies: dict[str, str] = {}
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(config.concurrency) as pool:
        for done, (key, text, error) in enumerate(pool.map(one, prompts), 1):
            if text is not None:
                replies[key] = text.strip()
            else:
                failures[key] = error or "no reply"
            if done % 50 == 0:
                log(f"  {done}/{len(prompts)} replies from {url}")
    return replies, failures


def collect_local(model_dir: str, prompts: Sequence[Prompt], config: PairwiseConfig,
                  log: Callable[[str], None] = lambda _: None) -> Collected:  # fmt: skip
    # heavy (torch, transformers): only when a model generates in this process
    import torch

    from almr.train.chat_model import load_chat_model, resolve_device
    from almr.train.config import ModelConfig

    where = resolve_device(config.device)
    model, tokenizer = load_chat_model(ModelConfig(name_or_path=model_dir),
                                       dtype=torch.bfloat16 if where.startswith("cuda") else torch.float32)  # fmt: skip
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"model {model_dir} has no chat template, so it cannot answer a conversation; use an SFT model"
        )
    model.config.use_cache = True
    model = model.to(where).eval()
    tokenizer.padding_side = "left"  # generation continues every row from its own last token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    greedy = config.temperature == 0
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": config.temperature}
    replies: dict[str, str] = {}
    failures: dict[str, str] = {}
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        texts = [tokenizer.apply_chat_template(p.messages(config.system_prompt), add_generation_prompt=True,
                                               tokenize=False) for p in batch]  # fmt: skip
        encoded = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(where)
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 **sampling)  # fmt: skip
        for prompt, row in zip(batch, out[:, encoded["input_ids"].shape[1] :], strict=True):
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            if text:
                replies[prompt.key] = text
            else:
                failures[prompt.key] = "the model generated an empty reply"
        log(f"  {min(start + config.batch_size, len(prompts))}/{len(prompts)} replies from {model_dir}")
    return replies, failures


def scrubber(names: Iterable[str], replacement: str) -> Callable[[str], tuple[str, int]]:
    """`scrub(text) -> (text, replacements)`: every name replaced, case-insensitively, where it stands
    as a word (`Llama` in `Llama-3` but not in `llamas`); longest names first."""
    unique = sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True)
    if not unique:
        return lambda text: (text, 0)
    pattern = re.compile("|".join(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])" for n in unique), re.IGNORECASE)

    def scrub(text: str) -> tuple[str, int]:
        return pattern.subn(replacement, text)

    return scrub


def scrub_names(labels: Iterable[str], sources: Iterable[str], served: Iterable[str | None],
                extra: Iterable[str]) -> list[str]:  # fmt: skip
    """The names to scrub: the extra ones, the models' labels, served ids (and their last path part:
    `meta-llama/Llama-3-70B-Instruct` → `Llama-3-70B-Instruct`) and model directories' names."""
    names = [*extra, *labels]
    for s in served:
        if s:
            names += [s, s.rsplit("/", 1)[-1]]
    for source in sources:
        if source != LOGGED and not is_url(source):
            names.append(Path(source).name)
    return [n for n in names if len(n) >= 3]


def parse_models(specs: Sequence[str], flag: str = "--model") -> dict[str, str]:
    """`NAME=SOURCE` pairs, in order; names unique, at least two."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        name = name.strip()
        if not sep or not name or not source.strip():
            raise AlmrError(f"{flag} {spec!r}: write NAME=SOURCE, SOURCE being `logged`, an http(s)://…/v1 endpoint "
                            "or a model directory")  # fmt: skip
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
            raise AlmrError(f"{flag} {spec!r}: a model name may hold letters, digits, '_', '.', '-'")
        if name in models:
            raise AlmrError(f"{flag} {name}: named twice")
        models[name] = source.strip()
    return models
