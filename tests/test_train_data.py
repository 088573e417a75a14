"""Errors a user can cause before training starts: data files, prompt lengths, output dir, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from endo_rl.core.config import DataConfig
from endo_rl.core.errors import UserError
from endo_rl.rl import checkpoint
from endo_rl.rl.checkpoint import check_output_dir
from endo_rl.rl.data import PromptOrder, load_prompts

PROMPTS = Path(__file__).resolve().parents[1] / "recipes" / "debug" / "arithmetic.jsonl"


def data_cfg(train: Path, **kw) -> DataConfig:
    return DataConfig(train=str(train), **kw)


def test_prompts_render_with_template_and_gold(qwen_tokenizer):
    prompts = load_prompts(data_cfg(PROMPTS, max_prompt_length=128), qwen_tokenizer, need_gold=True)
    assert len(prompts) == 12 and prompts[0].gold == "5"
    text = qwen_tokenizer.decode(prompts[0].prompt_ids)
    assert text.startswith("<|im_start|>system") and "What is 2 + 3?" in text
    plain = load_prompts(data_cfg(PROMPTS, template="plain"), qwen_tokenizer, "Judge harshly.")
    assert qwen_tokenizer.decode(plain[0].prompt_ids) == "What is 2 + 3?"
    assert "Judge harshly." in qwen_tokenizer.decode(plain[0].reward_prompt_ids)


def test_directory_with_train_jsonl(tmp_path, qwen_tokenizer):
    (tmp_path / "train.jsonl").write_text(PROMPTS.read_text())
    assert len(load_prompts(data_cfg(tmp_path, template="plain"), qwen_tokenizer)) == 12
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="has no train.jsonl"):
        load_prompts(data_cfg(tmp_path / "sub"), qwen_tokenizer)


def test_long_prompts_are_dropped_and_counted(tmp_path, qwen_tokenizer, capsys):
    rows = [
        '{"problem": "What is 2 + 3?", "solution": "5"}',
        '{"problem": "' + "very long question " * 40 + '", "solution": "1"}',
        '{"problem": "What is 4 + 4?", "solution": "8"}',
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(rows) + "\n")
    prompts = load_prompts(data_cfg(data, template="plain", max_prompt_length=20), qwen_tokenizer)
    assert [p.text for p in prompts] == ["What is 2 + 3?", "What is 4 + 4?"]
    err = capsys.readouterr().err
    assert "dropped 1 of 3 prompts over 20 tokens" in err and "mixed.jsonl, line 2" in err


def test_long_prompt_is_an_error_naming_the_row_in_strict_mode(qwen_tokenizer):
    with pytest.raises(
        UserError, match=r"arithmetic.jsonl, line 1: prompt is \d+ tokens, over data.max_prompt_length=5"
    ):
        load_prompts(
            data_cfg(PROMPTS, template="plain", max_prompt_length=5, overlong="error"), qwen_tokenizer
        )
    with pytest.raises(UserError, match=r"every prompt is too long: dropped 12 of 12 prompts over 5 tokens"):
        load_prompts(data_cfg(PROMPTS, template="plain", max_prompt_length=5), qwen_tokenizer)


def test_empty_malformed_and_missing_field(tmp_path, qwen_tokenizer):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="holds no rows"):
        load_prompts(data_cfg(empty), qwen_tokenizer)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?"}\n{"problem": oops}\n')
    with pytest.raises(UserError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_prompts(data_cfg(bad), qwen_tokenizer)
    with pytest.raises(UserError, match=r"line 1: no field 'question' \(set by data.prompt_field\)"):
        load_prompts(data_cfg(PROMPTS, prompt_field="question"), qwen_tokenizer)
    with pytest.raises(UserError, match="does not exist"):
        load_prompts(data_cfg(tmp_path / "missing.jsonl"), qwen_tokenizer)


def test_prompt_order_is_a_permutation_per_epoch_and_resumes():
    order = PromptOrder(5, seed=3)
    first = order.take(5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    order.take(2)
    state = order.state_dict()
    rest = order.take(6)
    again = PromptOrder(5, seed=3)
    again.load_state_dict(state)
    assert again.take(6) == rest
    with pytest.raises(UserError, match="resume with the same data"):
        PromptOrder(6, seed=3).load_state_dict(state)


def test_output_dir_must_be_writable_and_not_hold_a_finished_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"output_dir .*file/run is not writable"):
        check_output_dir(str(blocker / "run"), resume=False)
    (tmp_path / "run" / "checkpoints" / "step-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step-3" / checkpoint.STATE_FILE).write_text("{}")
    with pytest.raises(UserError, match="already holds checkpoints: set resume=true"):
        check_output_dir(str(tmp_path / "run"), resume=False)
    check_output_dir(str(tmp_path / "run"), resume=True)


def test_latest_checkpoint_skips_temp_and_incomplete_dirs(tmp_path):
    root = checkpoint.checkpoints_dir(tmp_path)
    for name, complete in (("step-2", True), ("step-10", True), ("step-12", False), (".tmp-step-14", True)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / checkpoint.STATE_FILE).write_text("{}")
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-10"
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-2", "step-10"]
    assert checkpoint.latest_checkpoint(tmp_path / "nothing") is None
