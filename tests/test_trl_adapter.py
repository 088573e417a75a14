"""The TRL adapter: equal to our own scoring, and accepted by TRL's GRPOTrainer for a real step on CPU."""

from __future__ import annotations

import pytest
import torch

from endo_rl.reward import text as scoring
from endo_rl.trl_adapter import EndogenousRewardFunc


@pytest.fixture(scope="module")
def reward_func(tiny_model_dir):
    return EndogenousRewardFunc.from_pretrained(str(tiny_model_dir), alpha=1.0, device="cpu", dtype="float32")


def test_matches_score_semantics(reward_func, qwen_tokenizer):
    tok = qwen_tokenizer
    prompts = ["What is 2+2?", "Say hi."]
    completions = ["2+2 = 4", "hi!"]
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in completions]
    got = reward_func(prompts=prompts, completions=completions, completion_ids=ids)
    pairs = [scoring.plain_ids(tok, p, c) for p, c in zip(prompts, completions)]
    want = reward_func.reference.score_each([p for p, _ in pairs], [r for _, r in pairs])
    assert got == pytest.approx([w.reward for w in want])
    # retokenizing the text gives the same ids here, so the same rewards
    assert reward_func.__class__(reward_func.reference, retokenize=True)(
        prompts, completions
    ) == pytest.approx(got)


def test_conversational_prompts_use_the_chat_template(reward_func, qwen_tokenizer):
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    completion = [{"role": "assistant", "content": "4"}]
    steered = EndogenousRewardFunc(reward_func.reference, system_prompt="Be terse.", retokenize=True)
    got = steered([prompt], [completion])[0]
    p_ids, r_ids = scoring.chat_ids(qwen_tokenizer, "What is 2+2?", "4", system="Be terse.")
    assert got == pytest.approx(reward_func.reference.score_each([p_ids], [r_ids])[0].reward)


def test_grpo_trainer_runs_a_step_with_it(reward_func, tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = {k: v.clone() for k, v in policy.named_parameters()}
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        beta=0.0,
        bf16=False,
        seed=0,
    )
    data = Dataset.from_dict({"prompt": ["What is 2+2?", "Name a colour.", "Count to three.", "Say hi."]})
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[reward_func],
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/endogenous_reward/mean" in h]
    assert logged, trainer.state.log_history
    assert torch.isfinite(torch.tensor(logged[0]["rewards/endogenous_reward/mean"]))
    assert any(not torch.equal(before[k], v) for k, v in policy.named_parameters())


@pytest.fixture(scope="module")
def bos_tokenizer(qwen_tokenizer):
    """The Qwen tokenizer made to add a BOS (as Llama-style tokenizers do), with a template that reads a kwarg."""
    import copy

    from tokenizers import processors

    tok = copy.deepcopy(qwen_tokenizer)
    bos = ("<|endoftext|>", 151643)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos]
    )
    tok.chat_template = (
        "{%- if mood is defined %}<|im_start|>mood\n{{ mood }}<|im_end|>\n{%- endif %}" + tok.chat_template
    )
    assert tok("hi")["input_ids"][0] == bos[1]
    return tok


def test_prompts_are_tokenized_as_grpo_trainer_does(bos_tokenizer, tiny_model_dir, tmp_path):
    """Against TRL itself: the ids GRPOTrainer generates from, for plain and conversational prompts."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from endo_rl.reward.reference import ReferenceModel

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    kwargs = {"mood": "calm"}
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_generations=2,
        report_to=[],
        use_cpu=True,
        chat_template_kwargs=kwargs,
    )
    func = EndogenousRewardFunc(ReferenceModel(policy, bos_tokenizer), chat_template_kwargs=kwargs)
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[func],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
        processing_class=bos_tokenizer,
    )
    plain = ["What is 2+2?", "Say hi."]
    chats = [[{"role": "user", "content": p}] for p in plain]
    for prompts in (plain, chats):
        trl_ids, _, _ = trainer._tokenize_prompts(prompts)
        assert [func._prompt_ids(p) for p in prompts] == [list(ids) for ids in trl_ids]
    assert func._prompt_ids(plain[0])[0] == 151643  # the BOS TRL adds
    assert "calm" in bos_tokenizer.decode(func._prompt_ids(chats[0]))
