"""Generation engines shared by training rollouts and evaluation: HF generate and the static-cache decoder."""
