"""Under torchrun the mixture plan (every manifest read, every raw file stat'ed) is built by rank 0
alone and sent to the others; a refusal there is every rank's refusal."""

from pathlib import Path

from torchrun_launch import launch

_WORKER = """
import os
import sys
from pathlib import Path
import torch.distributed
import almr.stages.cpt as stage
from almr.errors import DataError
from almr.train.parallel import close_distributed, init_distributed

env = init_distributed("cpu")
def plan_for(config):
    if env.rank != 0:
        raise AssertionError("only rank 0 builds the plan")
    if config == "bad":
        raise DataError("source web: shards are stale; run almr data tokenize")
    return {"built by": env.rank}
stage.plan_for = plan_for
got = stage.plan_once("good", env)
try:
    stage.plan_once("bad", env)
    refused = "no"
except DataError as err:
    refused = str(err)
# one file per rank: two processes printing to one pipe may interleave their lines
(Path(sys.argv[1]) / f"rank{env.rank}.txt").write_text(f"rank {env.rank}: {got} | {refused}")
torch.distributed.barrier()  # gloo may abort a process that leaves while its peer still sends
close_distributed()
# no interpreter finalization: a CI run once saw gloo abort there (std::terminate, "terminate called
# without an active exception") after everything above had finished; what is tested is in the files
os._exit(0)
"""


def test_rank_zero_builds_the_plan_and_every_rank_gets_it_or_its_refusal(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    launch(str(script), str(tmp_path), timeout=180)
    lines = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    refusal = "source web: shards are stale; run almr data tokenize"
    assert lines == [f"rank 0: {{'built by': 0}} | {refusal}", f"rank 1: {{'built by': 0}} | {refusal}"]
