"""Benchmark loaders on ../shared/benchmarks: every row read, a gold answer for each, where it lives."""

from __future__ import annotations

import json

import pytest
from conftest import BENCHMARKS

from endo_rl.core.answers import last_boxed
from endo_rl.core.errors import UserError
from endo_rl.core.jsonl import read_jsonl
from endo_rl.evaluation.benchmarks import SPECS, load_benchmark, parse_names

SIZES = {
    "math500": 500,
    "minerva_math": 272,
    "olympiadbench": 675,
    "aime24": 30,
    "amc23": 40,
    "gsm8k": 1319,
    "math": 5000,
}


@pytest.mark.parametrize("name", list(SIZES))
def test_loader_reads_every_row_with_a_gold_answer(name):
    problems = load_benchmark(name, BENCHMARKS)
    assert len(problems) == SIZES[name]
    assert [p.index for p in problems] == list(range(SIZES[name]))
    assert all(p.question.strip() and p.gold.strip() for p in problems)
    assert not any(p.gold.startswith("$") or p.gold.startswith("\\boxed") for p in problems)


def test_every_benchmark_has_a_size():
    assert set(SIZES) == set(SPECS)


@pytest.mark.parametrize(
    "name, index, gold",
    [
        ("math500", 0, "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("aime24", 0, "204"),
        ("aime24", 7, "025"),  # leading zero kept; grading makes it 25
        ("amc23", 0, "27"),  # stored as the float 27.0
        ("gsm8k", 0, "18"),
        ("olympiadbench", 0, "2"),
        ("olympiadbench", 13, "69,84"),  # '$69$,$84$': two answers in one list element
        ("olympiadbench", 5, "(1,8,19), (2,7,13), (4,5,7)"),
    ],
)
def test_gold_answers_come_from_the_right_field(name, index, gold):
    assert load_benchmark(name, BENCHMARKS)[index].gold == gold


@pytest.mark.parametrize("name", ["minerva_math", "math"])
def test_gold_is_the_last_boxed_of_the_solution(name):
    rows = [row for _, row in read_jsonl(BENCHMARKS / name / "test.jsonl")]
    problems = load_benchmark(name, BENCHMARKS)
    assert all((p.raw_gold or p.gold) == last_boxed(r["solution"]) for p, r in zip(problems, rows))


def test_hand_overrides_replace_the_gold_and_keep_the_original():
    problems = load_benchmark("minerva_math", BENCHMARKS)
    assert problems[5].raw_gold == "np.arcsin(10/13)" and problems[5].gold == "\\arcsin(10/13)"
    assert problems[0].raw_gold == ""  # not overridden


def test_gsm8k_gold_drops_thousands_separators():
    golds = [p.gold for p in load_benchmark("gsm8k", BENCHMARKS)]
    assert "," not in "".join(golds)
    assert all(g.lstrip("-").replace(".", "", 1).isdigit() for g in golds)


def test_unknown_benchmark_names_it_and_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown benchmark 'math5000'.*math500, minerva_math"):
        parse_names("math500,math5000")
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        load_benchmark("nope", BENCHMARKS)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "aime24").mkdir()
    path = tmp_path / "aime24" / "test.jsonl"
    path.write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n\n{oops\n")
    with pytest.raises(UserError, match=r"aime24/test\.jsonl, line 3: not valid JSON"):
        load_benchmark("aime24", tmp_path)


def test_row_without_gold_names_file_and_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": "q1", "answer": "x #### 3"}, {"question": "q2", "answer": "no marker"}]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"line 2: benchmark gsm8k row has no gold answer"):
        load_benchmark("gsm8k", tmp_path)


def test_missing_benchmark_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"math500/test\.jsonl does not exist"):
        load_benchmark("math500", tmp_path)


@pytest.mark.parametrize(
    "text, boxed",
    [
        ("first \\boxed{1} then \\boxed{2}", "2"),  # the last one, as the harness does
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("so $\\boxed 7$.", "7"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed{3} and a cut-off \\boxed{\\frac{1}{", None),
        ("no box at all: 42", None),
        ("\\boxed{}", None),
    ],
)
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


# --- prompt templates and stop tokens ---


def test_qwen_stop_tokens_are_endoftext_and_im_end(qwen_tokenizer):
    from endo_rl.core.templates import stop_token_ids

    assert stop_token_ids(qwen_tokenizer) == [151643, 151645]


def test_qwen25_math_cot_is_the_pinned_chatml_prompt(qwen_tokenizer):
    from endo_rl.core.templates import prompt_ids

    question = "What is $\\frac{1}{2} + \\frac{1}{2}$?"
    ids = prompt_ids("qwen25-math-cot", qwen_tokenizer, question)
    assert qwen_tokenizer.decode(ids) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    # Qwen's own chat template renders the same tokens, so base and chat models see one prompt
    assert prompt_ids("chat-cot", qwen_tokenizer, question) == ids
    assert prompt_ids("plain", qwen_tokenizer, question) == qwen_tokenizer(question).input_ids


def test_unknown_template_lists_valid_ones(qwen_tokenizer):
    from endo_rl.core.templates import prompt_ids

    with pytest.raises(UserError, match="unknown template 'cot'.*qwen25-math-cot, chat-cot, plain"):
        prompt_ids("cot", qwen_tokenizer, "q")
