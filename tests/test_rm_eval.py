"""Reward-model evaluation: style-matrix math, data loading, the baselines' scores on known cases and against
brute-force full-logit forwards of a tiny random model."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import BENCHMARKS, REPO, make_tiny_qwen

from endo_rl.core.errors import UserError
from endo_rl.reward import text as scoring
from endo_rl.reward.reference import ReferenceModel
from endo_rl.rm_eval import data as rm_data
from endo_rl.rm_eval import judges as rm_methods
from endo_rl.rm_eval import metrics as rm_eval
from endo_rl.rm_eval.run import load_system_prompts

RM_BENCH = BENCHMARKS / "rm_bench"


# ---- style matrix -------------------------------------------------------------------------------------------


def test_style_accuracies_hand_computed():
    # item A: W = [[1,0,1],[0,0,1],[1,1,1]]; item B (ties on the last column): W = [[1,1,0]] * 3
    wins = [rm_eval.win_matrix([3, 1, 5], [2, 4, 0]), rm_eval.win_matrix([2, 2, 2], [1, 0, 2])]
    assert wins[1] == [[1.0, 1.0, 0.0]] * 3
    acc = rm_eval.style_accuracies(wins)
    assert acc["matrix"] == [[1.0, 0.5, 0.5], [0.5, 0.5, 0.5], [1.0, 1.0, 0.5]]
    assert acc["hard"] == pytest.approx(0.5)  # M01, M02, M12
    assert acc["normal"] == pytest.approx(2 / 3)  # 1, .5, .5
    assert acc["easy"] == pytest.approx(2.5 / 3)  # M10, M20, M21
    assert acc["accuracy"] == pytest.approx(2 / 3) and acc["n_items"] == 2
    assert acc["stderr"] == pytest.approx(0.0)


def _rmbench_compute_accuracy(results):
    """RM-Bench README's compute_accuracy, written as loops over the 3x3 matrix."""
    acc = [[0.0] * 3 for _ in range(3)]
    for res in results:
        for i in range(3):
            for j in range(3):
                if res["score_chosen"][i] > res["score_rejected"][j]:
                    acc[i][j] += 1
    acc = [[v / len(results) for v in row] for row in acc]
    hard = sum(acc[i][j] for i in range(3) for j in range(3) if j > i) / 3
    easy = sum(acc[i][j] for i in range(3) for j in range(3) if j < i) / 3
    return {"hard_acc": hard, "normal_acc": sum(acc[i][i] for i in range(3)) / 3, "easy_acc": easy}


def test_style_accuracies_match_rmbench_reference():
    rng = random.Random(0)
    results = [
        {
            "score_chosen": [rng.randint(0, 4) for _ in range(3)],
            "score_rejected": [rng.randint(0, 4) for _ in range(3)],
        }
        for _ in range(50)
    ]  # small integers: many ties
    ours = rm_eval.style_accuracies(
        [rm_eval.win_matrix(r["score_chosen"], r["score_rejected"]) for r in results]
    )
    ref = _rmbench_compute_accuracy(results)
    assert ours["hard"] == pytest.approx(ref["hard_acc"])
    assert ours["normal"] == pytest.approx(ref["normal_acc"])
    assert ours["easy"] == pytest.approx(ref["easy_acc"])


def test_plain_pairs_have_accuracy_only_and_pairwise_ties_are_wrong():
    acc = rm_eval.style_accuracies([rm_eval.win_matrix([1.0], [0.0]), rm_eval.pairwise_win_matrix([[0.5]])])
    assert acc["accuracy"] == 0.5 and "hard" not in acc


def _records(scores_by_item):
    items = {("chat", i): rm_data.Item("chat", i, "p", ("c",), ("r",)) for i in range(len(scores_by_item))}
    items.update(
        {("safety-refuse", i): rm_data.Item("safety-refuse", i, "p", ("c",), ("r",)) for i in range(2)}
    )
    records = [{"subset": "chat", "prompt_index": i, **s} for i, s in enumerate(scores_by_item)]
    return items, records


