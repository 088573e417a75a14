"""Bad input table: each row is a real `python -m endo_rl.cli ...` subprocess, the exact one-line message it
must print on stderr, and exit code 2 (no traceback).

The rows run concurrently (a module fixture) so the table stays fast; most fail before any model loads. More
cases per command: tests/test_cfg_loader.py (config errors in process), tests/test_train_data.py (data files),
tests/test_score_cli.py, tests/test_eval_cli.py and tests/test_rm_eval_cli.py (their own flags).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
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
        "algo.kl_coef, algo.kl_mode, algo.loss_agg, algo.name, algo.ppo, algo.ppo_epochs",
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
        "model path is empty: set model.path (or --model) to a directory, .gguf file or Hub id",
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
    "prompt longer than the limit": (
        ["train", RECIPE, "output_dir={tmp}/d8", "model.path={tiny}", "data.max_prompt_length=16"],
        "recipes/debug/arithmetic.jsonl, line 1: prompt is 36 tokens, over data.max_prompt_length=16",
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
    "rm-eval: --out not .json": (
        ["rm-eval", "--model", "{tiny}", "--data", "{bad_jsonl}", "--out", "{tmp}/rm.txt"],
        "--out {tmp}/rm.txt must end in .json",
    ),
}  # fmt: skip


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


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25


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


def test_disk_full_while_saving_exits_2_naming_the_checkpoint(tiny_model_dir, tmp_path):
    """The CLI's main() with torch.save failing ENOSPC inside step 2's save (a fault hook in the child)."""
    out = tmp_path / "run"
    child = f"""
import errno, os, sys, torch
real = torch.save
def full(obj, f, *a, **k):
    if ".tmp-step-2" in str(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return real(obj, f, *a, **k)
torch.save = full
from endo_rl.cli import main
sys.exit(main(["train", "{RECIPE}", "model.path={tiny_model_dir}", "output_dir={out}", "train.max_steps=3"]))
"""
    proc = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO
    )
    root = out / "checkpoints"
    check(
        proc.returncode,
        proc.stderr,
        f"endo-rl train: error: cannot write checkpoint {root / 'step-2'}: No space left on device; "
        f"the previous checkpoint {root / 'step-1'} is intact and resume=true continues from it",
    )
    assert sorted(p.name for p in root.iterdir()) == ["step-1"]
