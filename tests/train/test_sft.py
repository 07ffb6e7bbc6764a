"""SFT's parts (almr.train.chat_model) and the trainer (almr.train.sft) on the small world's tiny
Llama: the template and loss-mask checks, untrained chat tokens, fitting conversations to the
sequence length, packing isolation, a run's outputs, a falling loss, and resume."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from almr.errors import ConfigError
from almr.train.chat_model import (
    chat_model_path,
    chat_special_tokens,
    check_chat_template,
    check_loss_mask,
    device_settings,
    end_of_turn_token,
    init_untrained_special_tokens,
)
from almr.train.config import ModelConfig, SftConfig
from almr.world.tokenizer import CHAT_TEMPLATE
from worlds import save_world_model

CONVERSATION = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How are you?"},
    {"role": "user", "content": "Fine"},
    {"role": "assistant", "content": "Good to hear."},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's tiny Llama with seeded random weights, saved with its tokenizer."""
    return save_world_model(small_world, tmp_path_factory.mktemp("chat-model"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def conversations(small_world: Path) -> list[dict[str, Any]]:
    lines = (small_world / "sft" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [{"messages": json.loads(line)["messages"]} for line in lines]


def with_template(tokenizer: Any, template: str) -> Any:
    import copy

    changed = copy.deepcopy(tokenizer)
    changed.chat_template = template
    return changed


def sft_config(run_dir: Path, **overrides: Any) -> SftConfig:
    settings: dict[str, Any] = {
        "run_dir": str(run_dir), "device": "cpu", "steps": 4, "log_every_steps": 1,
        "batch": {"micro_batch_size": 4, "global_batch_size": 8, "seq_len": 256},
        "optimizer": {"lr": 1e-3}, "schedule": {"kind": "linear"},
    }  # fmt: skip
    settings.update(overrides)
    return SftConfig.model_validate(settings)


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------ template and mask


def test_the_worlds_template_passes_and_names_its_end_of_turn_token(tokenizer: Any, conversations: list) -> None:
    check_chat_template(tokenizer, "the world")
    report = check_loss_mask(tokenizer, conversations, n=4)
    assert report.conversations == 5 and report.trained_tokens > 0
    assert report.end_of_turn == "<|eot_id|>" == end_of_turn_token(tokenizer)
    assert chat_special_tokens(tokenizer) == ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                              "<|eot_id|>"]  # fmt: skip


def test_masked_tokens_are_exactly_the_replies_and_their_end_of_turn_tokens(tokenizer: Any) -> None:
    # the expected layout built piece by piece, independently of the template engine
    ids: list[int] = [tokenizer.bos_token_id]
    expected: list[int] = [0]
    for message in CONVERSATION:
        header = f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n"
        trained = int(message["role"] == "assistant")
        for piece, bit in ((header, 0), (message["content"], trained), ("<|eot_id|>", trained)):
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            ids += piece_ids
            expected += [bit] * len(piece_ids)
    out = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)  # fmt: skip
    assert list(out["input_ids"]) == ids
    assert list(out["assistant_masks"]) == expected
    check_loss_mask(tokenizer, [{"messages": CONVERSATION}])


def test_a_tokenizer_without_template_or_markers_is_refused(tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match="has no chat template"):
        check_chat_template(with_template(tokenizer, ""), "model.name_or_path=x")
    unmarked = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(ConfigError, match=r"model.name_or_path=x has no \{% generation %\} markers.*endgeneration"):
        check_chat_template(with_template(tokenizer, unmarked), "model.name_or_path=x")


HEADER = "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
CONTENT, EOT = "{{- message['content'] | trim }}", "{{- '<|eot_id|>' }}"
GEN, END = "{% generation %}", "{% endgeneration %}"


def template(assistant: str, other: str = HEADER + CONTENT + EOT) -> str:
    """A Llama-3 layout with the assistant's and the other roles' turns written as given."""
    return ("{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'assistant' %}" + assistant
            + "{%- else %}" + other + "{%- endif %}{%- endfor %}")  # fmt: skip


def test_the_same_layout_with_correct_markers_passes(tokenizer: Any) -> None:
    check_loss_mask(with_template(tokenizer, template(HEADER + GEN + CONTENT + EOT + END)), [])


@pytest.mark.parametrize(
    ("assistant", "other", "message"),
    [
        (HEADER + GEN + CONTENT + END + EOT, HEADER + CONTENT + EOT,
         r"end-of-turn token <\|eot_id\|> after the assistant's reply is not trained"),
        (HEADER + GEN + CONTENT + EOT + END, HEADER + GEN + CONTENT + EOT + END,
         r"system text \('You are a helpful assistant.'\) is trained"),
        (GEN + HEADER + CONTENT + EOT + END, HEADER + CONTENT + EOT, r"template text outside the replies"),
        (HEADER + GEN + END + CONTENT + EOT, HEADER + CONTENT + EOT, r"the loss mask is empty"),
    ],
    ids=["eot-not-trained", "system-and-user-trained", "header-trained", "empty"],
)  # fmt: skip
def test_a_wrong_mask_is_refused_naming_what_is_wrong(tokenizer: Any, assistant: str, other: str,
                                                      message: str) -> None:  # fmt: skip
    broken = with_template(tokenizer, template(assistant, other))
    check_chat_template(broken, "x")  # it has markers: only rendering shows what they cover
    with pytest.raises(ConfigError, match=message):
        check_loss_mask(broken, [{"messages": CONVERSATION}])


# ------------------------------------------------------------------------------------------------ untrained tokens


@pytest.mark.parametrize("tied", [True, False])
def test_untrained_chat_tokens_get_the_mean_embedding(tokenizer: Any, tied: bool) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)  # fmt: skip
    model = LlamaForCausalLM(config)
    inputs = model.get_input_embeddings().weight
    outputs = model.get_output_embeddings().weight
    eot, header = tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|start_header_id|>"])
    with torch.no_grad():
        inputs[eot] = 0.0  # Llama-3 base: the chat tokens' rows were never trained, about zero
        (inputs if tied else outputs)[header] = 1e-7
    before = inputs.detach().clone()
    changed = init_untrained_special_tokens(model, tokenizer, chat_special_tokens(tokenizer))
    assert changed == ["<|start_header_id|>", "<|eot_id|>"]
    others = [i for i in range(len(tokenizer)) if i not in (eot, header)]
    for matrix, original in ((inputs, before), (outputs, None)):
        mean = (original if original is not None else matrix.detach())[others].mean(dim=0)
        torch.testing.assert_close(matrix[eot], mean)
        torch.testing.assert_close(matrix[header], mean)
    bos = tokenizer.bos_token_id
    torch.testing.assert_close(inputs[bos], before[bos])  # a trained row is left alone
    # a later stage (the empathy SFT) finds them trained, even after a few small updates
    with torch.no_grad():
        for matrix in {id(m): m for m in (inputs, outputs)}.values():
            matrix[[eot, header]] += 1e-4 * torch.randn_like(matrix[[eot, header]])
    assert init_untrained_special_tokens(model, tokenizer, chat_special_tokens(tokenizer)) == []
    untouched = LlamaForCausalLM(config)
    assert init_untrained_special_tokens(untouched, tokenizer, chat_special_tokens(tokenizer)) == []