def test_promptable_matrix_and_domains():
    right, wrong = {"chosen": [1.0], "rejected": [0.0]}, {"chosen": [0.0], "rejected": [1.0]}
    items, records = _records([{"scores": {}, "system_prompts": {"chat": right, "safety": wrong}}] * 2)
    records += [
        {
            "subset": "safety-refuse",
            "prompt_index": i,
            "scores": {},
            "system_prompts": {"chat": wrong, "safety": right},
        }
        for i in range(2)
    ]
    matrix = rm_eval.promptable_matrix(records, items, ["chat", "safety"])
    assert matrix["domains"] == ["chat", "safety"]  # safety-refuse reports as RM-Bench's "safety"
    assert matrix["accuracy"] == {
        "chat": {"chat": 1.0, "safety": 0.0},
        "safety": {"chat": 0.0, "safety": 1.0},
    }


# ---- data ---------------------------------------------------------------------------------------------------


def test_load_rmbench_directory_subsets_and_limit():
    items = rm_data.load_items(str(RM_BENCH), ["chat", "safety-response"], limit=3)
    assert [it.key for it in items] == [(s, i) for s in ("chat", "safety-response") for i in range(3)]
    assert all(len(it.chosen) == len(it.rejected) == 3 for it in items)
    assert items[-1].domain == "safety"
    first = json.loads((RM_BENCH / "chat_filtered.json").read_text())[0]
    assert items[0].prompt == first["prompt"] and list(items[0].chosen) == first["chosen"]


def test_data_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(UserError, match="unknown subset.*'mathz'"):
        rm_data.load_items(str(RM_BENCH), ["mathz"])
    with pytest.raises(UserError, match="does not exist"):
        rm_data.load_items(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"\n')
    with pytest.raises(UserError, match=rf"{bad}:2: not valid JSON"):
        rm_data.load_items(str(bad))
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(UserError, match=r"pairs.jsonl:1: missing key\(s\) \['rejected'\]"):
        rm_data.load_items(str(bad))


def test_jsonl_pairs_domain_is_the_subset(tmp_path: Path):
    f = tmp_path / "mine.jsonl"
    f.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b", "domain": "code"}\n\n'
        '{"prompt": "q", "chosen": "c", "rejected": "d"}\n'
    )
    items = rm_data.load_items(str(f))
    assert [(it.subset, it.index, it.chosen) for it in items] == [("code", 0, ("a",)), ("mine", 2, ("c",))]


def test_domain_prompts_recipe_loads():
    prompts = load_system_prompts(str(REPO / "recipes" / "rm_eval" / "domain_prompts.yaml"))
    assert {"chat", "code", "safety"} <= set(prompts) and all(prompts.values())


# ---- baselines on constructed next-token distributions ------------------------------------------------------


def _logprobs(probs: dict[int, float], vocab: int = 20) -> torch.Tensor:
    rest = (1.0 - sum(probs.values())) / (vocab - len(probs))
    p = torch.full((1, vocab), rest, dtype=torch.float64)
    for i, v in probs.items():
        p[0, i] = v
    return p.log()


def test_verifier_and_choice_probabilities():
    assert rm_methods.token_mass(_logprobs({3: 0.2, 4: 0.1}), [3, 4]).item() == pytest.approx(0.3)
    assert rm_methods.choice_probability(_logprobs({5: 0.3, 6: 0.1}), [5], [6]).item() == pytest.approx(0.75)


def test_expected_score_known_answers():
    digits = list(range(1, 10))  # token id k is the digit k; token 10 is "10" when it is one token
    assert rm_methods.expected_score(_logprobs({7: 1.0 - 1e-12}), digits, 10, None).item() == pytest.approx(
        7.0
    )
    assert rm_methods.expected_score(
        _logprobs({3: 0.5, 10: 0.5 - 1e-12}), digits, 10, None
    ).item() == pytest.approx(6.5)
    # "10" = "1" then "0": P("1") = 0.5 splits into P(1) = 0.25 and P(10) = 0.25; P(9) = 0.5
    zero_after_one = torch.tensor([0.5], dtype=torch.float64)
    got = rm_methods.expected_score(_logprobs({1: 0.5, 9: 0.5 - 1e-12}), digits, None, zero_after_one)
    assert got.item() == pytest.approx(0.25 * 1 + 0.25 * 10 + 0.5 * 9)


