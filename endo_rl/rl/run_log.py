"""Where training metrics go: OUTPUT_DIR/metrics.jsonl, wandb, and PNG curves at the end.

wandb runs offline (files under OUTPUT_DIR/wandb, sync later with `wandb sync`) unless WANDB_API_KEY is set or
WANDB_MODE says otherwise. The wandb run id is kept in OUTPUT_DIR/wandb_run_id so a resumed run continues the
same wandb run; metrics.jsonl lines past the resumed checkpoint's step are dropped, so the file never holds
two versions of a step. Only the main process writes.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

from endo_rl.core.config import LoggingConfig
from endo_rl.core.errors import UserError

PLOTTED = (
    "loss",
    "reward/total",
    "reward/endogenous",
    "reward/correctness",
    "reward/length_penalty",
    "kl",
    "entropy",
    "response_length",
    "truncation_rate",
    "clip_fraction",
    "value_loss",
    "tokens_per_s",
)


class RunLog:
    def __init__(self, output_dir: str | Path, cfg: LoggingConfig, config_dict: dict, resume_step: int):
        self.dir = Path(output_dir)
        self.metrics_path = self.dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self.wandb_run = _start_wandb(self.dir, cfg, config_dict) if cfg.wandb else None

    def _truncate_after(self, step: int) -> None:
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.tmp")  # renamed: a kill loses no row
        try:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot rewrite {self.metrics_path}: {err.strerror or err}") from err
        tmp.replace(self.metrics_path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as err:  # a full disk: name the file; the checkpoints are untouched
            raise UserError(
                f"cannot append step {step} to {self.metrics_path}: {err.strerror or err}"
            ) from err
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def close(self) -> Path | None:
        """Finish wandb and draw the curves; returns the PNG path (None when there is nothing to plot)."""
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
        return plot_curves(self.metrics_path, self.dir / "curves.png")


def _plain(value) -> float | int | None:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _start_wandb(output_dir: Path, cfg: LoggingConfig, config_dict: dict):
    import wandb

    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    id_file = output_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    return wandb.init(
        project=cfg.project,
        name=cfg.run_name or output_dir.resolve().name,
        id=run_id,
        resume="allow",
        dir=str(output_dir),
        config=config_dict,
        settings=wandb.Settings(console="off", silent=True),
    )


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """One panel per logged metric in PLOTTED (plus eval accuracies), against the step."""
    if not metrics_path.exists():
        return None
    rows = read_metrics(metrics_path)
    names = [k for k in PLOTTED if any(r.get(k) is not None for r in rows)]
    names += sorted({k for r in rows for k in r if k.startswith("eval/") and k.endswith("accuracy")})
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = 3
    fig, axes = plt.subplots(
        math.ceil(len(names) / cols),
        cols,
        figsize=(4 * cols, 2.8 * math.ceil(len(names) / cols)),
        squeeze=False,
    )
    for ax, name in zip(axes.flat, names):
        points = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers: no 1.2, 1.4 ticks
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
