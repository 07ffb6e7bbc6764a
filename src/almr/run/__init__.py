"""`almr run`: the paper's pipeline as resumable stages (docs/pipeline.md). `stages.py` is the stage
table, `runner.py` orders, skips, reruns and resumes them, `fingerprint.py` keys their outputs,
`logs.py` keeps third-party output in each stage's log, `display.py` shows progress, `slurm.py`
renders each stage as a Slurm job for --dry-run."""
