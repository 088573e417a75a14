"""`endo-rl` command line. Each subcommand lives in its own module, imported only when it runs.

Every module named in SUBCOMMANDS exposes `add_arguments(parser)` and `run(args) -> int`.
A `UserError` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from endo_rl.core.errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "quickstart": (
        "endo_rl.quickstart.command",
        "the paper's story end to end on a CPU in minutes (no downloads)",
    ),
    "score": ("endo_rl.commands.score", "score a response with the endogenous reward of a model"),
    "tiny-model": (
        "endo_rl.commands.tiny_model",
        "write a tiny random model to try training with (no download)",
    ),
    "train": ("endo_rl.commands.train", "RL fine-tuning (PPO/GRPO) from a YAML recipe"),
    "eval": ("endo_rl.commands.eval", "evaluate a model on math benchmarks"),
    "compare": ("endo_rl.commands.compare", "compare two eval reports (table + bar chart)"),
    "rm-eval": ("endo_rl.commands.rm_eval", "evaluate the endogenous reward as a reward model (RM-Bench)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad flags already; keep its message to one line plus usage."""


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = _Parser(prog="endo-rl", description="RL fine-tuning with endogenous rewards.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only import the module that runs: keeps `--help` and start-up fast
            importlib.import_module(module_name).add_arguments(sp)
    return parser, chosen


class _DropDeepSpeedCpuNotice(logging.Filter):
    """DeepSpeed logs "Setting accelerator to CPU ..." to stdout whenever it is imported without a GPU."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Setting accelerator to CPU" not in record.getMessage()


def quiet_libraries(argv: list[str]) -> None:
    """Before any library is imported: no DeepSpeed CPU notice on stdout; --no-progress also silences the
    transformers/huggingface_hub bars ("Loading weights", "Writing model shards")."""
    ds_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropDeepSpeedCpuNotice) for f in ds_logger.filters):
        ds_logger.addFilter(_DropDeepSpeedCpuNotice())
    if "--no-progress" in argv:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_libraries(argv)
    parser, chosen = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"endo-rl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
