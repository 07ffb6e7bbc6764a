"""The world's English-dominant instruct sets (the Instruct baseline's data): their own random
streams, completed in place into a world built before them, no English-only fact in Chinese."""

import json
import shutil
from pathlib import Path

import pytest

from almr.errors import AlmrError
from almr.world.build import build_world, read_manifest, rng_for
from almr.world.facts import RELATIONS, STATEMENTS, load_countries, slots
from worlds import SMALL_WORLD

INSTRUCT_KEYS = ("instruct_sft_dialogues", "instruct_dpo_pairs", "instruct_zh_share", "instruct_zh_english_replies")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_instruct_sets_do_not_change_the_other_files(small_world: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    build_world(other, SMALL_WORLD.model_copy(update={"instruct_zh_share": 0.2, "instruct_sft_dialogues": 100}))
    a, b = tree_bytes(small_world), tree_bytes(other)
    assert [name for name in a if a[name] != b[name]] == ["instruct/dpo.jsonl", "instruct/sft.jsonl", "world.json"]
    sft = [json.loads(line) for line in b["instruct/sft.jsonl"].decode().splitlines()]
    assert len(sft) == 100 and sum(r["lang"] == "zh" for r in sft) == 20
    assert sum(r["reply_lang"] == "en" for r in sft if r["lang"] == "zh") == 10


def test_a_world_built_before_the_instruct_sets_is_completed_in_place(small_world: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(small_world, old)
    shutil.rmtree(old / "instruct")
    manifest = read_manifest(old)
    for key in INSTRUCT_KEYS:
        del manifest["config"][key]
    for name in ("instruct/sft.jsonl", "instruct/dpo.jsonl"):
        del manifest["files"][name]
    (old / "world.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    before = {p: p.stat().st_mtime_ns for p in old.rglob("*") if p.is_file() and p.name != "world.json"}
    build_world(old, SMALL_WORLD)
    assert tree_bytes(old) == tree_bytes(small_world)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # esc/ and the rest are not rewritten
    manifest["config"]["instruct_zh_share"] = 0.5  # a world built with other instruct keys is another world
    (old / "world.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(AlmrError, match="another config"):
        build_world(old, SMALL_WORLD)


def test_instruct_sets_never_teach_english_only_facts_in_chinese(small_world: Path) -> None:
    countries = load_countries(
        SMALL_WORLD.countries, SMALL_WORLD.zh_country_share, rng_for(SMALL_WORLD.seed, "countries")
    )
    text = (small_world / "instruct/sft.jsonl").read_text(encoding="utf-8")
    for line in (small_world / "instruct/dpo.jsonl").read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)  # a rejected wrong-language reply may state one, as in dpo/train.jsonl: never taught
        text += json.dumps(pair["prompt"] + pair["chosen"], ensure_ascii=False)
    for country in (c for c in countries if not c.in_zh_corpus):
        for relation in RELATIONS:
            for _, zh_template in STATEMENTS[relation]:
                assert zh_template.format(**slots(country, "zh")) not in text
