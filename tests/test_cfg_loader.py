"""The config machinery: YAML + overrides into the one schema, and errors that name the key."""

from __future__ import annotations

import json

import pytest

from endo_rl.core import config, config_loader
from endo_rl.core.errors import UserError


def test_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("algo:\n  name: ppo\n  kl_coef: 0.01\ntrain:\n  lr: 1e-6\n  max_steps: 5\n")
    cfg = config.load(
        recipe,
        [
            "train.max_steps=7",
            "eval.benchmarks=[math500, aime24]",
            "eval.limit=null",
            "reward.endogenous.system_prompt=Be rigorous.",
        ],
    )
    assert cfg.algo.name == "ppo" and cfg.algo.kl_coef == 0.01
    assert cfg.train.lr == 1e-6 and isinstance(cfg.train.lr, float)  # YAML 1.1 reads 1e-6 as a string
    assert cfg.train.max_steps == 7
    assert cfg.eval.benchmarks == ["math500", "aime24"] and cfg.eval.limit is None
    assert cfg.reward.endogenous.system_prompt == "Be rigorous."
    assert cfg.model.dtype == "auto"  # untouched defaults stay


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load(None, ["algo.kl_coef=0.05", "lora.enabled=true"])
    config_loader.save(cfg, tmp_path / "config.yaml")
    assert config.load(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo.kl_cof=1"], "unknown config key 'algo.kl_cof'; did you mean 'algo.kl_coef'?"),
        (["trian.lr=1"], "unknown config key 'trian'; did you mean 'train'?"),
        (["train.lr=fast"], "config key 'train.lr': expected float, got str 'fast'"),
        (["train.max_steps=1.5"], "config key 'train.max_steps': expected int, got float 1.5"),
        (["lora.enabled=yes please"], "config key 'lora.enabled': expected bool, got str 'yes please'"),
        (["algo.name=dpo"], "config key 'algo.name': expected one of ['ppo', 'grpo'], got 'dpo'"),
        (["train.lr.x=1"], "config key 'train.lr' is not a section, so 'train.lr.x' cannot be set"),
        (["reward.endogenous.alpha=0"], "config key 'reward.endogenous.alpha' must be > 0, got 0.0"),
        (["eval.benchmarks=math500"], "config key 'eval.benchmarks': expected a list, got 'math500'"),
        (
            ["eval.extract=last"],
            "config key 'eval.extract': expected one of ['boxed', 'harness'], got 'last'",
        ),
        (["eval.max_new_tokens=0"], "config key 'eval.max_new_tokens' must be >= 1 or null, got 0"),
        (["algo.kl_coef"], "override 'algo.kl_coef' is not of the form key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(UserError) as err:
        config.load(None, overrides)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("overrides", "extract", "max_new_tokens"),
    [
        ([], "boxed", 1024),
        (["eval.extract=harness"], "harness", 2048),  # the harness's default length comes with it
        (["eval.extract=harness", "eval.max_new_tokens=3000"], "harness", 3000),
    ],
)
def test_eval_extract_reaches_the_evaluator_settings(tmp_path, overrides, extract, max_new_tokens):
    from endo_rl.rl.evals import TrainEval

    cfg = config.load(None, ["eval.benchmarks=[aime24]", *overrides])
    settings = TrainEval(cfg, tmp_path, tokenizer=None).settings()
    assert (settings.extract, settings.max_new_tokens) == (extract, max_new_tokens)
    settings.validate()
    assert settings.decoding("m")["extract"] == extract and settings.benchmarks == ["aime24"]


def test_bad_yaml_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError, match=f"config file {missing} does not exist"):
        config.load(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1,\n")
    with pytest.raises(UserError, match=rf"config file {broken} line \d+: invalid YAML"):
        config.load(broken)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  max_step: 3\n")
    with pytest.raises(
        UserError, match="unknown config key 'train.max_step'; did you mean 'train.max_steps'"
    ):
        config.load(typo)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping at the top level, got list"):
        config.load(listing)


@pytest.mark.parametrize("old", sorted(config.MOVED_KEYS))
def test_a_moved_key_is_an_error_naming_its_new_key(tmp_path, old):
    new = config.MOVED_KEYS[old]
    with pytest.raises(
        UserError, match=rf"^config key '{old}' \(on the command line\) has moved: write '{new}'"
    ):
        config.load(None, [f"{old}=1"])
    section, key = old.split(".")
    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"{section}:\n  {key}: 1\n")
    with pytest.raises(UserError, match=rf"^config key '{old}' \(in {recipe}\) has moved: write '{new}'"):
        config.load(recipe)
    # the new key works, with the default's value
    node = config_loader.to_dict(config.ExperimentConfig())
    for part in new.split("."):
        node = node[part]
    tree = config_loader.to_dict(config.load(None, [f"{new}={json.dumps(node)}"]))
    for part in new.split("."):
        tree = tree[part]
    assert tree == node


def test_quickstart_recipes_get_the_same_message_for_a_moved_key():
    from endo_rl.quickstart.config import load as load_quickstart

    with pytest.raises(
        UserError,
        match=r"^config key 'rl.algo.lam' \(on the command line\) has moved: write 'rl.algo.ppo.lam'",
    ):
        load_quickstart(None, ["rl.algo.lam=0.9"])
