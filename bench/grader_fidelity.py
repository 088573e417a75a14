"""Grader fidelity on real completions: re-grade public Qwen2.5-Math-harness outputs, compare verdicts.

    python bench/grader_fidelity.py --mirrors /work/.mirror --data-dir ../shared/benchmarks \
        --out bench/results/grader_fidelity.json

Each source is a Qwen2.5-Math evaluation-harness output file (JSONL rows with `question`, `code` = the
completions, `pred` = the harness's extracted answers, `score` = its verdicts) in a public repository,
read from a local git mirror (`<mirrors>/<owner>+<name>/repo`) at a pinned commit. Each row is matched to our
benchmark problem by its question text; each completion is graded by endo_rl's grader, with answers
extracted both ways (`harness`, the same chain the harness used, and `boxed`). Writes the agreement per
benchmark and every disagreement (with both answers) for hand-checking; hand verdicts in
bench/results/grader_fidelity_verdicts.json ({key: {"right": "ours"|"theirs"|"neither"|"undecidable",
"class": ...}}) are folded into the "right where decidable" rate. Runs in one process plus one grading
worker. `--extra-rows` adds harness rows transcribed page by page from a repository that cannot be mirrored
(the AIME24 source; see read_extra_rows and BENCHMARKS.md section 6).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path

from endo_rl.evaluation.benchmarks import ROUNDED_GOLDS, load_benchmark
from endo_rl.evaluation.extraction import final_answer
from endo_rl.evaluation.grading import Grader

RLSFT = ("XinghanLi66/rl-sft", "c981ccd10c5db8fd32c7c6b21680ff0f272bb49c", "none stated (measurement only)")
QWEN = ("QwenLM/Qwen2.5-Math", "a45202bd16f1ec06f433442dc1152d0074773465", "MIT (evaluation/LICENSE)")
_ONE_SHOT_EM = "one-shot-em/results/{run}/{bench}/test_qwen25-math-cot_-1_seed0_t{t}_s0_e-1.jsonl"
SOURCES = [
    (*RLSFT, _ONE_SHOT_EM.format(run=run, bench=bench, t=t), ours)
    for run in ("7B-eval-pi1-modify", "1.5B-eval-pi1-modify")
    for bench, ours, t in (
        ("math500", "math500", "0.0"),
        ("minerva_math", "minerva_math", "0.0"),
        ("olympiadbench", "olympiadbench", "0.0"),
        ("amc23x8", "amc23", "0.0"),
    )
] + [(*QWEN, "evaluation/data/eval_rm_maj_example/math_cot_100.jsonl", "math")]


def _key_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_source(mirrors: Path, repo: str, commit: str, path: str) -> list[dict]:
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    if not git_dir.is_dir():
        sys.exit(f"no mirror of {repo} at {git_dir} (fetch it first)")
    text = subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], capture_output=True, check=True
    ).stdout.decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_extra_rows(path: Path) -> list[tuple]:
    """Harness rows transcribed outside a mirror (a repository `fetch` cannot bring): one JSON line per
    completion with repo, commit, path, license, benchmark, idx, question, completion_tail (the end of the
    completion, from before its last \\boxed{} on), pred and score (the harness's). Grouped like SOURCES."""
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        row = {"idx": r["idx"], "question": r["question"], "code": [r["completion_tail"]]}
        groups[(r["repo"], r["commit"], r["license"], r["path"], r["benchmark"])].append(
            row | {"pred": [r["pred"]], "score": [r["score"]]}
        )
    return [(*source, rows) for source, rows in groups.items()]


def collect(mirrors: Path, data_dir: Path, extra: list[tuple] = ()) -> tuple[list[dict], collections.Counter]:
    """One item per completion: source, benchmark, index, sample, completion, their pred and score."""
    items, unmatched, by_question = [], collections.Counter(), {}
    sources = [(*src, None) for src in SOURCES] + list(extra)
    for repo, commit, license_, path, bench, rows in sources:
        if bench not in by_question:
            by_question[bench] = {_key_text(p.question): p for p in load_benchmark(bench, data_dir)}
        for row in rows if rows is not None else read_source(mirrors, repo, commit, path):
            problem = by_question[bench].get(_key_text(row["question"]))
            if problem is None:
                unmatched[bench] += 1
                continue
            for j, (code, pred, score) in enumerate(zip(row["code"], row["pred"], row["score"])):
                items.append(
                    {
                        "key": f"{repo}@{commit[:8]}:{path}#{row['idx']}.{j}",
                        "benchmark": bench,
                        "index": problem.index,
                        "gold": problem.gold,
                        "completion": code,
                        "their_pred": pred,
                        "their_score": bool(score),
                        "license": license_,
                    }
                )
    return items, unmatched


def grade_items(items: list[dict], timeout_s: float) -> None:
    cache: dict[tuple[str, str], tuple[bool, str]] = {}
    with Grader(timeout_s) as grader:
        for n, item in enumerate(items):
            for mode in ("harness", "boxed"):
                answer = final_answer(item["completion"], mode)
                if answer is None:
                    item[mode] = {"answer": None, "correct": False, "status": "no_answer"}
                    continue
                if (item["gold"], answer) not in cache:
                    g = grader.grade_answer(item["gold"], answer, item["benchmark"] in ROUNDED_GOLDS)
                    cache[(item["gold"], answer)] = (g.correct, g.status)
                correct, status = cache[(item["gold"], answer)]
                item[mode] = {"answer": answer, "correct": correct, "status": status}
            if n % 500 == 0:
                print(f"graded {n}/{len(items)}", file=sys.stderr, flush=True)


def summarize(items: list[dict], verdicts: dict) -> dict:
    per_bench: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    classes: collections.Counter = collections.Counter()
    for item in items:
        c = per_bench[item["benchmark"]]
        c["n"] += 1
        for mode in ("harness", "boxed"):
            c[f"agree_{mode}"] += item[mode]["correct"] == item["their_score"]
        if item["harness"]["correct"] != item["their_score"]:
            verdict = verdicts.get(item["key"], {})
            c[f"disagree_right_{verdict.get('right', 'unchecked')}"] += 1
            classes[f"{verdict.get('right', 'unchecked')}: {verdict.get('class', '?')}"] += 1
    total = collections.Counter()
    for c in per_bench.values():
        total.update(c)
    out = {b: dict(c) for b, c in sorted(per_bench.items())}
    out["all"] = dict(total)
    for c in out.values():
        agree = c["agree_harness"]
        wrong = c.get("disagree_right_theirs", 0) + c.get("disagree_right_neither", 0)
        decidable = c["n"] - c.get("disagree_right_undecidable", 0) - c.get("disagree_right_unchecked", 0)
        c["agreement_harness"] = round(agree / c["n"], 4)
        c["agreement_boxed"] = round(c["agree_boxed"] / c["n"], 4)
        unchecked = c.get("disagree_right_unchecked", 0)
        c["ours_right_where_decidable"] = round((decidable - wrong) / decidable, 4) if not unchecked else None
    out["disagreement_classes"] = dict(classes.most_common())
    return out


def write_regression(items: list[dict], verdicts: dict, path: Path, per_problem: int = 3) -> int:
    """Keep the MIT-licensed completions (up to `per_problem` per problem, wrong ones first) with their
    verdict: the harness's and ours where they agree, the hand verdict where they do not."""
    rows, taken = [], collections.Counter()
    mine = sorted((i for i in items if i["license"].startswith("MIT")), key=lambda i: i["their_score"])
    for item in mine:
        if taken[item["index"]] >= per_problem:
            continue
        agree = item["boxed"]["correct"] == item["their_score"]
        hand = verdicts.get(item["key"], {}).get("right")
        if not agree and hand not in ("ours", "theirs"):
            continue
        correct = item["their_score"] if agree or hand == "theirs" else item["boxed"]["correct"]
        taken[item["index"]] += 1
        rows.append(
            {
                "source": item["key"].split("#")[0],
                "row": item["key"].split("#")[1],
                "license": item["license"],
                "benchmark": item["benchmark"],
                "index": item["index"],
                "completion": item["completion"],
                "correct": correct,
                "verdict_basis": "harness and endo_rl agree" if agree else f"hand-checked ({hand} right)",
            }
        )
    rows.sort(key=lambda r: (r["index"], r["row"]))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/benchmarks"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/grader_fidelity.json"))
    ap.add_argument("--verdicts", type=Path, default=Path("bench/results/grader_fidelity_verdicts.json"))
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--items", type=Path, default=Path("/tmp/grader_fidelity.items.jsonl"))
    ap.add_argument("--regression-out", type=Path, default=None, help="write the MIT-licensed regression set")
    ap.add_argument("--extra-rows", type=Path, default=None, help="transcribed rows (see read_extra_rows)")
    args = ap.parse_args()
    extra = read_extra_rows(args.extra_rows) if args.extra_rows else []
    items, unmatched = collect(args.mirrors, args.data_dir, extra)
    print(f"{len(items)} completions; unmatched questions: {dict(unmatched)}", file=sys.stderr)
    grade_items(items, args.timeout)
    verdicts = json.loads(args.verdicts.read_text()) if args.verdicts.exists() else {}
    summary = summarize(items, verdicts)
    disagreements = [
        {k: item[k] for k in ("key", "benchmark", "index", "gold", "their_pred", "their_score", "harness")}
        | {"verdict": verdicts.get(item["key"])}
        for item in items
        if item["harness"]["correct"] != item["their_score"]
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sources = SOURCES + [list(src[:5]) + [f"{len(src[5])} rows transcribed"] for src in extra]
    report = {"sources": sources, "unmatched": dict(unmatched), "summary": summary}
    args.out.write_text(json.dumps(report | {"disagreements": disagreements}, indent=1, ensure_ascii=False))
    args.items.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    if args.regression_out:
        n = write_regression(items, verdicts, args.regression_out)
        print(f"wrote {n} regression completions to {args.regression_out}", file=sys.stderr)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
