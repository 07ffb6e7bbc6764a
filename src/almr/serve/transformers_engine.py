"""The in-process engine: a Hugging Face causal LM, with concurrent requests batched in front of
`generate` and each sequence of a batch streamed to its own client.

Why a queue in front of `generate` and not transformers' continuous batching: measured on this
machine's CPU with the world's 1M-parameter model (16 prompts × 32 new tokens), one padded
`generate` over all 16 prompts took 0.11 s, one `generate` per prompt 1.3 s, and transformers
5.24's continuous batching (`generate_batch`, paged attention) 6.3–8.7 s (docs/serving.md).

How a batch runs: one thread owns the model. It takes the oldest waiting request, lets others
with the same sampling settings join for up to `batching.wait_ms` (requests that waited while
the previous batch ran join at once), left-pads their prompts and calls `generate` once with a
streamer and a stopping criterion of its own. `generate` hands the streamer each step's new
token of every sequence; the streamer appends it to that request's text (`TextDelta`: no
half characters, no stop-string prefixes) and puts the safe text on the request's asyncio
queue. The stopping criterion ends a sequence when its own `max_tokens`, a stop string, an
end-of-turn token or its client's disconnection says so, so one request never waits for, nor
is lengthened by, its neighbours' settings. A request with a seed and sampling runs in a batch
of its own, so the seed gives the same reply every time.

Prompt scoring (`/v1/completions` with `logprobs`/`echo`, what lm-eval's local-completions sends)
runs on the same thread: one right-padded forward pass over all prompts of a request.
"""

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from almr.errors import ConfigError
from almr.serve.config import BatchingConfig
from almr.serve.engine import (
    REPLACEMENT,
    Delta,
    EngineError,
    Messages,
    Sampling,
    Scored,
    TextDelta,
    context_overflow,
    server_full,
    top_dict,
)
from almr.train.chat_model import end_of_turn_token, load_chat_model, resolve_device
from almr.train.config import ModelConfig


@dataclass(eq=False)
class _Job:
    prompt_ids: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    text: TextDelta
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.monotonic)
    done: bool = False
    generated: int = 0

    def key(self) -> tuple:
        s = self.sampling
        if s.temperature == 0:
            return ("greedy",)
        return ("sample", s.temperature, s.top_p, s.seed)

    def send(self, delta: Delta) -> None:
        with contextlib.suppress(RuntimeError):  # the client's event loop is gone: nobody is listening
            self.loop.call_soon_threadsafe(self.out.put_nowait, delta)


