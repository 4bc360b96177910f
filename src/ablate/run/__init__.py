"""Run machinery: the CLI, the training loop and its step strategies, checkpoints, run directories,
processes and hardware facts, and the summary.json owner."""
