"""The endogenous reward: pure reward math, the one-forward reference pass, and text -> token ids for scoring."""