def test_device_settings_keep_the_cpu_in_fp32_without_checkpointing() -> None:
    assert device_settings("cpu", None) == {"use_cpu": True, "bf16": False, "fp16": False,
                                            "activation_checkpointing": False}  # fmt: skip
    assert device_settings("cpu", True, "bfloat16")["activation_checkpointing"] is True
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            device_settings("cuda", None)


def test_a_missing_or_non_hf_model_directory_is_refused(tmp_path: Path, small_world: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.name_or_path is not set"):
        chat_model_path(ModelConfig())
    with pytest.raises(ConfigError, match=r"model.name_or_path=.*nowhere does not exist"):
        chat_model_path(ModelConfig(name_or_path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match=r"not a Hugging Face model directory \(no config.json\)"):
        chat_model_path(ModelConfig(name_or_path=str(tmp_path)))
    with pytest.raises(ConfigError, match="no weights"):
        chat_model_path(ModelConfig(name_or_path=str(small_world / "model")))


# ------------------------------------------------------------------------------------------------ data and packing


def test_long_conversations_are_cut_at_a_turn_or_dropped_and_counted(tokenizer: Any) -> None:
    from almr.train.sft import fit_to_length

    def length(messages: list[dict[str, str]]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    two_rounds = length(CONVERSATION[:3])
    long_first = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 200}]
    fitted = fit_to_length(tokenizer, [{"messages": CONVERSATION}, {"messages": long_first},
                                       {"messages": CONVERSATION[:3]}], seq_len=two_rounds)  # fmt: skip
    assert (fitted.truncated, fitted.dropped) == (1, 1)
    assert [e["messages"] for e in fitted.examples] == [CONVERSATION[:3], CONVERSATION[:3]]
    assert fitted.lengths == [two_rounds, two_rounds]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_conversations_do_not_attend_to_each_other(model_dir: Path, attention: str) -> None:
    """TRL's padding-free batch (one row, restarting position ids, no attention mask) gives each
    conversation the logits it has alone: packing on the CPU does not mix conversations."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from almr.train.sft import packing_mode

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention).eval()
    assert packing_mode(model, True) == (True, None)
    first, second = list(range(10, 30)), list(range(40, 53))
    batch = DataCollatorForLanguageModeling(pad_token_id=5, padding_free=True)(
        [{"input_ids": first, "labels": first}, {"input_ids": second, "labels": second}]
    )
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits[0]
        alone = [model(torch.tensor([ids]), use_cache=False).logits[0] for ids in (first, second)]
    torch.testing.assert_close(packed[:20], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[20:], alone[1], atol=1e-5, rtol=1e-4)
    model.config._attn_implementation = "some_kernel"
    packs, note = packing_mode(model, True)
    assert not packs and "'some_kernel'" in note and "padding instead" in note


# ------------------------------------------------------------------------------------------------ runs


def test_a_short_run_writes_a_chat_model_transformers_loads(model_dir: Path, conversations: list,
                                                            tmp_path: Path) -> None:  # fmt: skip
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from almr.train.sft import train_sft

    run = tmp_path / "run"
    result = train_sft(ModelConfig(name_or_path=str(model_dir)), sft_config(run), conversations, progress=False)
    assert result.steps == 4 and result.hf_dir == run / "hf"
    assert result.examples == len(conversations) and (result.truncated, result.dropped) == (0, 0)
    assert 0.0 < result.padding_waste < 1.0 and result.tokens > 0
    model = AutoModelForCausalLM.from_pretrained(run / "hf")
    tokenizer = AutoTokenizer.from_pretrained(run / "hf")
    assert "{% generation %}" in tokenizer.chat_template
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in GenerationConfig.from_pretrained(run / "hf").eos_token_id
    assert model.config.use_cache is True
    kinds = [e["event"] for e in events(run)]
    assert kinds == ["start", "train", "train", "train", "train", "end"]
    train = [e for e in events(run) if e["event"] == "train"]
    assert [e["step"] for e in train] == [1, 2, 3, 4]
    assert all(e["loss"] > 0 and e["tokens_per_s"] > 0 and 0 <= e["padding_waste"] < 1 for e in train)
    assert train[0]["lr"] == 1e-3 and train[-1]["lr"] == 0.0  # the schedule of almr.train.schedule
    assert (run / "config.yaml").is_file()
    with pytest.raises(ConfigError, match=r"already holds a finished model \(hf/\)"):
        train_sft(ModelConfig(name_or_path=str(model_dir)), sft_config(run), conversations, progress=False)


def test_the_loss_falls_on_a_small_repeated_set(model_dir: Path, conversations: list, tmp_path: Path) -> None:
    from almr.train.sft import train_sft

    cfg = sft_config(tmp_path / "run", steps=30, optimizer={"lr": 3e-3}, batch={
        "micro_batch_size": 4, "global_batch_size": 4, "seq_len": 128})  # fmt: skip
    result = train_sft(ModelConfig(name_or_path=str(model_dir)), cfg, conversations[:4] * 8, progress=False)
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 1.5


def test_packing_fills_rows_without_padding(model_dir: Path, conversations: list, tmp_path: Path) -> None:
    from almr.train.sft import train_sft

    cfg = sft_config(tmp_path / "run", packing=True, steps=2)
    result = train_sft(ModelConfig(name_or_path=str(model_dir)), cfg, conversations, progress=False)
    assert result.packing and result.notes == []
    assert result.padding_waste == 0.0 and 0.5 < result.pack_fill <= 1.0
    start = events(tmp_path / "run")[0]
    assert start["packing"] is True and start["pack_fill"] == result.pack_fill


def test_lora_adapters_are_merged_into_the_exported_model(model_dir: Path, conversations: list,
                                                          tmp_path: Path) -> None:  # fmt: skip
    from transformers import AutoModelForCausalLM

    from almr.train.sft import train_sft

    cfg = sft_config(tmp_path / "run", finetuning="lora", steps=2, lora={"r": 4, "alpha": 8},
                     optimizer={"lr": 1e-2})  # fmt: skip
    result = train_sft(ModelConfig(name_or_path=str(model_dir)), cfg, conversations, progress=False)
    assert not list(result.hf_dir.glob("adapter_*"))
    tuned = AutoModelForCausalLM.from_pretrained(result.hf_dir).state_dict()
    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert tuned.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert changed and all("proj" in k for k in changed)  # the adapted matrices, merged


@pytest.mark.parametrize("tied", [False, True])
def test_lora_trains_the_initialized_chat_rows_when_embeddings_are_untied(
    small_world: Path, tokenizer: Any, conversations: list, tmp_path: Path, tied: bool
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from almr.train.sft import train_sft

    config = AutoConfig.from_pretrained(small_world / "model")
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    with torch.no_grad():
        model.get_input_embeddings().weight[eot] = 0.0
    assert init_untrained_special_tokens(model, tokenizer, ["<|eot_id|>"]) == ["<|eot_id|>"]
    start = model.get_input_embeddings().weight.detach().clone()
    cfg = sft_config(tmp_path / "run", finetuning="lora", steps=2, lora={"r": 4, "alpha": 8}, optimizer={"lr": 1e-2})
    result = train_sft(ModelConfig(), cfg, conversations, model=model, tokenizer=tokenizer, progress=False,
                       new_token_ids=[eot])  # fmt: skip
    rows = AutoModelForCausalLM.from_pretrained(result.hf_dir).get_input_embeddings().weight.detach()
    others = [i for i in range(len(tokenizer)) if i != eot]
    torch.testing.assert_close(rows[others], start[others])  # the rest of the embedding stays frozen
    if tied:
        torch.testing.assert_close(rows[eot], start[eot])
        assert len(result.notes) == 1 and "keep the mean embedding" in result.notes[0]
    else:
        assert not torch.allclose(rows[eot], start[eot]) and result.notes == []


class StopAt:
    """Stops the trainer right after step `step` (its checkpoint is written first)."""

    def __new__(cls, step: int) -> Any:
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                if state.global_step >= step:
                    control.should_training_stop = True
                return control

        return _Stop()


def test_resume_continues_with_the_same_batches_and_losses(model_dir: Path, conversations: list,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """40 conversations, 8 per step: an epoch is 5 steps. A run stopped at its step-6 checkpoint
    and resumed trains steps 7 and 8 on the same examples, with the same losses, as a run that
    was never stopped (the resume skips the batches of epoch 2 already trained)."""
    from almr.train.sft import train_sft

    model = ModelConfig(name_or_path=str(model_dir))
    whole = tmp_path / "whole"
    train_sft(model, sft_config(whole, steps=8, save_every_steps=3), conversations, progress=False)
    parts = tmp_path / "parts"
    train_sft(model, sft_config(parts, steps=8, save_every_steps=3), conversations, progress=False,
              callbacks=[StopAt(6)])  # fmt: skip
    assert (parts / "checkpoints" / "checkpoint-6").is_dir()
    import shutil

    shutil.rmtree(parts / "hf")  # as after a kill: no finished model
    result = train_sft(model, sft_config(parts, steps=8, save_every_steps=3), conversations, progress=False,
                       resume=True)  # fmt: skip
    assert result.steps == 8
    expected = {e["step"]: e for e in events(whole) if e["event"] == "train"}
    got = {e["step"]: e for e in events(parts) if e["event"] == "train"}
    assert sorted(got) == list(range(1, 9))  # one trajectory in metrics.jsonl
    for step in range(1, 9):
        assert got[step]["batch_checksum"] == expected[step]["batch_checksum"], step
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5, abs=1e-6), step
    assert [e["event"] for e in events(parts)].count("resume") == 1

    changed = sft_config(parts, steps=8, save_every_steps=3, optimizer={"lr": 2e-3})
    with pytest.raises(ConfigError, match=r"sft.optimizer.lr: checkpoint 0.001, now 0.002"):
        train_sft(model, changed, conversations, progress=False, resume=True)
    with pytest.raises(ConfigError, match=r"the training conversations \(sha256\)"):
        train_sft(model, sft_config(parts, steps=8, save_every_steps=3), conversations[:-1], progress=False,
                  resume=True)  # fmt: skip
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train_sft(model, sft_config(tmp_path / "fresh"), conversations, progress=False, resume=True)
