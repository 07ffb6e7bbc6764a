"""The tests' one way to start several gloo processes: torchrun on this machine, one thread each,
offline; a failure fails the test with the ranks' own traceback."""

import os
import subprocess
import sys
from pathlib import Path


def launch(script: Path | str, *args: str, processes: int = 2, timeout: int = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(script), *args]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.split("ChildFailedError")[0][-4000:]
    return done
