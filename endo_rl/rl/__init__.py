"""The RL loop: trainer.py (the step), rewards.py (reward composition), advantages.py (estimator table),
algorithms.py (pure advantage/loss/KL math), update.py (the policy update), rollouts, checkpoints, logging."""
