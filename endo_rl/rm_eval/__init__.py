"""Reward-model evaluation: preference data, judges (endogenous + baselines), accuracy metrics, plots, the run."""
