"""The quickstart's pieces: synthetic task and answer checker, tokenizer round trip, config/recipes, and a tiny
end-to-end run through the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from endo_rl.core.errors import UserError
from endo_rl.quickstart import config as qs_config
from endo_rl.quickstart.task import AdditionProblem, final_answer, is_correct, make_splits, sample_set
from endo_rl.quickstart.tokenizer import SYMBOLS, build_tokenizer, encode, save_and_reload

REPO = Path(__file__).resolve().parents[1]


# ----- task ---------------------------------------------------------------------------------------------


def test_trace_is_step_by_step_and_ends_in_the_boxed_answer():
    p = AdditionProblem((31, 5, 72, 17))
    assert p.horizon == 3
    assert p.prompt == "31+5+72+17="
    assert p.trace == "31+5=36;36+72=108;108+17=125;\\boxed{125}"
    assert is_correct(p.trace, p)


def test_every_trace_step_is_right_by_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        p = AdditionProblem(tuple(rng.randint(0, 99) for _ in range(rng.randint(2, 7))))
        steps = p.trace.split(";")[:-1]
        assert len(steps) == p.horizon
        total = p.operands[0]
        for step, x in zip(steps, p.operands[1:]):
            lhs, rhs = step.split("=")
            assert lhs == f"{total}+{x}"
            total += x
            assert int(rhs) == total
        assert final_answer(p.trace) == sum(p.operands)


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("1+2=3;\\boxed{3}", 3),
        ("\\boxed{4}\\boxed{3}", 3),  # the last box counts
        ("1+2=3;", None),  # no box
        ("\\boxed{}", None),
        ("\\boxed{3+}", None),  # not an integer
        ("\\boxed{12", None),  # unclosed (truncated)
        ("\\boxed{ 12 }", 12),
    ],
)
def test_extract_answer(response, answer):
    assert final_answer(response) == answer


def test_wrong_answer_is_wrong_even_with_a_right_trace_prefix():
    p = AdditionProblem((1, 2, 3))
    assert not is_correct("1+2=3;3+3=6;\\boxed{7}", p)
    assert not is_correct("1+2=3;3+3=6;", p)


def test_splits_are_disjoint_seeded_and_inside_the_training_range():
    kw = dict(
        train_horizons=[1, 2, 3], eval_horizons=[1, 3], n_pretrain=500, n_rl=100, n_eval=30, max_operand=9
    )
    a, b = make_splits(seed=1, **kw), make_splits(seed=1, **kw)
    assert a == b and make_splits(seed=2, **kw) != a
    held_out = [p for ps in (*a.test.values(), *a.validation.values()) for p in ps]
    assert len(held_out) == len(set(held_out)) == 4 * 30
    assert not set(held_out) & (set(a.pretrain) | set(a.rl))
    assert all(p.horizon == h for h, ps in a.test.items() for p in ps)
    assert {p.horizon for p in a.pretrain} == {1, 2, 3}
    with pytest.raises(ValueError, match="outside the training range"):
        make_splits(seed=1, **{**kw, "eval_horizons": [4]})


def test_asking_for_more_distinct_problems_than_exist_is_an_error():
    with pytest.raises(ValueError, match="only 100 exist"):
        sample_set(random.Random(0), horizon=1, n=101, max_operand=9)


# ----- tokenizer ----------------------------------------------------------------------------------------


def test_tokenizer_round_trip_one_token_per_character():
    tok = build_tokenizer()
    p = AdditionProblem((31, 5, 72, 17))
    text = p.prompt + p.trace
    ids = encode(tok, text)
    assert len(ids) == len(text) and len(set(ids)) == len(set(text))
    assert tok.decode(ids) == text
    assert tok.decode([*ids, tok.eos_token_id], skip_special_tokens=True) == text
    assert len({tok.pad_token_id, tok.eos_token_id, tok.unk_token_id}) == 3


def test_tokenizer_loads_back_the_same_next_to_a_qwen2_config(tmp_path):
    """AutoTokenizer rebuilds a tokenizer saved beside a qwen2 config as a Qwen2Tokenizer: ids must survive."""
    from endo_rl.quickstart.pretrain import PretrainConfig, save_model, tiny_qwen2

    built = build_tokenizer()
    save_model(tiny_qwen2(built, PretrainConfig(hidden=32, layers=1), seed=0), tmp_path)
    loaded = save_and_reload(tmp_path)
    assert len(loaded) == len(built)  # loading must not add a token the model has no row for
    p = AdditionProblem((31, 5, 72, 17))
    for text in (p.prompt, p.trace, "".join(SYMBOLS)):
        assert loaded(text, add_special_tokens=True).input_ids == encode(built, text)  # `plain` adds nothing
        assert loaded.decode(encode(built, text)) == text
    assert (loaded.pad_token_id, loaded.eos_token_id) == (built.pad_token_id, built.eos_token_id)


def test_encode_names_characters_outside_the_vocabulary():
    tok = build_tokenizer()
    assert all(len(encode(tok, c)) == 1 for c in SYMBOLS)
    with pytest.raises(ValueError, match=r"\['y'\]"):
        encode(tok, "1+y=")


# ----- config and recipes -------------------------------------------------------------------------------


def test_quickstart_recipe_is_the_built_in_default():
    assert qs_config.load(REPO / "recipes" / "quickstart.yaml") == qs_config.QuickstartConfig()


def test_collapse_recipe_loads_and_differs_only_in_what_it_says():
    collapse = qs_config.load(REPO / "recipes" / "quickstart_collapse.yaml")
    assert collapse != qs_config.QuickstartConfig()
    assert collapse.rl.reward.correctness.weight == 0  # pure endogenous reward: the collapse is its own


def test_impossible_task_settings_are_user_errors():
    from endo_rl.quickstart.driver import make_quickstart_splits

    with pytest.raises(UserError, match="task.*outside the training range"):
        make_quickstart_splits(qs_config.load(None, ["task.eval_horizons=[7]"]))
    with pytest.raises(UserError, match="task.*only 100 exist"):
        make_quickstart_splits(qs_config.load(None, ["task.eval_horizons=[1]"]))


def test_overrides_lay_over_quickstart_defaults_and_typos_name_the_key():
    cfg = qs_config.load(None, ["rl.train.lr=1e-3"])
    assert cfg.rl.train.lr == 1e-3
    assert cfg.rl.generation.max_new_tokens == qs_config.default_rl().generation.max_new_tokens
    with pytest.raises(UserError, match="did you mean 'rl.train.lr'"):
        qs_config.load(None, ["rl.train.lrr=1e-3"])


# ----- report helpers -----------------------------------------------------------------------------------


def test_error_exponent_recovers_a_power_law_and_refuses_zero_errors():
    from endo_rl.quickstart.plots import error_by_horizon, fit_exponent

    hs = [2, 3, 4, 5, 6]
    assert fit_exponent(hs, [0.01 * h**2 for h in hs]) == pytest.approx(2.0)
    assert fit_exponent(hs, [0.03 * h for h in hs]) == pytest.approx(1.0)
    assert fit_exponent(hs, [0.0, 0.1, 0.2, 0.3, 0.4]) is None
    acc = {"H3_greedy": 0.9, "H2_greedy": 0.95, "H2_sampled": 0.5}
    assert error_by_horizon(acc, "greedy") == ([2, 3], [pytest.approx(0.05), pytest.approx(0.1)])


def test_summary_table_has_mean_and_spread_over_runs(tmp_path):
    from endo_rl.quickstart.summary import load_reports, markdown_table

    for seed, (b, a) in enumerate([(0.5, 0.6), (0.7, 0.7)]):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        report = {
            "before": {"H2_greedy": b},
            "after": {"H2_greedy": a},
            "mean": {"before": b, "after": a},
            "settings": {"seed": seed},
        }
        (run / "report.json").write_text(json.dumps(report))
    table = markdown_table(load_reports([str(tmp_path / "s0"), str(tmp_path / "s1")]))
    assert "| H2_greedy | 60.0 ± 14.1 | 65.0 ± 7.1 | +5.0 ± 7.1 | 50.0 → 60.0 | 70.0 → 70.0 |" in table
    with pytest.raises(UserError, match="report.json does not exist"):
        load_reports([str(tmp_path / "missing")])


# ----- end to end ---------------------------------------------------------------------------------------

TINY = [
    "threads=1",
    "task.eval_horizons=[1,2]",
    "task.train_horizons=[1,2]",
    "task.n_demonstrations=256",
    "task.n_rl_prompts=16",
    "task.n_eval=4",
    "pretrain.steps=5",
    "pretrain.batch_size=16",
    "pretrain.hidden=32",
    "eval.samples=2",
    "rl.eval.every=1",
    "eval.curve_problems=2",
    "rl.train.max_steps=2",
    "rl.train.prompts_per_step=2",
    "rl.train.micro_batch_size=8",
    "rl.algo.group_size=4",
    "rl.generation.max_new_tokens=24",
    "eval.max_new_tokens=24",
]


def test_tiny_quickstart_end_to_end(tmp_path):
    """The CLI as a user runs it: report.json with every set, the table, both plots, metrics and wandb files;
    an existing output dir is refused; the same seed reproduces the run."""
    out = tmp_path / "qs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "endo_rl.quickstart", "--out", str(out), "--seed", "3", *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    sets = {f"H{h}_{m}" for h in (1, 2) for m in ("greedy", "sampled")}
    assert set(report["before"]) == set(report["after"]) == sets
    assert all(0.0 <= v <= 1.0 for tag in ("before", "after") for v in report[tag].values())
    assert report["settings"]["seed"] == 3 and report["split"] == "test"
    assert "mean" in proc.stdout and "H2_sampled" in proc.stdout
    for name in ("error_vs_H.png", "learning_curves.png", "base/config.json", "rl/final/config.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/curve/H1_greedy/accuracy" in rows[0] and "response_length" in rows[1]
    assert any((out / "rl" / "wandb").iterdir())
    # the same output dir again is refused, naming it, instead of mixing two runs
    again = subprocess.run(
        [sys.executable, "-m", "endo_rl.quickstart", "--out", str(out), *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.returncode == 2 and str(out) in again.stderr
    # same seed, another dir: the same pretraining loss, rollout rewards and scores (CPU, one thread)
    twin = tmp_path / "twin"
    rerun = subprocess.run(
        [sys.executable, "-m", "endo_rl.quickstart", "--out", str(twin), "--seed", "3", *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    twin_report = json.loads((twin / "report.json").read_text())
    assert twin_report["pretrain_loss"] == report["pretrain_loss"]
    assert (twin_report["before"], twin_report["after"]) == (report["before"], report["after"])
    twin_rows = [json.loads(line) for line in (twin / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("reward/total") for r in twin_rows] == [r.get("reward/total") for r in rows]
