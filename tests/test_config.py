import sys
from pathlib import Path

import pytest

from almr.cli import main
from almr.config import AlmrConfig, dump_config, load_config, presets
from almr.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


def test_defaults_then_file_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "cpt:\n  optimizer: {lr: 2.0e-4}\nworld: {seed: 3}\n")
    config = load_config(path, ["world.seed=5", "cpt.optimizer.weight_decay=0.1", "cpt.optimizer.lr=1e-4"])
    assert config.world.seed == 5
    assert config.cpt.optimizer.lr == 1e-4  # "1e-4" is a string to YAML; the field makes it a number
    assert config.cpt.optimizer.weight_decay == 0.1
    assert config.cpt.batch.global_batch_size == AlmrConfig().cpt.batch.global_batch_size


def test_unknown_key_names_it_and_suggests(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "cpt:\n  optimizer: {lrr: 1.0}\n"))
    assert "cpt.optimizer.lrr: unknown key" in message
    assert "did you mean 'cpt.optimizer.lr'" in message


def test_renamed_key_names_the_new_spelling(tmp_path: Path) -> None:
    path = write(tmp_path, "world:\n  pretrain: {tokens: 100}\n")
    assert "world.pretrain was renamed to base" in error_of(path)
    assert "world.pretrain was renamed to base" in error_of(None, ["world.pretrain.tokens=5"])
    assert load_config(None, ["base.tokens=5"]).base.tokens == 5


def test_unknown_section() -> None:
    assert "colour: unknown key" in error_of(None, ["colour=red"])


def test_wrong_type_names_key_and_value() -> None:
    message = error_of(None, ["cpt.batch.micro_batch_size=four"])
    assert "cpt.batch.micro_batch_size" in message and "'four'" in message


def test_ratio_outside_unit_interval() -> None:
    message = error_of(None, ["world.zh_country_share=1.5"])
    assert "world.zh_country_share" in message and "less than or equal to 1" in message


def test_global_batch_must_fill_data_parallel_ranks() -> None:
    message = error_of("paper-llama3-8b", ["cpt.batch.global_batch_size=250"])
    assert "cpt.batch.global_batch_size: 250 is not divisible by" in message
    assert "4 × 16 = 64" in message and "multiple of 64" in message
    # TRL's SFT and DPO shard plainly over every process: their batches fill all 32, not the 16 replicas
    message = error_of("paper-llama3-8b", ["dpo.batch.global_batch_size=96"])
    assert "dpo.batch.global_batch_size: 96 is not divisible by micro_batch_size × processes = 2 × 32 = 64" in message


def test_gpus_must_split_into_model_parallel_groups() -> None:
    message = error_of(None, ["parallel.gpus_per_node=6", "parallel.tensor_parallel=4"])
    assert "parallel" in message and "not divisible by tensor_parallel" in message


def test_missing_file_lists_presets(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.yaml")
    assert "does not exist" in message and "paper-llama3-8b" in message


def test_malformed_yaml_and_non_mapping(tmp_path: Path) -> None:
    assert "not valid YAML" in error_of(write(tmp_path, "cpt: [1, 2\n"))
    assert "must hold a mapping" in error_of(write(tmp_path, "- 1\n- 2\n"))


def test_bad_override_syntax() -> None:
    assert "expected KEY=VALUE" in error_of(None, ["cpt.optimizer.lr"])
    assert "is a value, not a section" in error_of(None, ["world.seed=1", "world.seed.x=2"])


def test_paper_presets_carry_table_3() -> None:
    assert {"demo", "paper-llama3-8b", "paper-llama3-70b"} <= set(presets())
    for name, dp, world in (("paper-llama3-8b", 16, 32), ("paper-llama3-70b", 16, 128)):
        config = load_config(name)
        assert config.parallel.data_parallel == dp
        assert config.parallel.world_size == world
        expected = {
            "cpt": (4, 256, "linear", 0.01),
            "sft": (8, 1024, "cosine", 0.01),
            "dpo": (2 if world == 32 else 1, 128, "cosine", 0.0),  # 70B: 128 processes, one pair each
        }
        for stage, (micro, global_, schedule, decay) in expected.items():
            section = getattr(config, stage)
            assert (section.batch.micro_batch_size, section.batch.global_batch_size) == (micro, global_)
            assert section.schedule.kind == schedule
            assert section.optimizer.weight_decay == decay
            assert section.optimizer.name == "adamw"
            assert section.batch.seq_len == 2048
    assert load_config("paper-llama3-8b").parallel.tensor_parallel == 2
    assert load_config("paper-llama3-70b").parallel.tensor_parallel == 8


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config("demo", ["world.seed=11"])
    again = load_config(write(tmp_path, dump_config(config)))
    assert again == config


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["almr", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code


def test_cli_config_error_is_one_message_and_exit_2(monkeypatch, capsys) -> None:
    code = run_cli(monkeypatch, "config", "show", "paper-llama3-8b", "--set", "cpt.batch.global_batch_size=250")
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "cpt.batch.global_batch_size" in err and "Traceback" not in err


def test_cli_config_show_prints_resolved_yaml(monkeypatch, capsys) -> None:
    code = run_cli(monkeypatch, "config", "show", "paper-llama3-70b", "--set", "world.seed=9")
    assert code == 0
    out = capsys.readouterr().out
    assert "seed: 9" in out and "tensor_parallel: 8" in out and "global_batch_size: 1024" in out


def test_cli_config_keys_lists_every_leaf_with_default(monkeypatch, capsys) -> None:
    from almr.config import config_keys

    keys = {row[0]: row for row in config_keys()}
    assert keys["cpt.batch.global_batch_size"][2] == "256"
    assert keys["world.model.hidden_size"][2] == "128"
    assert run_cli(monkeypatch, "config", "keys", "world") == 0
    out = capsys.readouterr().out
    assert "| `world.seed` | int | `0` |" in out and "cpt." not in out


def test_config_keys_give_a_nested_section_the_defaults_its_parent_builds() -> None:
    from almr.config import config_keys

    rows = {key: default for key, _, default, _ in config_keys()}
    assert rows["base.optimizer.lr"] == "0.003" and rows["cpt.optimizer.lr"] == "3e-05"
    assert rows["base.schedule.kind"] == "'cosine'" and rows["cpt.schedule.kind"] == "'linear'"
