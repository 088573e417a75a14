"""`endo-rl quickstart [RECIPE] [--out DIR] [--seed N] [key.sub=value ...]`: the paper's story on a CPU.

Follows the CLI's subcommand protocol (`add_arguments(parser)`, `run(args) -> int`); `main` runs it standalone
as `python -m endo_rl.quickstart`.
"""

from __future__ import annotations

import argparse
import os
import sys

from endo_rl.core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="quickstart recipe YAML (default: the built-in settings, the same as recipes/quickstart.yaml)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="e.g. rl.train.lr=1e-3 pretrain.steps=500"
    )
    p.add_argument("--out", default=None, help="output directory (default: outputs/quickstart)")
    p.add_argument(
        "--seed", type=int, default=None, help="seed for data, pretraining, RL and sampling (default 0)"
    )


def run(args: argparse.Namespace) -> int:
    from endo_rl.quickstart import config, driver

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # no recipe given, only overrides
        recipe, overrides = None, [recipe, *overrides]
    if args.out is not None:
        overrides.append(f"output_dir={args.out}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    driver.run(config.load(recipe, overrides))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m endo_rl.quickstart", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"quickstart: error: {err}", file=sys.stderr)
        return 2
