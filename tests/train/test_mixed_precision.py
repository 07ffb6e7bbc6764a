"""bf16 under FSDP2 is FSDP's mixed-precision policy, not autocast: after the forward of two gloo
processes no decoder layer's full bf16 weight is still held, where autocast over fp32 shards holds
a bf16 copy of every layer's weights until backward (a whole bf16 model on every GPU)."""

import json
from pathlib import Path

import pytest
import torch

from almr.train.parallel import Distributed, autocast_for
from torchrun_launch import launch

_WORKER = """
import contextlib, json, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from almr.train.parallel import close_distributed, decoder_layers, init_distributed, parallelize

env = init_distributed("cpu")
config = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32)


def held_after_forward(dtype, precision):
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    weights = [p for layer in decoder_layers(model) for p in layer.parameters() if p.ndim == 2]
    shapes, layer_bytes = {tuple(p.shape) for p in weights}, sum(p.numel() * 2 for p in weights)
    model = parallelize(model, env, gradient_checkpointing=False, compile=False, dtype=dtype)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    ids = torch.randint(0, 64, (1, 16))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), precision:
        loss = model(input_ids=ids, use_cache=False).logits.float().logsumexp(-1).sum()
    # what autograd holds for backward: full-shape bf16 layer weights that still have storage
    full = [t for t in saved if t.dtype == torch.bfloat16 and tuple(t.shape) in shapes]
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in full}
    loss.backward()
    grads = {str(p.grad.dtype) for p in model.parameters()}
    return {"saved_full": len(full), "held_bytes": sum(held.values()), "layer_bytes": layer_bytes,
            "grad_dtypes": sorted(grads), "param_dtypes": sorted({str(p.dtype) for p in model.parameters()})}


policy = held_after_forward("bfloat16", contextlib.nullcontext())
autocast = held_after_forward("float32", torch.autocast("cpu", dtype=torch.bfloat16))
if env.rank == 0:
    json.dump({"policy": policy, "autocast": autocast}, open(sys.argv[1], "w"))
close_distributed()
"""


@pytest.mark.slow  # one torchrun launch of 2 processes: ~20 s
def test_fsdp_bf16_policy_holds_no_full_layer_weights_after_forward(tmp_path: Path) -> None:
    script, out = tmp_path / "worker.py", tmp_path / "held.json"
    script.write_text(_WORKER)
    launch(str(script), str(out))
    result = json.loads(out.read_text())
    policy, autocast = result["policy"], result["autocast"]
    # 4 layers × 7 projections: every one is saved for backward in bf16 in both runs ...
    assert policy["saved_full"] >= 28 and autocast["saved_full"] >= 28
    # ... but under the policy they are FSDP's unsharded parameters, freed after each layer's forward
    assert policy["held_bytes"] == 0
    # autocast's casts of the gathered fp32 weights stay alive: every layer's full bf16 weights
    assert autocast["held_bytes"] == policy["layer_bytes"]
    # fp32 master shards and fp32 gradients (reduced in fp32) under the policy
    assert policy["param_dtypes"] == ["torch.float32"] and policy["grad_dtypes"] == ["torch.float32"]


def test_autocast_only_where_nothing_is_sharded() -> None:
    one = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), mesh=None)
    assert isinstance(autocast_for("bfloat16", one), torch.autocast)
    assert not isinstance(autocast_for("float32", one), torch.autocast)
    sharded = Distributed(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), mesh=object())  # type: ignore[arg-type]
    assert not isinstance(autocast_for("bfloat16", sharded), torch.autocast)
