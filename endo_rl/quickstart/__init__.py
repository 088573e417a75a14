"""The CPU quickstart: the paper's story end to end in minutes, with no downloads.

A tiny Qwen2 learns step-by-step addition by next-token prediction (imitation), a frozen copy of it becomes the
endogenous reward model, the real trainer runs RL against it, and held-out accuracy is compared before and
after at several horizons H, greedy and sampled. Modules: `task` (problems, traces, answer checker),
`tokenizer`, `pretrain`, `evaluate`, `driver` (the pipeline), `plots`, `summary` (several seeds -> table),
`config` (the one schema, `recipes/quickstart.yaml`), `command` (`endo-rl quickstart`).
"""
