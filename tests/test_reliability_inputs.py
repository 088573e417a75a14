"""Bad input table: each row is a real `python -m endo_rl.cli ...` subprocess, the exact one-line message it
must print on stderr, and exit code 2 (no traceback).

The rows run concurrently (a module fixture) so the table stays fast; most fail before any model loads. More
cases per command: tests/test_cfg_loader.py (config errors in process), tests/test_train_data.py (data files),
tests/test_score_cli.py, tests/test_eval_cli.py and tests/test_rm_eval_cli.py (their own flags).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import BENCHMARKS

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/debug/tiny_cpu.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
BENCH_NAMES = "math500, minerva_math, olympiadbench, aime24, amc23, gsm8k, math"

# name -> (argv with {placeholders}, exact last stderr line after "endo-rl CMD: error: ")
CASES: dict[str, tuple[list[str], str]] = {
    # --- config keys and types
    "misspelled key": (
        ["train", RECIPE, "train.max_step=3"],
        "unknown config key 'train.max_step'; did you mean 'train.max_steps'?",
    ),
    "misspelled section in the YAML": (
        ["train", "{typo_yaml}"],
        "unknown config key 'trian'; did you mean 'train'?",
    ),
    "unknown key with no close match": (
        ["train", RECIPE, "algo.zzz=1"],
        "unknown config key 'algo.zzz'; valid keys: algo.clip_eps, algo.group_size, algo.grpo, "
        "algo.kl_coef, algo.kl_mode, algo.loss_agg, algo.name, algo.ppo, algo.ppo_epochs, algo.truncation",
    ),
    "a key that moved (command line)": (
        ["train", RECIPE, "algo.gamma=0.9"],
        "config key 'algo.gamma' (on the command line) has moved: write 'algo.ppo.gamma' instead",
    ),
    "float given a word": (["train", RECIPE, "train.lr=fast"], "config key 'train.lr': expected float, got str 'fast'"),
    "int given a float": (
        ["train", RECIPE, "train.max_steps=1.5"],
        "config key 'train.max_steps': expected int, got float 1.5",
    ),
    "choice not among the options": (
        ["train", RECIPE, "algo.name=dpo"],
        "config key 'algo.name': expected one of ['ppo', 'grpo'], got 'dpo'",
    ),
    "alpha = 0": (["train", RECIPE, "reward.endogenous.alpha=0"], "config key 'reward.endogenous.alpha' must be > 0, got 0.0"),
    "alpha < 0": (["train", RECIPE, "reward.endogenous.alpha=-0.5"], "config key 'reward.endogenous.alpha' must be > 0, got -0.5"),
    "batch not divisible by group x micro-batch": (
        ["train", RECIPE, "train.prompts_per_step=3", "train.micro_batch_size=4"],
        "train.prompts_per_step x algo.group_size = 3 x 2 = 6 sequences per step is not divisible by "
        "world size x train.micro_batch_size = 1 x 4 = 4",
    ),
    "GRPO group of one": (
        ["train", RECIPE, "algo.name=grpo", "algo.group_size=1"],
        "config key 'algo.group_size' must be >= 2 for GRPO, got 1",
    ),
    "recipe missing": (["train", "{tmp}/nope.yaml"], "config file {tmp}/nope.yaml does not exist"),
    "recipe not YAML": (
        ["train", "{broken_yaml}"],
        "config file {broken_yaml} line 3: invalid YAML (expected the node content, but found '<stream end>')",
    ),
    # --- model and tokenizer paths
    "model path not set": (
        ["train", RECIPE, "output_dir={tmp}/o1"],
        "config key 'model.path' is empty: set it to a model directory, .gguf file or Hub id "
        "(`endo-rl tiny-model DIR` makes a tiny random one to try things with)",
    ),
    "model path missing": (
        ["train", RECIPE, "output_dir={tmp}/o2", "model.path={tmp}/missing"],
        "model path {tmp}/missing does not exist (expected a model directory, a .gguf file or a Hub id)",
    ),
    "model dir without tokenizer files": (
        ["train", RECIPE, "output_dir={tmp}/o3", "model.path={empty_dir}"],
        "tokenizer directory {empty_dir} has none of tokenizer.json, tokenizer_config.json, vocab.json, "
        "tokenizer.model",
    ),
    "model path is a plain file": (
        ["train", RECIPE, "output_dir={tmp}/o4", "model.path={tiny}/config.json"],
        "model path {tiny}/config.json is a file; expected a model directory or a .gguf file",
    ),
    "tokenizer path missing": (
        ["train", RECIPE, "output_dir={tmp}/o5", "model.path={tiny}", "model.tokenizer={tmp}/no_tok"],
        "model path {tmp}/no_tok does not exist (expected a model directory, a .gguf file or a Hub id)",
    ),
    "a .gguf file that is not one": (
        ["train", RECIPE, "output_dir={tmp}/o6", "model.path={fake_gguf}"],
        "{fake_gguf} is not a GGUF file (its first bytes are b'not ', expected b'GGUF')",
    ),
    "tokenizer/model vocab mismatch": (
        ["train", RECIPE, "output_dir={tmp}/o7", "model.path={small_vocab}"],
        "tokenizer has 151936 tokens but the policy's output layer has 1000 rows: tokenizer and model do not match",
    ),
    # --- data
    "data file missing": (
        ["train", RECIPE, "output_dir={tmp}/d1", "model.path={tiny}", "data.train={tmp}/missing.jsonl"],
        "data.train: '{tmp}/missing.jsonl' does not exist (expected a JSONL file, a directory or a Hub id)",
    ),
    "data dir without train.jsonl": (
        ["train", RECIPE, "output_dir={tmp}/d2", "model.path={tiny}", "data.train={empty_dir}"],
        "data.train: directory {empty_dir} has no train.jsonl",
    ),
    "malformed JSONL names file and line": (
        ["train", RECIPE, "output_dir={tmp}/d3", "model.path={tiny}", "data.train={bad_jsonl}"],
        "{bad_jsonl}, line 2: not valid JSON (Expecting value)",
    ),
    "JSONL row that is not an object": (
        ["train", RECIPE, "output_dir={tmp}/d4", "model.path={tiny}", "data.train={list_jsonl}"],
        "{list_jsonl}, line 1: expected a JSON object, got list",
    ),
    "JSONL that is not UTF-8": (
        ["train", RECIPE, "output_dir={tmp}/d5", "model.path={tiny}", "data.train={latin1_jsonl}"],
        "{latin1_jsonl}, line 2: not UTF-8 text (byte 0xe9)",
    ),
    "empty dataset": (
        ["train", RECIPE, "output_dir={tmp}/d6", "model.path={tiny}", "data.train={empty_jsonl}"],
        "data.train: {empty_jsonl} holds no rows",
    ),
    "prompt field missing": (
        ["train", RECIPE, "output_dir={tmp}/d7", "model.path={tiny}", "data.prompt_field=question"],
        "recipes/debug/arithmetic.jsonl, line 1: no field 'question' (set by data.prompt_field); "
        "fields: problem, solution",
    ),
    "prompt longer than the limit, strict": (
        ["train", RECIPE, "output_dir={tmp}/d8", "model.path={tiny}", "data.max_prompt_length=16", "data.overlong=error"],
        "recipes/debug/arithmetic.jsonl, line 1: prompt is 36 tokens, over data.max_prompt_length=16 "
        "(data.overlong=drop skips such prompts and counts them)",
    ),
    "every prompt longer than the limit": (
        ["train", RECIPE, "output_dir={tmp}/d8b", "model.path={tiny}", "data.max_prompt_length=16"],
        "data.train: every prompt is too long: dropped 12 of 12 prompts over 16 tokens "
        "(data.max_prompt_length; first: recipes/debug/arithmetic.jsonl, line 1)",
    ),
    "unknown template": (
        ["train", RECIPE, "output_dir={tmp}/d9", "model.path={tiny}", "data.template=nope"],
        "unknown template 'nope'; valid templates: qwen25-math-cot, chat-cot, plain",
    ),
    # --- output dir
    "output dir under a file (before any model loads)": (
        ["train", RECIPE, "output_dir={blocker}/run", "model.path={tmp}/never_loaded"],
        "output_dir {blocker}/run is not writable: Not a directory",
    ),
    "output dir of a finished run without resume": (
        ["train", RECIPE, "output_dir={finished}", "model.path={tmp}/never_loaded"],
        "output_dir {finished} already holds checkpoints: set resume=true to continue that run, "
        "or choose another output_dir",
    ),
    # --- values out of range, caught when the config loads (issue 15: each used to crash or train on nonsense)
    "lr = nan": (["train", RECIPE, "train.lr=nan"], "config key 'train.lr' must be a number in (0, 1], got nan"),
    "lr < 0": (["train", RECIPE, "train.lr=-1"], "config key 'train.lr' must be a number in (0, 1], got -1.0"),
    "lr = inf": (["train", RECIPE, "train.lr=.inf"], "config key 'train.lr' must be a number in (0, 1], got inf"),
    "max_grad_norm = nan": (
        ["train", RECIPE, "train.max_grad_norm=.nan"],
        "config key 'train.max_grad_norm' must be a finite number > 0, got nan",
    ),
    "negative temperature": (
        ["train", RECIPE, "generation.temperature=-1"],
        "config key 'generation.temperature' must be a finite number >= 0 (0: greedy), got -1.0",
    ),
    "max_new_tokens = 0": (
        ["train", RECIPE, "generation.max_new_tokens=0"],
        "config key 'generation.max_new_tokens' must be an integer >= 1, got 0",
    ),
    "negative warm-up": (["train", RECIPE, "train.warmup_steps=-5"], "config key 'train.warmup_steps' must be an integer >= 0, got -5"),
    "negative KL coefficient": (["train", RECIPE, "algo.kl_coef=-1"], "config key 'algo.kl_coef' must be a finite number >= 0, got -1.0"),
    "clip_eps = 0": (["train", RECIPE, "algo.clip_eps=0"], "config key 'algo.clip_eps' must be a finite number > 0, got 0.0"),
    "top_p > 1": (["train", RECIPE, "generation.top_p=1.5"], "config key 'generation.top_p' must be a number in (0, 1], got 1.5"),
    "gamma > 1": (["train", RECIPE, "algo.ppo.gamma=2"], "config key 'algo.ppo.gamma' must be a number in [0, 1], got 2.0"),
    "lambda < 0": (["train", RECIPE, "algo.ppo.lam=-1"], "config key 'algo.ppo.lam' must be a number in [0, 1], got -1.0"),
    "alpha = nan": (
        ["train", RECIPE, "reward.endogenous.alpha=nan"],
        "config key 'reward.endogenous.alpha' must be a finite number > 0, got nan",
    ),
    "GRPO with greedy rollouts": (
        ["train", RECIPE, "algo.name=grpo", "generation.temperature=0"],
        "algo.name=grpo with generation.temperature=0 samples the same response for every member of a group, "
        "so every advantage is 0 and nothing is learned; set generation.temperature > 0",
    ),
    "recipe with a section given twice": (
        ["train", "{dup_yaml}"],
        "config file {dup_yaml} line 5: key 'train' is given twice in the same section (the second would "
        "silently replace the first); merge them",
    ),
    "recipe not UTF-8": (["train", "{latin1_yaml}"], "config file {latin1_yaml}: not UTF-8 text (byte 0xe9)"),
    "recipe path is a directory": (["train", "{empty_dir}"], "config file {empty_dir} is a directory; expected a YAML recipe file"),
    "output_dir is a file": (
        ["train", RECIPE, "output_dir={blocker}", "model.path={tmp}/never_loaded"],
        "output_dir {blocker} is a file, not a directory",
    ),
    "output_dir in use by a live run": (
        ["train", RECIPE, "output_dir={locked}", "model.path={tmp}/never_loaded"],
        "output_dir {locked} is in use by another run (pid {live_pid}, lock file {locked}/.lock): wait for it "
        "to finish or choose another output_dir",
    ),
    "a null prompt": (
        ["train", RECIPE, "output_dir={tmp}/d10", "model.path={tiny}", "data.train={null_jsonl}"],
        "{null_jsonl}, line 2: field 'problem' (set by data.prompt_field) is null; expected text",
    ),
    "a null answer": (
        ["train", RECIPE, "output_dir={tmp}/d11", "model.path={tiny}", "data.train={null_answer_jsonl}"],
        "{null_answer_jsonl}, line 1: field 'solution' (set by data.answer_field) is null; expected text",
    ),
    # --- bad numbers during training
    "NaN in the loss stops at step 1": (
        ["train", RECIPE, "output_dir={tmp}/n1", "model.path={tiny}", "algo.ppo.vf_coef=.nan", "train.max_steps=1"],
        "non-finite values (NaN/Inf) in loss at step 1; set train.on_nonfinite=skip to skip such steps; "
        "last good checkpoint: (none)",
    ),
    # --- score, eval, rm-eval
    "score: vocab mismatch": (
        ["score", "--model", "{small_vocab}", "--prompt", "1+1?", "--response", "2"],
        "tokenizer has 151936 tokens but the model's output layer has 1000 rows: tokenizer and model do not match",
    ),
    "score: tokenizer dir missing": (
        ["score", "--model", "{tiny}", "--tokenizer", "{tmp}/no_tok", "--prompt", "a", "--response", "b"],
        "model path {tmp}/no_tok does not exist (expected a model directory, a .gguf file or a Hub id)",
    ),
    "eval: benchmark that does not exist": (
        ["eval", "--model", "{tiny}", "--benchmarks", "math500,math5000", "--out", "{tmp}/e1.json"],
        f"unknown benchmark 'math5000'; valid names: {BENCH_NAMES}",
    ),
    "eval: greedy with several samples": (
        ["eval", "--model", "{tiny}", "--n-samples", "4", "--out", "{tmp}/e2.json"],
        "n_samples=4 with temperature 0 draws the same greedy answer each time",
    ),
    "eval: --out under a file": (
        ["eval", "--model", "{tiny}", "--out", "{blocker}/r.json"],
        "--out {blocker}/r.json: {blocker} is a file, not a directory",
    ),
    "eval: .gguf that is not one": (
        ["eval", "--model", "{fake_gguf}", "--benchmarks", "aime24", "--data-dir", "{bench}", "--out", "{tmp}/e3.json"],
        "{fake_gguf} is not a GGUF file (its first bytes are b'not ', expected b'GGUF')",
    ),
    "eval: predictions index out of range": (
        ["eval", "--predictions", "{far_preds}", "--data-dir", "{bench}", "--out", "{tmp}/e4.json"],
        "{far_preds}, line 1: aime24 has 30 rows, index 99 is out of range",
    ),
    "rm-eval: alpha = 0": (
        ["rm-eval", "--model", "{tiny}", "--data", "{bad_jsonl}", "--alpha", "0", "--out", "{tmp}/rm.json"],
        "--alpha must be > 0, got 0.0",
    ),
    "eval: --batch-size 0": (
        ["eval", "--model", "{tiny}", "--benchmarks", "aime24", "--data-dir", "{bench}", "--batch-size", "0", "--out", "{tmp}/e5.json"],
        "batch_size must be >= 1, got 0",
    ),
    "eval: negative grading timeout": (
        ["eval", "--predictions", "{ok_preds}", "--data-dir", "{bench}", "--grading-timeout", "-1", "--out", "{tmp}/e6.json"],
        "grading timeout must be a number of seconds > 0, got -1.0",
    ),
    "eval: empty benchmark file": (
        ["eval", "--predictions", "{ok_preds}", "--data-dir", "{empty_bench}", "--out", "{tmp}/e7.json"],
        "benchmark aime24: {empty_bench}/aime24/test.jsonl holds no problems",
    ),
    "eval: predictions sample that is not a number": (
        ["eval", "--predictions", "{bad_sample_preds}", "--data-dir", "{bench}", "--out", "{tmp}/e8.json"],
        "{bad_sample_preds}, line 1: sample must be a non-negative integer, got 'a'",
    ),
    "eval: a predictions row given twice": (
        ["eval", "--predictions", "{dup_preds}", "--data-dir", "{bench}", "--out", "{tmp}/e9.json"],
        "{dup_preds}, line 2: repeats benchmark aime24, index 0, sample 0 of line 1",
    ),
    "eval: offline without --data-dir": (
        ["eval", "--model", "{tiny}", "--benchmarks", "aime24", "--limit", "1", "--out", "{tmp}/e10.json"],
        "benchmark aime24: no --data-dir given and HF_HUB_OFFLINE is set, so the Hub dataset "
        "HuggingFaceH4/aime_2024 cannot be loaded; pass --data-dir DIR with DIR/<name>/test.jsonl",
    ),
    "score: alpha = nan": (
        ["score", "--model", "{tiny}", "--prompt", "a", "--response", "b", "--alpha", "nan"],
        "--alpha must be > 0, got nan",
    ),
    "score: --html under a file": (
        ["score", "--model", "{tiny}", "--prompt", "a", "--response", "b", "--html", "{blocker}/s.html"],
        "--html {blocker}/s.html: {blocker} is a file, not a directory",
    ),
    "compare: --png under a file": (
        ["compare", "{report}", "{report}", "--png", "{blocker}/c.png"],
        "--png {blocker}/c.png: {blocker} is a file, not a directory",
    ),
    "rm-eval: --out under a file (before the model loads)": (
        ["rm-eval", "--model", "{tmp}/never_loaded", "--data", "{bad_jsonl}", "--out", "{blocker}/rm.json"],
        "--out {blocker}/rm.json: {blocker} is a file, not a directory",
    ),
    "rm-eval: --out not .json": (
        ["rm-eval", "--model", "{tiny}", "--data", "{bad_jsonl}", "--out", "{tmp}/rm.txt"],
        "--out {tmp}/rm.txt must end in .json",
    ),
}  # fmt: skip
if not torch.cuda.is_available():  # a CPU-only torch: asking for CUDA is a user error
    CASES["score: --device cuda without CUDA"] = (
        ["score", "--model", "{tiny}", "--prompt", "a", "--response", "b", "--device", "cuda"],
        f"--device cuda: this torch has no CUDA device available (torch {torch.__version__})",
    )


def small_vocab_qwen():
    """A tiny Qwen2 whose LM head has 1000 rows: too few for the Qwen2.5 tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=1000, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return Qwen2ForCausalLM(cfg)


