"""The RL loop: pure advantage/loss math, reward composition, rollouts, the trainer, checkpoints, logging."""
