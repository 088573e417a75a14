"""A benchmark problem over the prompt limit is counted wrong (status too_long), never dropped from the
denominator, and reported per benchmark."""

from __future__ import annotations

import json

from conftest import BENCHMARKS

from endo_rl.core import templates
from endo_rl.evaluation.benchmarks import load_benchmark
from endo_rl.evaluation.evaluator import EvalSettings, evaluate


def test_overlong_prompts_are_counted_wrong_and_reported(tiny_model_dir, tmp_path):
    from endo_rl.core.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    problems = load_benchmark("aime24", str(BENCHMARKS))[:4]
    lengths = [len(templates.prompt_ids("qwen25-math-cot", tok, p.question)) for p in problems]
    limit = sorted(lengths)[1]  # the two shortest fit (ties aside), the rest are too long
    too_long = [i for i, n in enumerate(lengths) if n > limit]
    assert too_long and len(too_long) < 4
    settings = EvalSettings(benchmarks=["aime24"], data_dir=str(BENCHMARKS), limit=4, max_new_tokens=3,
                            batch_size=2, max_prompt_length=limit, progress=False)  # fmt: skip
    report = evaluate(model, tok, settings, tmp_path / "ev")
    m = report["benchmarks"]["aime24"]
    assert (m["n"], m["n_completions"], m["n_too_long"]) == (4, 4, len(too_long))
    assert report["settings"]["max_prompt_length"] == limit
    rows = {r["index"]: r for r in report["results"]}
    assert [i for i, r in rows.items() if r["status"] == "too_long"] == too_long
    assert not any(rows[i]["correct"] for i in too_long)
    saved = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()[1:]]
    assert sorted(r["index"] for r in saved if r.get("too_long")) == too_long
    # resumed from the file: the too_long rows are read back, not generated, and the report is the same
    again = evaluate(model, tok, settings, tmp_path / "ev")
    assert again["resumed_completions"] == 4 and again["benchmarks"]["aime24"]["n_too_long"] == len(too_long)


def test_default_limit_is_the_model_context_minus_the_response(tiny_model_dir):
    from endo_rl.core.models import load_causal_lm
    from endo_rl.evaluation.evaluator import prompt_limit

    model = load_causal_lm(str(tiny_model_dir))
    assert (
        prompt_limit(model, EvalSettings(max_new_tokens=1000)) == model.config.max_position_embeddings - 1000
    )
    assert prompt_limit(model, EvalSettings(max_prompt_length=7)) == 7
