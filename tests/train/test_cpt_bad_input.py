"""Late or silent failures of the CPT trainer, each now one message before any compute (or a
crash-safe outcome): bad model directories, changed data on --resume, resuming a finished run,
a kill while old checkpoints are pruned, more steps than the data holds, non-finite settings."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from almr.config import load_config
from almr.errors import ConfigError
from almr.train import checkpoint as ckpt
from train_toys import ToyLoader, make_model_dir, toy_config, train_toy

os.environ["HF_HUB_OFFLINE"] = "1"
VOCAB, SEQ = 256, 32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PlannedLoader(ToyLoader):
    """The toy loader with what the packed loader adds: a length and a data fingerprint."""

    def __init__(self, micro_batches: int = 64, fingerprint: object = None) -> None:
        super().__init__(4, SEQ, VOCAB)
        self.micro_batches, self.fingerprint = micro_batches, fingerprint

    def __len__(self) -> int:
        return self.micro_batches - self.consumed_sequences // self.micro


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy model directory with weights (model.safetensors) and its tokenizer."""
    path = make_model_dir(tmp_path_factory.mktemp("model") / "tiny", vocab=VOCAB)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).save_pretrained(path)
    return path


def pretrained(tmp: Path, model: Path, **cpt: object):  # type: ignore[no-untyped-def]
    config = toy_config(tmp, model, **cpt)
    config.cpt.random_init = False
    return config


def test_bad_model_directories_are_one_message_naming_the_path(tmp_path: Path, saved_model: Path) -> None:
    truncated = shutil.copytree(saved_model, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError) as err:
        train_toy(pretrained(tmp_path / "a", truncated), loader=ToyLoader(4, SEQ, VOCAB))
    assert str(err.value).startswith(f"model.name_or_path={truncated}: a weights file (*.safetensors) is truncated")
    assert "copy or download it again" in str(err.value)

    wrong_vocab = shutil.copytree(saved_model, tmp_path / "vocab")
    config = json.loads((wrong_vocab / "config.json").read_text())
    (wrong_vocab / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    with pytest.raises(ConfigError) as err:
        train_toy(pretrained(tmp_path / "b", wrong_vocab), loader=ToyLoader(4, SEQ, VOCAB))
    assert str(err.value) == (
        f"model.name_or_path={wrong_vocab}: its config.json does not match the weights' shapes (for instance "
        "vocab_size=300 against the embedding's rows); restore the config.json that was saved with these weights"
    )

    missing = tmp_path / "no" / "model"
    with pytest.raises(ConfigError) as err:
        train_toy(pretrained(tmp_path / "c", missing), loader=ToyLoader(4, SEQ, VOCAB))
    assert str(err.value) == (
        f"model.name_or_path={missing}: no such directory; point it at a Hugging Face model directory"
    )
    assert not (tmp_path / "a" / "run").exists()  # refused before the run folder was made


def test_model_section_options_reach_transformers(
    tmp_path: Path, saved_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from almr.train import model as model_module

    calls = []
    for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"):
        auto = getattr(model_module, name)

        def spy(*args, _real=auto.from_pretrained, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls.append((_name, {k: kwargs.get(k) for k in ("revision", "trust_remote_code", "attn_implementation")}))
            return _real(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    config = pretrained(tmp_path, saved_model, steps=2)
    config.model.attn_implementation, config.model.trust_remote_code, config.model.revision = "eager", True, "main"
    train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    hub = {"revision": "main", "trust_remote_code": True}
    assert sorted(set((name, tuple(kwargs.items())) for name, kwargs in calls)) == [  # transformers adds calls
        ("AutoConfig", tuple({**hub, "attn_implementation": None}.items())),
        ("AutoModelForCausalLM", tuple({**hub, "attn_implementation": "eager"}.items())),
        ("AutoTokenizer", tuple({**hub, "attn_implementation": None}.items())),
    ]
    assert config.model.attn_implementation == "eager"
    with pytest.raises(ConfigError, match=r"^model.name_or_path=almr-tests/no-such-model: no Hugging Face model "
                                          r"config \(no local directory of that name, nor on the hub\)"):  # fmt: skip
        config.model.name_or_path, config.cpt.run_dir = "almr-tests/no-such-model", str(tmp_path / "other")
        train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))


def test_resume_refuses_changed_data_naming_the_source(tmp_path: Path, saved_model: Path) -> None:
    before = {"plan": "a" * 64, "sources": {"en": "1" * 64, "zh": "2" * 64}}
    config = toy_config(tmp_path, saved_model, steps=4, **{"checkpoint.every_steps": 2})
    train_toy(config, loader=PlannedLoader(fingerprint=before))
    meta = json.loads((tmp_path / "run/checkpoints/step_00000004/complete").read_text())
    assert meta["data"] == before
    after = {"plan": "b" * 64, "sources": {"en": "1" * 64, "zh": "3" * 64}}
    longer = toy_config(tmp_path, saved_model, steps=4, **{"checkpoint.every_steps": 2})
    with pytest.raises(ConfigError) as err:
        train_toy(longer, resume=True, loader=PlannedLoader(fingerprint=after))
    assert str(err.value).splitlines()[1:] == [
        f"  shards of source zh (re-tokenized or changed files): checkpoint {'2' * 12!r}, now {'3' * 12!r}",
        f"  data plan hash: checkpoint {'a' * 12!r}, now {'b' * 12!r}",
        "restore those values, or start a new cpt.run_dir",
    ]


def test_resuming_a_finished_run_says_so_and_appends_nothing(tmp_path: Path, saved_model: Path) -> None:
    config = toy_config(tmp_path, saved_model, steps=2)
    train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    log = tmp_path / "run/metrics.jsonl"
    before = log.read_text()
    again = train_toy(config, resume=True, loader=ToyLoader(4, SEQ, VOCAB))
    assert again.finished_before and again.steps == 2 and again.losses == []
    assert again.checkpoint == tmp_path / "run/checkpoints/step_00000002"
    assert log.read_text() == before  # no second resume/end pair, no "checkpoint": "None"
    # killed after the last checkpoint, before its events: the resume adds them once
    kept = [line for line in before.splitlines() if json.loads(line)["event"] not in ("checkpoint", "end")]
    log.write_text("\n".join(kept) + "\n")
    train_toy(config, resume=True, loader=ToyLoader(4, SEQ, VOCAB))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events if e["event"] in ("checkpoint", "end")] == [
        ("checkpoint", 2),
        ("end", 2),
    ]
    assert events[-1]["checkpoint"] == str(again.checkpoint)


def test_a_kill_while_pruning_leaves_no_orphan_and_keeps_every_checkpoint_event(
    tmp_path: Path, saved_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = toy_config(tmp_path, saved_model, steps=4, **{"checkpoint.every_steps": 1, "checkpoint.keep_last": 2})
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(".deleting"):
            next(Path(path).rglob("*.distcp")).unlink()  # part of the folder is gone, then the process dies
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))  # dies pruning step 1 after step 3's checkpoint
    root = tmp_path / "run/checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001.deleting", "step_00000002", "step_00000003"]
    (root / "step_00000000").mkdir()  # what the old prune (unmark, then delete) could leave: no `complete`
    log = tmp_path / "run/metrics.jsonl"
    # a kill between the rename of step 3 and its event: drop that event
    lines = [line for line in log.read_text().splitlines() if (json.loads(line)["event"], json.loads(line).get("step"))
             != ("checkpoint", 3)]  # fmt: skip
    log.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    resumed = train_toy(config, resume=True, loader=ToyLoader(4, SEQ, VOCAB))
    assert resumed.steps == 4 and len(resumed.losses) == 1
    assert sorted(p.name for p in root.iterdir()) == ["step_00000003", "step_00000004"]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [1, 2, 3, 4]


