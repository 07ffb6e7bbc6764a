"""`almr serve` under load: the demo world's model behind uvicorn on 127.0.0.1, driven by the
official `openai` client (asyncio, streaming, usage counted from `stream_options.include_usage`).

Two measurements, in one run against one server process:

1. batching gain: 16 streams at once against the same 16 requests one at a time, alternated for
   `--rounds` rounds (this machine's timings vary ±25% between identical runs, so the baseline is
   measured in the same run and the gain reported as the median and range of the rounds' ratios);
2. load: `--clients` concurrent streaming clients, each sending requests back to back for
   `--seconds`: errors, p50/p95 time to first token, aggregate completion tokens/s.

    python benchmarks/bench_serve.py                       # builds a small demo world and its model
    python benchmarks/bench_serve.py --model DIR --rounds 5
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

PROMPTS = ["我最近压力很大，睡不好。", "今天和朋友吵架了，心里很难受。", "I feel lonely in a new city.",
           "工作总是做不完，怎么办？"]  # fmt: skip


def build_model(out: Path) -> Path:
    """The demo world's ~1M-parameter Llama (random weights) with the world's chat tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from almr.world.build import build_world
    from almr.world.config import WorldConfig

    world = out / "world"
    config = WorldConfig(seed=7, countries=16, en_docs=200, zh_docs=200, math_docs=50, code_docs=50, bench_items=8,
                         sft_dialogues=20, dpo_pairs=10, esc_dialogues=8, vocab_size=700)  # fmt: skip
    build_world(world, config)
    torch.manual_seed(0)
    model_dir = out / "model"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(world / "model")).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(world / "model").save_pretrained(model_dir)
    return model_dir


def start_server(model: Path, port: int, store: Path, max_tokens: int, max_batch: int) -> subprocess.Popen:
    sets = [f"serve.store=sqlite:///{store}", "serve.model_name=m", "serve.auth.required=false",
            "serve.auth.requests_per_minute=1000000", "serve.persona.system_prompt=''", "serve.persona.temperature=0",
            f"serve.persona.max_tokens={max_tokens}", f"serve.batching.max_batch_size={max_batch}",
            "serve.batching.max_queued=1024"]  # fmt: skip
    command = [sys.executable, "-m", "almr.cli", "serve", str(model), "--port", str(port)]
    for s in sets:
        command += ["--set", s]
    log = store.with_suffix(".log").open("wb")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit(f"the server did not start: {store.with_suffix('.log').read_text()[-800:]}")


async def one_stream(client: AsyncOpenAI, prompt: str) -> tuple[float, int]:
    """(time to first token, completion tokens) of one streamed request."""
    started = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                  stream=True, stream_options={"include_usage": True})  # fmt: skip
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return (first if first is not None else time.perf_counter() - started), tokens


async def sequential(client: AsyncOpenAI, n: int) -> float:
    started, tokens = time.perf_counter(), 0
    for i in range(n):
        tokens += (await one_stream(client, PROMPTS[i % len(PROMPTS)] + str(i)))[1]
    return tokens / (time.perf_counter() - started)


async def concurrent(client: AsyncOpenAI, n: int) -> float:
    started = time.perf_counter()
    done = await asyncio.gather(*(one_stream(client, PROMPTS[i % len(PROMPTS)] + str(i)) for i in range(n)))
    return sum(t for _, t in done) / (time.perf_counter() - started)


async def load(client: AsyncOpenAI, clients: int, seconds: float) -> dict[str, Any]:
    ttfts: list[float] = []
    errors: list[str] = []
    tokens = 0
    stop_at = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal tokens
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            try:
                ttft, count = await one_stream(client, f"{PROMPTS[i % len(PROMPTS)]}{i}-{n}")
            except Exception as err:  # counted and reported: the benchmark's claim is zero of them
                errors.append(f"{type(err).__name__}: {err}")
                continue
            ttfts.append(ttft)
            tokens += count

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(clients))), seconds + 300)
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(ttfts, n=20) if len(ttfts) >= 2 else [float("nan")] * 19
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(ttfts), "errors": len(errors),
            "first_errors": errors[:3], "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
            "ttft_p95_s": round(q[18], 3), "tokens_per_s": round(tokens / elapsed, 1)}  # fmt: skip


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600,
                         http_client=httpx.AsyncClient(limits=limits, timeout=600))  # fmt: skip
    await concurrent(client, 4)  # warm-up
    rounds = []
    for r in range(args.rounds):
        one = await sequential(client, args.streams)
        many = await concurrent(client, args.streams)
        rounds.append({"one_at_a_time_tok_s": round(one, 1), "batched_tok_s": round(many, 1),
                       "gain": round(many / one, 2)})  # fmt: skip
        print(f"round {r + 1}/{args.rounds}: one at a time {one:.0f} tok/s, {args.streams} streams {many:.0f} tok/s, "
              f"gain {many / one:.1f}x", flush=True)  # fmt: skip
    print(f"load: {args.clients} clients for {args.seconds:g} s ...", flush=True)
    loaded = await load(client, args.clients, args.seconds)
    await client.close()
    gains = [r["gain"] for r in rounds]
    return {"streams": args.streams, "max_tokens": args.max_tokens, "rounds": rounds, "load": loaded,
            "gain_median": statistics.median(gains), "gain_range": [min(gains), max(gains)]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A chat model directory (default: build the demo world's).")
    parser.add_argument("--streams", type=int, default=16, help="Streams of the batching comparison.")
    parser.add_argument("--clients", type=int, default=64, help="Concurrent clients of the load run.")
    parser.add_argument("--seconds", type=float, default=30.0, help="Length of the load run.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of the comparison.")
    parser.add_argument("--max-tokens", type=int, default=32, help="Tokens per reply (the persona's max_tokens).")
    parser.add_argument("--max-batch", type=int, default=64, help="serve.batching.max_batch_size.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, help="Write the result JSON here too.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp))
        server = start_server(model, args.port, Path(tmp) / "store.db", args.max_tokens, args.max_batch)
        try:
            result = asyncio.run(measure(f"http://127.0.0.1:{args.port}/v1", args))
        except Exception:
            print((Path(tmp) / "store.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(30)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
