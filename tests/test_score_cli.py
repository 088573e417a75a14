"""`endo-rl score` as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from endo_rl.reward import text as scoring
from endo_rl.reward.reference import ReferenceModel

ENDO_RL = str(Path(sys.executable).parent / "endo-rl")
PROMPT, RESPONSE = "What is 7 times 6?", "7 times 6 is 42."


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ENDO_RL, *args], capture_output=True, text=True, timeout=300)


def score_json(model_dir: Path, *extra: str) -> dict:
    proc = run_cli(
        "score", "--model", str(model_dir), "--prompt", PROMPT, "--response", RESPONSE, "--json", *extra
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def library_scores(model_dir: Path, prompt_ids: list[int], response_ids: list[int], alpha: float):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return ReferenceModel(model, AutoTokenizer.from_pretrained(model_dir), alpha=alpha).score_each(
        [prompt_ids], [response_ids]
    )[0]


def test_plain_mode_matches_library(tiny_model_dir, qwen_tokenizer):
    out = score_json(tiny_model_dir, "--alpha", "0.5")
    prompt_ids, response_ids = scoring.plain_ids(qwen_tokenizer, PROMPT, RESPONSE)
    assert out["token_ids"] == response_ids
    assert out["tokens"] == [qwen_tokenizer.decode([t]) for t in response_ids]
    want = library_scores(tiny_model_dir, prompt_ids, response_ids, alpha=0.5)
    assert out["token_rewards"] == pytest.approx(want.token_rewards, rel=1e-5, abs=1e-5)
    assert out["logprobs"] == pytest.approx(want.logprobs, rel=1e-5, abs=1e-5)
    assert out["reward"] == pytest.approx(sum(out["token_rewards"]), rel=1e-5, abs=1e-4)
    assert out["alpha"] == 0.5
    assert all(lp <= 0 for lp in out["logprobs"])


def test_chat_mode_scores_the_end_of_turn_tokens(tiny_model_dir, qwen_tokenizer):
    out = score_json(tiny_model_dir, "--chat", "--system", "You are a careful math tutor.")
    prompt_ids, response_ids = scoring.chat_ids(
        qwen_tokenizer, PROMPT, RESPONSE, "You are a careful math tutor."
    )
    assert out["token_ids"] == response_ids
    assert out["tokens"][-2:] == ["<|im_end|>", "\n"]  # the template's end of turn is part of the response
    prompt_text = qwen_tokenizer.decode(prompt_ids)
    assert prompt_text.startswith("<|im_start|>system\nYou are a careful math tutor.")
    assert prompt_text.endswith("<|im_start|>assistant\n")
    want = library_scores(tiny_model_dir, prompt_ids, response_ids, alpha=1.0)
    assert out["reward"] == pytest.approx(want.reward, rel=1e-5, abs=1e-4)
    # the system prompt steers the reward: a different one gives a different score for the same response
    other = score_json(tiny_model_dir, "--chat", "--system", "Answer in French.")
    assert other["token_ids"] == out["token_ids"] and other["reward"] != pytest.approx(out["reward"])


def test_table_and_html(tiny_model_dir, tmp_path):
    page = tmp_path / "tokens.html"
    proc = run_cli(
        "score",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        PROMPT,
        "--response",
        RESPONSE,
        "--html",
        str(page),
    )
    assert proc.returncode == 0, proc.stderr
    assert "reward (sum of token rewards):" in proc.stdout
    n_tokens = len(scoring.plain_ids(AutoTokenizer.from_pretrained(tiny_model_dir), PROMPT, RESPONSE)[1])
    table_rows = [line for line in proc.stdout.splitlines() if line[:4].strip().isdigit()]
    assert len(table_rows) == n_tokens
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "<script" not in text and "http" not in text
    assert text.count('class="t"') == n_tokens
    assert "reward " in text and "logprob " in text  # values on hover


@pytest.fixture(scope="module")
def non_prefix_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A tokenizer whose chat template marks the user turn differently once an assistant turn exists."""
    import shutil

    out = tmp_path_factory.mktemp("non_prefix")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' and messages|length > 1 %}[answered] {% endif %}"
        "{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tok.save_pretrained(out)
    return out


def bad_input_cases(
    tiny_model_dir: Path, non_prefix_dir: Path, tmp_path: Path
) -> list[tuple[list[str], str]]:
    fake_gguf = tmp_path / "model.gguf"
    fake_gguf.write_text("not a gguf")
    base = ["score", "--prompt", PROMPT, "--response", RESPONSE]
    return [
        (
            ["score", "--model", str(tmp_path / "missing"), "--prompt", "a", "--response", "b"],
            f"model path {tmp_path / 'missing'} does not exist",
        ),
        (
            ["score", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--response", ""],
            "--response is empty: there is nothing to score",
        ),
        ([*base, "--model", str(tiny_model_dir), "--alpha", "0"], "--alpha must be > 0, got 0.0"),
        ([*base, "--model", str(tiny_model_dir), "--alpha", "-1"], "--alpha must be > 0, got -1.0"),
        (
            [*base, "--model", str(non_prefix_dir), "--chat"],
            "the chat rendering of the prompt is not a prefix of the rendering of prompt + response",
        ),
        ([*base, "--model", str(fake_gguf)], f"{fake_gguf} is not a GGUF file"),
        ([*base, "--model", str(tiny_model_dir), "--system", "be brief"], "--system needs --chat"),
    ]


def test_bad_input_gives_one_line_and_exit_2(tiny_model_dir, non_prefix_model_dir, tmp_path):
    for args, message in bad_input_cases(tiny_model_dir, non_prefix_model_dir, tmp_path):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
        assert lines[0].startswith("endo-rl score: error: ")


def test_real_small_model_offline(smollm_gguf):
    """SmolLM2-135M-Instruct (GGUF, dequantized) scores a correct answer above a wrong one."""

    def reward(response: str) -> dict:
        proc = run_cli(
            "score",
            "--model",
            str(smollm_gguf),
            "--prompt",
            "What is the capital of France?",
            "--response",
            response,
            "--chat",
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    good = reward("The capital of France is Paris.")
    assert good["tokens"][-2:] == ["<|im_end|>", "\n"]
    assert len(good["token_rewards"]) == len(good["token_ids"]) == len(good["logprobs"])
    bad = reward("The capital of France is Berlin.")
    # same tokens except the city: the reward must prefer the true answer
    assert good["reward"] > bad["reward"]