class TransformersEngine:
    """A Hugging Face model directory served from this process (see the module docstring)."""

    kind = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        model_name: str,
        batching: BatchingConfig | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cpu_threads: int | None = None,
    ) -> None:
        self.model_dir = str(model_dir)
        self.model_name = model_name
        self.batching = batching or BatchingConfig()
        self.device = device
        self.dtype = dtype
        self.cpu_threads = cpu_threads
        self._jobs: list[_Job] = []
        self._calls: list[tuple[Callable[[], Any], concurrent.futures.Future]] = []
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # generate calls made, and the sequences in them: /metrics reads these
        self.batched_sequences = 0

    # ------------------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Read the model and tokenizer; refuse what cannot be served (cheap checks in load_chat_model)."""
        device = resolve_device(self.device)
        dtype = (
            torch.bfloat16
            if (self.dtype == "bfloat16" or (self.dtype == "auto" and device == "cuda"))
            else torch.float32
        )
        model, tokenizer = load_chat_model(ModelConfig(name_or_path=self.model_dir), dtype=dtype)
        model.config.use_cache = True  # load_chat_model prepares for training; generation wants the KV cache
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.torch_device = device
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        eos = model.generation_config.eos_token_id
        stop_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        stop_ids.add(tokenizer.eos_token_id)
        if self.has_chat_template:
            with contextlib.suppress(ConfigError):  # a template with nothing after a reply: EOS alone ends it
                stop_ids.add(tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer)))
        self.stop_ids = {int(i) for i in stop_ids if i is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)

    async def start(self) -> None:
        if not hasattr(self, "model"):
            await asyncio.to_thread(self.load)
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="almr-engine", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        with self._wake:
            self._closing = True
            for job in self._jobs:
                job.send(Delta(finish_reason="abort"))
            self._jobs.clear()
            self._wake.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def queued(self) -> int:
        return len(self._jobs)

    # ------------------------------------------------------------------------------ the interface

    def chat_prompt(self, messages: Messages) -> list[int]:
        if not self.has_chat_template:
            raise EngineError(
                400, f"model {self.model_name} has no chat template; use /v1/completions", param="messages"
            )
        # the template writes <|begin_of_text|> itself: no second BOS from the tokenizer
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])  # BOS added, as vLLM does for a text prompt
        vocab = self.model.get_input_embeddings().weight.shape[0]
        if any(not 0 <= t < vocab for t in prompt):
            raise EngineError(400, f"prompt token ids must lie in [0, {vocab})", param="prompt")
        return list(prompt)

    def stream_chat(self, messages: Messages, sampling: Sampling) -> "_JobStream":
        return _JobStream(self._submit(self.chat_prompt(messages), sampling))

    def stream_text(self, prompt: str | list[int], sampling: Sampling) -> "_JobStream":
        return _JobStream(self._submit(self.text_prompt(prompt), sampling))

    async def score(self, prompts: Sequence[str | list[int]], sampling: Sampling, top: int, echo: bool) -> list[Scored]:
        """Generate each completion (batched), then score prompt + completion in one forward pass."""
        ids = [self.text_prompt(p) for p in prompts]
        jobs = [self._submit(i, sampling) for i in ids]
        try:
            finals = await asyncio.gather(*(self._last(job) for job in jobs))
        finally:
            for job in jobs:
                job.cancelled.set()
        full = [i + job.text.ids for i, job in zip(ids, jobs, strict=True)]  # an end-of-turn token is scored too
        logprobs = await self._on_worker(lambda: self._logprobs(full, top))
        out = []
        for prompt, prompt_ids, job, seq, final, (lps, tops) in zip(
            prompts, ids, jobs, full, finals, logprobs, strict=True
        ):
            start = 0 if echo else len(prompt_ids)
            tokens = [self.tokenizer.decode([t]) for t in seq]
            offsets, at = [], 0
            for piece in tokens:
                offsets.append(at)
                at += len(piece)
            text = job.text.text.rstrip(REPLACEMENT)  # as streamed: never half a character
            base = offsets[start] if start < len(offsets) else at
            shown = prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
            out.append(
                Scored(
                    text=(shown if echo else "") + text,
                    finish_reason=final.finish_reason or "length",
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=final.completion_tokens,
                    tokens=tokens[start:],
                    token_logprobs=lps[start:],
                    top_logprobs=tops[start:],
                    text_offset=[o - base for o in offsets[start:]],
                )
            )
        return out

    # ------------------------------------------------------------------------------ the async side

    def _submit(self, prompt_ids: list[int], sampling: Sampling) -> _Job:
        if self.context_length and len(prompt_ids) + sampling.max_tokens > self.context_length:
            raise context_overflow(len(prompt_ids), sampling.max_tokens, self.context_length)
        if not prompt_ids:
            raise EngineError(400, "the prompt is empty", param="prompt")
        decode = self._decode
        job = _Job(prompt_ids, sampling, asyncio.get_running_loop(), TextDelta(decode, sampling.stop))
        with self._wake:
            if self._closing:
                raise EngineError(503, "the server is shutting down")
            if len(self._jobs) >= self.batching.max_queued:
                raise server_full(len(self._jobs))
            self._jobs.append(job)
            self._wake.notify_all()
        return job

    async def _last(self, job: _Job) -> Delta:
        while True:
            delta = await job.out.get()
            if delta.finish_reason:
                return delta

    async def _on_worker(self, fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            self._calls.append((fn, future))
            self._wake.notify_all()
        return await asyncio.wrap_future(future)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------------------ the model's thread

    def _work(self) -> None:
        if self.torch_device == "cpu" and self.cpu_threads:
            # here, not at load: OpenMP's thread count is per thread, and this thread runs the model
            torch.set_num_threads(self.cpu_threads)
        while True:
            with self._wake:
                while not self._jobs and not self._calls and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                calls, self._calls = self._calls, []
                batch = [] if calls else self._take_batch()
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except Exception as err:  # handed to the awaiting request, which reports it
                    future.set_exception(err)
            if batch:
                self._generate(batch)

    def _take_batch(self) -> list[_Job]:
        """The oldest job and up to max_batch_size - 1 compatible ones (called holding the lock)."""
        first = self._jobs[0]
        deadline = first.queued_at + self.batching.wait_ms / 1000
        while True:
            self._jobs = [j for j in self._jobs if not j.cancelled.is_set()]
            if not self._jobs:
                return []
            first = self._jobs[0]
            key = first.key()
            alone = first.sampling.temperature > 0 and first.sampling.seed is not None
            batch = [first] if alone else [j for j in self._jobs if j.key() == key][: self.batching.max_batch_size]
            left = deadline - time.monotonic()
            if alone or len(batch) >= self.batching.max_batch_size or left <= 0 or self._closing or self._calls:
                break
            self._wake.wait(left)
        taken = set(map(id, batch))
        self._jobs = [j for j in self._jobs if id(j) not in taken]
        return batch

    @torch.inference_mode()
    def _generate(self, jobs: list[_Job]) -> None:
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):  # left padding: every sequence's next token is in the last column
            ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
        s = jobs[0].sampling
        config = GenerationConfig(
            max_new_tokens=max(j.sampling.max_tokens for j in jobs),
            do_sample=s.temperature > 0,
            temperature=s.temperature if s.temperature > 0 else None,
            top_p=s.top_p if s.temperature > 0 else None,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
            top_k=None,
        )
        if s.temperature > 0 and s.seed is not None:
            torch.manual_seed(s.seed)
        self.batches += 1
        self.batched_sequences += len(jobs)
        streamer = _BatchStreamer(jobs, self.stop_ids)
        try:
            self.model.generate(
                input_ids=ids.to(self.torch_device),
                attention_mask=mask.to(self.torch_device),
                generation_config=config,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_Done(jobs)]),
            )
        except Exception as err:  # one failed batch must not stop the server: its requests get a 500
            for job in jobs:
                if not job.done:
                    job.done = True
                    job.send(Delta(text=f"[engine error: {type(err).__name__}]", finish_reason="error"))
            return
        for job in jobs:
            if not job.done:  # generate stopped at max_new_tokens before the streamer saw the limit
                streamer.finish(job, "length")

    @torch.inference_mode()
    def _logprobs(self, seqs: list[list[int]], top: int) -> list[tuple[list[float | None], list[dict | None]]]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):  # right padding: positions keep their numbers, as in one-by-one scoring
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = self.model(input_ids=ids.to(self.torch_device), attention_mask=mask.to(self.torch_device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        out = []
        for row, seq in enumerate(seqs):
            n = len(seq)
            target = torch.tensor(seq[1:])
            chosen = logp[row, : n - 1].gather(1, target[:, None])[:, 0].tolist()
            best_v, best_i = logp[row, : n - 1].topk(max(1, top), dim=-1)
            tops: list[dict | None] = [None]
            for values, indices in zip(best_v.tolist(), best_i.tolist(), strict=True):
                tops.append(top_dict([(self.tokenizer.decode([i]), v) for i, v in zip(indices, values, strict=True)]))
            out.append(([None, *chosen], tops))
        return out


class _JobStream:
    """The deltas of one job; a consumer that is cancelled (its client vanished) or closes it early
    frees the job's slot in the batch at the next step."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.finished = False

    def __aiter__(self) -> "_JobStream":
        return self

    async def __anext__(self) -> Delta:
        if self.finished:
            raise StopAsyncIteration
        try:
            delta = await self.job.out.get()
        except BaseException:
            self.job.cancelled.set()
            raise
        # under load, several steps' text may be waiting: one delta (one SSE chunk) carries them all
        while not delta.finish_reason and not self.job.out.empty():
            more = self.job.out.get_nowait()
            more.text = delta.text + more.text
            delta = more
        self.finished = bool(delta.finish_reason)
        return delta

    async def aclose(self) -> None:
        if not self.finished:
            self.job.cancelled.set()


class _BatchStreamer(BaseStreamer):
    """Receives each step's tokens of the whole batch from `generate` and routes them to their jobs."""

    def __init__(self, jobs: list[_Job], stop_ids: set[int]) -> None:
        self.jobs = jobs
        self.stop_ids = stop_ids
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first call hands over the prompts
            self.prompt_seen = True
            return
        for job, token in zip(self.jobs, value.view(-1).tolist(), strict=True):
            if job.done:
                continue
            if job.cancelled.is_set():
                self.finish(job, "abort")
                continue
            job.generated += 1
            if token in self.stop_ids:
                job.text.ids.append(token)  # counted, never shown
                self.finish(job, "stop")
                continue
            piece = job.text.add(token)
            if piece:
                job.send(Delta(text=piece))
            if job.text.stopped:
                self.finish(job, "stop")
            elif job.generated >= job.sampling.max_tokens:
                self.finish(job, "length")

    def finish(self, job: _Job, reason: str) -> None:
        job.done = True
        rest = job.text.finish() if reason != "abort" else ""
        job.send(Delta(rest, reason, len(job.prompt_ids), job.generated))

    def end(self) -> None:
        pass


class _Done(StoppingCriteria):
    """Per-sequence stop: the streamer marked the job done, or its client is gone."""

    def __init__(self, jobs: list[_Job]) -> None:
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        flags = [job.done or job.cancelled.is_set() for job in self.jobs]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
