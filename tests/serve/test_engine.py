"""The transformers engine: batched sequences equal one-at-a-time ones, text is released only in
whole characters and before stop strings, a vanished client stops its sequence."""

import asyncio

import pytest

from almr.serve.engine import Sampling, TextDelta, collect

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_text_is_released_in_whole_characters(engine) -> None:
    tokenizer = engine.tokenizer
    ids = tokenizer("你好，世界。我很高兴。", add_special_tokens=False)["input_ids"]
    text = TextDelta(lambda i: tokenizer.decode(i, skip_special_tokens=True))
    pieces = [text.add(t) for t in ids] + [text.finish()]
    assert len(ids) > len("你好，世界。我很高兴。")  # byte-level: characters span several tokens
    assert "".join(pieces) == "你好，世界。我很高兴。"
    assert not any("\ufffd" in p for p in pieces)


def test_stop_strings_are_never_shown() -> None:
    chars = list("abc<END>def")
    text = TextDelta(lambda ids: "".join(chars[i] for i in ids), stop=["<END>"])
    pieces = []
    for i in range(len(chars)):
        pieces.append(text.add(i))
        if text.stopped:
            break
    pieces.append(text.finish())
    assert "".join(pieces) == "abc" and text.stopped and not any("<" in p for p in pieces)


def test_a_batch_gives_each_request_its_own_reply(engine) -> None:
    prompts = [[{"role": "user", "content": f"第{i}个问题：你好吗？" + "好" * i}] for i in range(8)]
    lengths = [5, 9, 3, 12, 7, 1, 10, 4]

    async def main() -> tuple[list, list, int]:
        await engine.start()
        try:
            alone = [
                await collect(engine.stream_chat(p, Sampling(max_tokens=n)))
                for p, n in zip(prompts, lengths, strict=True)
            ]
            before = engine.batches
            together = await asyncio.gather(*(collect(engine.stream_chat(p, Sampling(max_tokens=n)))
                                              for p, n in zip(prompts, lengths, strict=True)))  # fmt: skip
            return alone, together, engine.batches - before
        finally:
            await engine.close()

    alone, together, batches = asyncio.run(main())
    assert batches < len(prompts)
    for a, b, n in zip(alone, together, lengths, strict=True):
        assert b.text == a.text and b.completion_tokens == a.completion_tokens <= n


def test_a_closed_stream_stops_its_sequence(engine) -> None:
    async def main() -> tuple[str | None, int]:
        await engine.start()
        try:
            long = engine.stream_chat([{"role": "user", "content": "讲个故事"}], Sampling(max_tokens=200))
            short = engine.stream_chat([{"role": "user", "content": "hi"}], Sampling(max_tokens=60))
            async for _ in long:
                break
            await long.aclose()
            final = await collect(short)
            return final.finish_reason, long.job.generated
        finally:
            await engine.close()

    reason, generated = asyncio.run(main())
    assert reason in ("stop", "length") and generated < 60
