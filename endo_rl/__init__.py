"""endo_rl: RL fine-tuning of LLMs with endogenous rewards.

The reward is recovered from a frozen language model's own logits by the inverse soft Bellman operator
(Li et al., "Generalist Reward Models: Found Inside Large Language Models", arXiv 2506.23235).
"""

__version__ = "0.1.0"
