"""Training stages: continual pre-training (cpt.py) and its parts: LR schedule, checkpoints,
process groups and FSDP2 wrapping, measurements."""
