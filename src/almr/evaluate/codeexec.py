"""Running model-written code for HumanEval-style pass@1, only after the user opted in.

Each program runs in its own `python -I` subprocess (isolated mode: no user site, no
PYTHON* variables, no current directory on sys.path) in an empty temporary directory, with
an empty environment, stdin closed, a wall-clock time limit, and on POSIX resource limits
(CPU seconds, 1 GiB of address space, no core files, 64 files, 16 MiB per written file).
This bounds accidents — an infinite loop, a memory blow-up, a stray file — not a determined
attacker: run untrusted models' code in a container or VM as well.
"""

import os
import subprocess
import sys
import tempfile

TIME_LIMIT_S = 5.0


def _limits() -> None:  # runs in the child before exec
    import resource  # POSIX only: imported where this runs (os.name == "posix"), not on import of the module

    resource.setrlimit(resource.RLIMIT_CPU, (int(TIME_LIMIT_S) + 1, int(TIME_LIMIT_S) + 1))
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))


def passes(program: str, time_limit_s: float = TIME_LIMIT_S) -> bool:
    """True when `program` exits 0 within the time limit (its asserts passed)."""
    with tempfile.TemporaryDirectory(prefix="almr-exec-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        try:
            done = subprocess.run(
                [sys.executable, "-I", path],
                cwd=tmp,
                env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=time_limit_s,
                preexec_fn=_limits if os.name == "posix" else None,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0