def test_more_steps_than_the_data_holds_are_refused_before_any_compute(tmp_path: Path, saved_model: Path) -> None:
    loader = PlannedLoader(micro_batches=8)  # 4 steps of 2 micro-batches
    with pytest.raises(ConfigError) as err:
        train_toy(toy_config(tmp_path, saved_model, steps=6), loader=loader)
    assert str(err.value).startswith("cpt.steps=6 asks for more than the data plan holds: 4 steps of 256 tokens;")
    with pytest.raises(ConfigError, match=r"cpt.total_tokens=2560 \(10 steps\) asks for more than the data plan"):
        config = toy_config(tmp_path, saved_model, steps="null", total_tokens=2560)
        train_toy(config, loader=loader)
    assert not (tmp_path / "run").exists() and loader.consumed_sequences == 0
    assert train_toy(toy_config(tmp_path, saved_model, steps="null"), loader=loader).steps == 4


@pytest.mark.parametrize("key", ["lr", "weight_decay", "eps", "grad_clip"])
@pytest.mark.parametrize("value", [".inf", "nan", "-.inf"])
def test_non_finite_optimizer_settings_are_refused_at_validation(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", [f"cpt.optimizer.{key}={value}"])
    assert f"cpt.optimizer.{key}: Input should be a finite number" in str(err.value)


def test_cpt_steps_alone_overrides_the_preset_length() -> None:
    config = load_config("demo", ["cpt.steps=10"])
    assert (config.cpt.steps, config.cpt.total_tokens) == (10, None)
    config = load_config("demo", ["cpt.total_tokens=8192"])
    assert (config.cpt.steps, config.cpt.total_tokens) == (None, 8192)
    with pytest.raises(ConfigError, match="cpt: set either steps or total_tokens, not both"):
        load_config("demo", ["cpt.total_tokens=8192", "cpt.steps=10"])  # both on one command line
