"""`endo-rl train RECIPE.yaml [key.sub=value ...]`: RL fine-tuning from a recipe.

Runs as one process (`endo-rl train ...`) or under `accelerate launch -m endo_rl.cli train ...`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="override recipe keys, e.g. train.max_steps=10"
    )


def run(args: argparse.Namespace) -> int:
    from endo_rl.core import config

    cfg = config.load(args.recipe, args.overrides)  # before torch is imported: config errors come fast
    from endo_rl.core.errors import UserError
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
