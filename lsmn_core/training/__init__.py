"""Training and what builds on it: the loop, its sessions and checkpoints, data parallelism,
fine-tuning, adaptation, and evaluating stored runs."""