def test_pairwise_preference_cancels_position_bias():
    always_a = rm_methods.pairwise_preference(torch.tensor([0.9]), torch.tensor([0.9]))
    assert always_a.item() == pytest.approx(0.5) and rm_eval.pairwise_win_matrix([[always_a.item()]]) == [
        [0.0]
    ]
    prefers_chosen = rm_methods.pairwise_preference(torch.tensor([0.8]), torch.tensor([0.3]))
    assert prefers_chosen.item() == pytest.approx(0.75)


# ---- batched forwards against brute force -------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge(qwen_tokenizer):
    model = make_tiny_qwen(dtype=torch.float64, seed=3)
    return rm_methods.Judge(ReferenceModel(model, qwen_tokenizer, batch_size=3), system="Judge carefully.")


def _last_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)


def test_next_token_logprobs_match_unbatched_full_logits(judge):
    model = judge.ref.model
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]]
    got_BKV = rm_methods.next_token_logprobs(model, judge.ref.pad_id, prompts, continuation=[42])
    for b, p in enumerate(prompts):
        torch.testing.assert_close(got_BKV[b, 0], _last_logprobs(model, p))
        torch.testing.assert_close(got_BKV[b, 1], _last_logprobs(model, p + [42]))


PROMPTS = ["What is 2+2?", "Name a colour.", "Say hi."]
RESPONSES = ["4", "Blue, like the sky on a clear day.", "Hello there!"]


def test_verifier_and_pointwise_match_brute_force(judge):
    tok, model = judge.tok, judge.ref.model
    assert judge.ten_id is None  # Qwen splits "10" into "1", "0": the two-position path is exercised
    verifier = judge.verifier(PROMPTS, RESPONSES)
    pointwise = judge.genrm_pointwise(PROMPTS, RESPONSES)
    for k, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        ids = scoring.chat_prompt_ids(
            tok, rm_methods.VERIFIER_TEMPLATE.format(prompt=p, response=r), judge.system
        )
        assert verifier[k] == pytest.approx(
            _last_logprobs(model, ids)[judge.yes_ids].exp().sum().item(), rel=1e-9
        )
        ids = scoring.chat_prompt_ids(
            tok, rm_methods.POINTWISE_TEMPLATE.format(prompt=p, response=r), judge.system
        )
        probs = {d: _last_logprobs(model, ids)[judge.digit_ids[d - 1]].exp().item() for d in range(1, 10)}
        p_zero = _last_logprobs(model, ids + [judge.digit_ids[0]])[judge.zero_id].exp().item()
        probs[10], probs[1] = probs[1] * p_zero, probs[1] * (1 - p_zero)
        assert pointwise[k] == pytest.approx(
            sum(d * q for d, q in probs.items()) / sum(probs.values()), rel=1e-9
        )


def test_pairwise_matches_brute_force(judge):
    tok, model = judge.tok, judge.ref.model

    def p_a(prompt: str, a: str, b: str) -> float:
        ids = scoring.chat_prompt_ids(
            tok, rm_methods.PAIRWISE_TEMPLATE.format(prompt=prompt, a=a, b=b), judge.system
        )
        lp = _last_logprobs(model, ids)
        pa, pb = lp[judge.a_ids].exp().sum().item(), lp[judge.b_ids].exp().sum().item()
        return pa / (pa + pb)

    rejected = ["5", "Seven.", "Go away."]
    got = judge.genrm_pairwise(PROMPTS, RESPONSES, rejected)
    for k, (p, c, r) in enumerate(zip(PROMPTS, RESPONSES, rejected)):
        assert got[k] == pytest.approx((p_a(p, c, r) + 1 - p_a(p, r, c)) / 2, rel=1e-9)


def test_endogenous_and_loglik_match_score_each(judge):
    rewards, logliks = judge.endogenous(PROMPTS, RESPONSES, "Be brief.")
    for k, (p, r) in enumerate(itertools.islice(zip(PROMPTS, RESPONSES), 3)):
        prompt_ids, response_ids = scoring.chat_ids(judge.tok, p, r, "Be brief.")
        one = judge.ref.score_each([prompt_ids], [response_ids])[0]
        assert rewards[k] == pytest.approx(one.reward, rel=1e-9)
        assert logliks[k] == pytest.approx(sum(one.logprobs) / len(one.logprobs), rel=1e-9)