def make_files(tmp: Path, tiny: Path) -> dict[str, str]:
    files = {"tmp": tmp, "tiny": tiny, "bench": BENCHMARKS}
    (tmp / "typo.yaml").write_text("trian:\n  lr: 1\n")
    (tmp / "broken.yaml").write_text("train:\n  lr: [1,\n")
    (tmp / "empty").mkdir()
    (tmp / "model.gguf").write_text("not a gguf")
    (tmp / "bad.jsonl").write_text('{"problem": "1+1?"}\n{"problem": oops}\n')
    (tmp / "list.jsonl").write_text("[1, 2]\n")
    (tmp / "latin1.jsonl").write_bytes('{"problem": "1+1?"}\n{"problem": "café"}\n'.encode("latin-1"))
    (tmp / "empty.jsonl").write_text("\n\n")
    (tmp / "blocker").write_text("a file where a directory should be")
    (tmp / "finished" / "checkpoints" / "step-2").mkdir(parents=True)
    (tmp / "finished" / "checkpoints" / "step-2" / "trainer_state.json").write_text("{}")
    (tmp / "far.jsonl").write_text('{"benchmark": "aime24", "index": 99, "completion": "\\\\boxed{1}"}\n')
    (tmp / "dup.yaml").write_text("train:\n  lr: 1.0e-3\nalgo:\n  name: ppo\ntrain:\n  max_steps: 3\n")
    (tmp / "latin1.yaml").write_bytes("train:\n  lr: 1.0e-3  # café\n".encode("latin-1"))
    (tmp / "locked").mkdir()
    (tmp / "locked" / ".lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")  # this test process
    (tmp / "null.jsonl").write_text(
        '{"problem": "1+1?", "solution": "2"}\n{"problem": null, "solution": "3"}\n'
    )
    (tmp / "null_answer.jsonl").write_text('{"problem": "1+1?", "solution": null}\n')
    (tmp / "empty_bench" / "aime24").mkdir(parents=True)
    (tmp / "empty_bench" / "aime24" / "test.jsonl").write_text("")
    (tmp / "ok.jsonl").write_text('{"benchmark": "aime24", "index": 0, "completion": "\\\\boxed{1}"}\n')
    (tmp / "bad_sample.jsonl").write_text(
        '{"benchmark": "aime24", "index": 0, "sample": "a", "completion": "x"}\n'
    )
    (tmp / "dup_preds.jsonl").write_text(
        '{"benchmark": "aime24", "index": 0, "sample": 0, "completion": "x"}\n' * 2
    )
    (tmp / "report.json").write_text(json.dumps({"benchmarks": {"aime24": {"accuracy": 0.0, "n": 30}}}))
    small = tmp / "small_vocab"
    small_vocab_qwen().save_pretrained(small)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special", "added", "chat_template")):
            (small / f.name).write_bytes(f.read_bytes())
    files.update(
        typo_yaml=tmp / "typo.yaml",
        broken_yaml=tmp / "broken.yaml",
        empty_dir=tmp / "empty",
        fake_gguf=tmp / "model.gguf",
        bad_jsonl=tmp / "bad.jsonl",
        list_jsonl=tmp / "list.jsonl",
        latin1_jsonl=tmp / "latin1.jsonl",
        empty_jsonl=tmp / "empty.jsonl",
        blocker=tmp / "blocker",
        finished=tmp / "finished",
        far_preds=tmp / "far.jsonl",
        small_vocab=small,
        dup_yaml=tmp / "dup.yaml",
        latin1_yaml=tmp / "latin1.yaml",
        locked=tmp / "locked",
        live_pid=os.getpid(),
        null_jsonl=tmp / "null.jsonl",
        null_answer_jsonl=tmp / "null_answer.jsonl",
        empty_bench=tmp / "empty_bench",
        ok_preds=tmp / "ok.jsonl",
        bad_sample_preds=tmp / "bad_sample.jsonl",
        dup_preds=tmp / "dup_preds.jsonl",
        report=tmp / "report.json",
    )
    return {k: str(v) for k, v in files.items()}


