"""`endo-rl train RECIPE.yaml [key.sub=value ...]`: RL fine-tuning from a recipe.

Runs as one process (`endo-rl train ...`), or as several (DDP; on CPU over gloo):
    torchrun --nproc_per_node 2 -m endo_rl.cli train RECIPE.yaml ...
    accelerate launch --multi_gpu --num_processes 2 -m endo_rl.cli train RECIPE.yaml ...   (also on CPU)
    accelerate launch --config_file launch/accelerate/zero3.yaml -m endo_rl.cli train RECIPE.yaml ...
`accelerate launch --cpu --num_processes N` starts ONE process whatever N is (accelerate's CPU launcher), so
it is refused here rather than silently training on one process.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from endo_rl.core.errors import UserError

EPILOG = """examples:
  endo-rl tiny-model /tmp/tiny        # a tiny random model to try things with (no download)
  endo-rl train recipes/debug/tiny_cpu.yaml model.path=/tmp/tiny output_dir=/tmp/run
  endo-rl train recipes/debug/tiny_cpu.yaml model.path=/tmp/tiny output_dir=/tmp/run resume=true train.max_steps=4
  torchrun --nproc_per_node 2 -m endo_rl.cli train recipes/debug/tiny_gpu.yaml model.path=/tmp/tiny ...

Every key of the schema (endo_rl/core/config.py) can be overridden as key.sub=value; the resolved config is
saved as OUTPUT_DIR/config.yaml. Outputs: OUTPUT_DIR/checkpoints/step-N, metrics.jsonl, curves.png, final/.
Exit code 2 means bad input (the message names it); resume=true continues from the newest intact checkpoint."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("recipe", help="YAML recipe (see recipes/; each opens with its launch line)")
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="override recipe keys, e.g. train.max_steps=10"
    )


def check_launcher() -> None:
    """Refuse `accelerate launch --cpu --num_processes N>1`, which runs a single process (accelerate 1.x)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true") or "WORLD_SIZE" in os.environ:
        return
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # not Linux: nothing to inspect
        return
    text = " ".join(parent)
    found = re.search(r"--num[_-]processes[= ](\d+)", text)
    if "launch" in text and found and int(found.group(1)) > 1:
        n = found.group(1)
        raise UserError(
            f"`accelerate launch --cpu --num_processes {n}` starts only one process; for {n} CPU processes use "
            f"`torchrun --nproc_per_node {n} -m endo_rl.cli train ...` or "
            f"`accelerate launch --multi_gpu --num_processes {n} -m endo_rl.cli train ...` (works without GPUs)"
        )


def run(args: argparse.Namespace) -> int:
    from endo_rl.core import config

    cfg = config.load(args.recipe, args.overrides)  # before torch is imported: config errors come fast
    if not cfg.model.path:
        raise UserError(
            "config key 'model.path' is empty: set it to a model directory, .gguf file or Hub id "
            "(`endo-rl tiny-model DIR` makes a tiny random one to try things with)"
        )
    check_launcher()
    from endo_rl.rl import checkpoint
    from endo_rl.rl.trainer import NonFiniteError
    from endo_rl.rl.trainer import run as train

    try:
        final = train(cfg)
    except NonFiniteError as err:  # one line and exit 2, naming the checkpoint to resume from
        last = checkpoint.latest_checkpoint(cfg.output_dir)
        raise UserError(f"{err}; last good checkpoint: {last or '(none)'}") from err
    print(f"final policy: {final}")
    return 0
