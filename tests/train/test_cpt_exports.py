"""What the CPT trainer's Hugging Face export holds (ties once, dtype, shards with an index, the
config as it came, readable files) and that it loads in plain transformers with identical logits;
the router loss of mixture-of-experts models; bf16 on a CPU."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, Qwen3MoeConfig

from almr.train import checkpoint as ckpt
from almr.train.loss import training_loss
from almr.train.parallel import Distributed
from almr.train.step import train_step
from train_toys import ToyLoader, make_model_dir, toy_config, train_toy

os.environ["HF_HUB_OFFLINE"] = "1"
VOCAB, SEQ = 256, 32
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tied_model_dir(path: Path, dtype: str = "float32") -> Path:
    """The toy Llama with a tied output head, its config.json naming `dtype` and use_cache true."""
    make_model_dir(path, vocab=VOCAB)
    config = json.loads((path / "config.json").read_text())
    config.update(tie_word_embeddings=True, dtype=dtype, use_cache=True)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def weight_names(folder: Path) -> dict[str, torch.dtype]:
    names = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            names.update({key: f.get_tensor(key).dtype for key in f.keys()})  # noqa: SIM118
    return names


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_export_saves_ties_once_in_shards_with_the_config_as_it_came(tmp_path: Path, umask_022: None) -> None:
    source = tied_model_dir(tmp_path / "tied")
    config = toy_config(tmp_path, source, steps=2, **{"export.max_shard_size": "60KB"})
    result = train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    hf = result.checkpoint / "hf"
    files = {p.name for p in hf.iterdir()}
    shards = {p for p in files if p.startswith("model-")}
    count = len(shards)
    assert count >= 2 and shards == {f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)}
    assert files - shards - TOKENIZER_FILES == {"config.json", "generation_config.json", "model.safetensors.index.json"}
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    names = weight_names(hf)
    assert set(index["weight_map"]) == set(names) and "lm_head.weight" not in names  # the tie is saved once
    assert set(names.values()) == {torch.float32}
    written = json.loads((hf / "config.json").read_text())
    original = json.loads((source / "config.json").read_text())
    # use_cache, the tie and every other field as they came (dtype float32), plus what serving engines read
    assert written == {**original, "architectures": ["LlamaForCausalLM"]}
    assert {oct(p.stat().st_mode & 0o777) for p in hf.iterdir()} == {"0o644"}  # not safetensors' 0600


def test_the_export_loads_in_transformers_with_identical_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tied_model_dir(tmp_path / "tied")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.float32)
    with torch.no_grad():  # trained-looking weights, the tie kept
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    x = torch.randint(0, VOCAB, (2, 24))
    for dtype in (torch.float32, torch.bfloat16):
        folder = tmp_path / str(dtype)
        ckpt.export_hf(model, None, folder, True, dtype=dtype, max_shard_size="40KB")
        loaded = AutoModelForCausalLM.from_pretrained(folder / "hf", dtype="auto").eval()
        assert loaded.dtype == dtype and loaded.lm_head.weight is loaded.model.embed_tokens.weight
        # the trained weights rounded to `dtype`, in a model built in `dtype` (buffers as a load makes them)
        reference = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
        reference.load_state_dict({key: value.to(dtype) for key, value in model.state_dict().items()})
        reference.eval()
        with torch.no_grad():
            assert torch.equal(loaded(x).logits, reference(x).logits)


def test_auto_export_dtype_follows_the_model_directory_and_bf16_on_a_cpu_trains_fp32(tmp_path: Path) -> None:
    source = tied_model_dir(tmp_path / "bf16", dtype="bfloat16")
    config = toy_config(tmp_path, source, steps=2)
    config.model.dtype = "bfloat16"
    with pytest.warns(UserWarning, match="model.dtype=bfloat16 is not applied on a CPU: this run trains in float32"):
        result = train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    start = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert start["dtype"] == "float32" and start["peak_flops_source"] == "measured float32 matmul"
    hf = result.checkpoint / "hf"
    assert set(weight_names(hf).values()) == {torch.bfloat16}  # shipped bf16, comes back bf16
    assert json.loads((hf / "config.json").read_text())["dtype"] == "bfloat16"
    again = toy_config(tmp_path / "fp32", source, steps=2, **{"export.dtype": "float32"})
    result = train_toy(again, loader=ToyLoader(4, SEQ, VOCAB))
    assert set(weight_names(result.checkpoint / "hf").values()) == {torch.float32}


def tiny_moe(router_logits: bool = True) -> torch.nn.Module:
    config = Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_experts=4,
        num_experts_per_tok=2, decoder_sparse_step=1, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, output_router_logits=router_logits, router_aux_loss_coef=0.02,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def test_the_router_loss_of_a_moe_model_is_trained_and_logged() -> None:
    model = tiny_moe()
    tokens = torch.randint(0, VOCAB, (2, SEQ + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    ce, aux = training_loss(model, x, y)
    assert aux is not None and torch.equal(aux, 0.02 * model(input_ids=x, use_cache=False).aux_loss.float())
    no_router = tiny_moe(router_logits=False)
    assert training_loss(no_router, x, y)[1] is None  # the model returns none: nothing is added

    # the step differentiates mean CE + the weighted router loss: the router's gradient says so
    expected = (ce / y.numel() + aux).backward
    expected()
    want = model.model.layers[0].mlp.gate.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    dist_env = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), mesh=None)
    grads = {}
    model.model.layers[0].mlp.gate.weight.register_post_accumulate_grad_hook(lambda p: grads.update(g=p.grad.clone()))
    result = train_step(model, optimizer, scheduler, [{"input_ids": x, "labels": y}], dist_env, None, 0.0)
    torch.testing.assert_close(grads["g"], want, rtol=1e-5, atol=1e-8)
    assert result.aux_loss == pytest.approx(aux.item(), rel=1e-6)
    assert result.loss == pytest.approx(ce.item() / y.numel(), rel=1e-6)