def run_cli(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "endo_rl.cli", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
        cwd=REPO,
    )
    return proc.returncode, proc.stderr


# One process runs every row through the CLI's main(), each with its own stderr: the same code path as
# `python -m endo_rl.cli` without paying torch's import per row (the slow test runs one process per row).
DRIVER = """
import contextlib, io, json, sys, traceback
from endo_rl.cli import main
out = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        except BaseException:
            traceback.print_exc()
            rc = 1
    out.append([rc, err.getvalue()])
print("RESULTS " + json.dumps(out))
"""


def run_in_one_process(argvs: list[list[str]]) -> list[tuple[int, str]]:
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=900,
        env=ENV,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS "))
    return [tuple(r) for r in json.loads(line.removeprefix("RESULTS "))]


def expand(files: dict[str, str]) -> dict[str, tuple[list[str], str]]:
    return {
        name: ([a.format(**files) for a in argv], f"endo-rl {argv[0]}: error: " + message.format(**files))
        for name, (argv, message) in CASES.items()
    }


def check(rc: int, stderr: str, expected: str) -> None:
    """Exit 2, no traceback, and exactly one error line: the expected one (progress bars may surround it)."""
    assert rc == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [part for line in stderr.splitlines() for part in line.split("\r")]
    assert [line for line in lines if ": error: " in line] == [expected], stderr[-3000:]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir) -> dict[str, str]:
    return make_files(tmp_path_factory.mktemp("bad_input"), tiny_model_dir)


@pytest.fixture(scope="module")
def in_one_process(files) -> dict[str, tuple[int, str]]:
    jobs = expand(files)
    return dict(zip(jobs, run_in_one_process([argv for argv, _ in jobs.values()])))


def test_the_table_has_at_least_70_cases():
    assert len(CASES) >= 70


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_its_exact_message_and_exit_2(in_one_process, files, name):
    check(*in_one_process[name], expand(files)[name][1])


@pytest.mark.slow
def test_bad_input_each_row_as_its_own_process(files):
    """The whole table again, one real `python -m endo_rl.cli` process per row (4 at a time)."""
    jobs = expand(files)
    with ThreadPoolExecutor(4) as pool:
        done = {name: pool.submit(run_cli, argv) for name, (argv, _) in jobs.items()}
        for name, future in done.items():
            check(*future.result(), jobs[name][1])
