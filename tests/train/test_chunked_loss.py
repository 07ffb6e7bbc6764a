"""The chunked linear + cross-entropy (almr.train.chunked_ce) against the plain full-logits path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from almr.train.chunked_ce import linear_cross_entropy
from almr.train.loss import IGNORE_INDEX, chunked_loss_unsupported, training_loss
from train_toys import ToyLoader, make_model_dir, toy_config, train_toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB, SEQ = 256, 32


def _tiny_llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)  # fmt: skip
    return LlamaForCausalLM(config).float()


def _grads(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, chunk: int) -> tuple:
    model.zero_grad(set_to_none=True)
    loss, _ = training_loss(model, input_ids, labels, chunk_tokens=chunk)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_loss_and_every_gradient_equal_the_plain_path(tied: bool, chunk: int) -> None:
    model = _tiny_llama(tied)
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 97, (3, 21), generator=gen)
    labels = torch.randint(0, 97, (3, 21), generator=gen)
    labels[0, :5] = IGNORE_INDEX  # a masked prompt
    labels[2, -3:] = IGNORE_INDEX  # padding
    plain_loss, plain = _grads(model, input_ids, labels, 0)
    loss, chunked = _grads(model, input_ids, labels, chunk)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=0)
    assert plain.keys() == chunked.keys()
    for name in plain:  # only the order of float sums differs: ~1e-7 of each gradient's scale
        scale = plain[name].abs().max().item()
        torch.testing.assert_close(chunked[name], plain[name], rtol=1e-5, atol=1e-6 * scale, msg=name)


def test_ignored_positions_count_nothing() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(13, 8, requires_grad=True)
    labels = torch.randint(0, 13, (10,))
    labels[3:6] = IGNORE_INDEX
    loss = linear_cross_entropy(hidden, weight, labels, chunk=4)
    expected = F.cross_entropy(hidden[labels != IGNORE_INDEX] @ weight.T, labels[labels != IGNORE_INDEX],
                               reduction="sum")  # fmt: skip
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(hidden.grad[3:6] == 0) and hidden.grad[:3].abs().sum() > 0
    everything_ignored = linear_cross_entropy(hidden, weight, torch.full((10,), IGNORE_INDEX), chunk=4)
    assert everything_ignored.item() == 0.0


def test_hidden_states_of_any_layout_get_their_gradient() -> None:
    torch.manual_seed(0)
    base = torch.randn(8, 11, requires_grad=True)
    hidden = base.T  # [11, 8], not contiguous
    weight = torch.randn(13, 8, requires_grad=True)
    labels = torch.randint(0, 13, (11,))
    linear_cross_entropy(hidden, weight, labels, chunk=4).backward()
    chunked = base.grad.clone(), weight.grad.clone()
    base.grad = weight.grad = None
    F.cross_entropy(base.T @ weight.T, labels, reduction="sum").backward()
    torch.testing.assert_close(chunked[0], base.grad)
    torch.testing.assert_close(chunked[1], weight.grad)


def test_no_gradients_are_computed_without_grad_mode() -> None:
    hidden, weight = torch.randn(6, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 3, 4, 0]), chunk=2)
    assert not loss.requires_grad
    frozen = linear_cross_entropy(hidden.detach(), weight, torch.tensor([0, 1, 2, 3, 4, 0]), chunk=2)
    frozen.backward()  # only the output matrix learns (cpt.train_new_rows_from freezes the decoder)
    assert weight.grad is not None


def test_bf16_autocast_matches_the_plain_path_to_bf16_precision() -> None:
    model = _tiny_llama(tied=False)
    input_ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(2))
    labels = input_ids.roll(-1, 1)
    with torch.no_grad():
        plain, _ = training_loss(model, input_ids, labels, torch.autocast("cpu", dtype=torch.bfloat16))
        chunked, _ = training_loss(model, input_ids, labels, torch.autocast("cpu", dtype=torch.bfloat16), 8)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, plain, rtol=1e-2, atol=0)


def test_models_with_transformed_logits_are_refused() -> None:
    assert chunked_loss_unsupported(_tiny_llama(tied=False)) is None
    from transformers import Gemma2Config, Gemma2ForCausalLM

    gemma = Gemma2ForCausalLM(Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=8))  # fmt: skip
    assert "final_logit_softcapping=30.0" in chunked_loss_unsupported(gemma)
    with_bias = _tiny_llama(tied=False)
    with_bias.lm_head = torch.nn.Linear(32, 97, bias=True)
    assert "bias" in chunked_loss_unsupported(with_bias)


def test_a_training_run_matches_the_plain_run(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model", vocab=VOCAB)
    runs = {}
    for chunk in (0, 48):
        config = toy_config(tmp_path / f"c{chunk}", model_dir, steps=6, loss_chunk_tokens=chunk)
        runs[chunk] = train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    assert runs[48].losses == pytest.approx(runs[0].losses, rel=1e-5)
    start = json.loads((tmp_path / "c48/run/metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start"


def test_an_unsupported_model_falls_back_with_a_warning(tmp_path: Path) -> None:
    from transformers import AutoConfig

    model_dir = make_model_dir(tmp_path / "model", vocab=VOCAB)
    config = AutoConfig.from_pretrained(model_dir)
    config.logits_scaling = 4.0  # as Granite divides its logits
    config.save_pretrained(model_dir)
    with pytest.warns(UserWarning, match="cpt.loss_chunk_tokens=1024 is not applied.*logits_scaling=4.0"):
        train_toy(toy_config(tmp_path, model_dir, steps=2), loader=ToyLoader(4, SEQ, VOCAB))


_PEAK = """
import sys, torch
import torch.nn.functional as F
from almr.train.chunked_ce import linear_cross_entropy
chunk = int(sys.argv[1])
gen = torch.Generator().manual_seed(0)
hidden = torch.randn(2048, 64, generator=gen).requires_grad_()
weight = (torch.randn(8192, 64, generator=gen) * 0.02).requires_grad_()
labels = torch.randint(0, 8192, (2048,), generator=gen)
def kib(field):  # VmRSS: resident now; VmHWM: its peak since the reset below
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
small = (hidden[:8].detach().requires_grad_(), weight[:16].detach().requires_grad_(), labels[:8] % 16)
linear_cross_entropy(*small, 4).backward()  # page in the code both paths run before measuring
F.cross_entropy(small[0] @ small[1].T, small[2], reduction="sum").backward()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to what is resident now (Linux)
before = kib("VmRSS")
if chunk:
    loss = linear_cross_entropy(hidden, weight, labels, chunk)
else:
    loss = F.cross_entropy(hidden @ weight.T, labels, reduction="sum")
loss.backward()
print(kib("VmHWM") - before)
"""


def test_the_chunked_loss_never_holds_the_full_logits() -> None:
    """Peak memory of one loss (2048 tokens × 8192 vocabulary: 64 MiB of fp32 logits), each in a
    fresh process: the plain path holds several logits-sized tensors, the chunked one a 256-row
    slice. The measured numbers at a realistic size are in docs/benchmarks.md."""
    # a fixed mmap threshold: glibc otherwise raises it as tensors are freed, and the heap keeps
    # freed slices resident, which measures the allocator rather than the loss
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    extra_kib = {}
    for chunk in (0, 256):
        done = subprocess.run([sys.executable, "-c", _PEAK, str(chunk)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        extra_kib[chunk] = int(done.stdout.split()[-1])
    assert extra_kib[0] > 128 * 1024  # at least two 64 MiB logits-sized tensors
    assert extra_kib[256] < 48 * 1024  # under one: a few 8 MiB slices, whatever the allocator keeps
