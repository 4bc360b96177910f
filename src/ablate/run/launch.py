"""Whether this process was started by a launcher (torchrun, a submitit job): checked by ``python -m ablate``
before anything else, so it lives apart from ``dist`` and needs no torch (``--help`` and the refusals start in
a fraction of a second)."""

import os

from ..errors import ConfigError

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def check_launch(env=None) -> None:
    """ConfigError unless the distributed variables in ``env`` (the process environment) come from a launcher:
    none of them, or all of ``LAUNCH_VARS`` consistent (0 <= RANK < WORLD_SIZE, LOCAL_RANK < WORLD_SIZE) and set
    by torchrun (``TORCHELASTIC_RUN_ID``) or a submitit job. A stray ``RANK`` left in a shell would otherwise
    skip the run directory's lock, and two processes would train one directory at once."""
    env = os.environ if env is None else env
    present = [k for k in LAUNCH_VARS if k in env]
    if not present:
        return
    fix = "unset " + " ".join(present) + ", or launch with torchrun --nproc_per_node=N -m ablate ..."
    missing = [k for k in LAUNCH_VARS if k not in env]
    if missing:
        raise ConfigError(f"{present[0]}={env[present[0]]} is set but {', '.join(missing)} not: this process was "
                          f"not started by torchrun; {fix}")
    try:
        rank, world, local = (int(env[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ConfigError(f"RANK={env['RANK']}, WORLD_SIZE={env['WORLD_SIZE']}, LOCAL_RANK={env['LOCAL_RANK']} "
                          f"must be integers; {fix}") from None
    if not (0 <= rank < world and 0 <= local < world):
        raise ConfigError(f"RANK={rank}, LOCAL_RANK={local} do not lie in [0, WORLD_SIZE={world}); {fix}")
    if world > 1 and not (env.get("TORCHELASTIC_RUN_ID") or env.get("SUBMITIT_EXECUTOR")):
        raise ConfigError(f"WORLD_SIZE={world} is set but no launcher started this process (no "
                          f"TORCHELASTIC_RUN_ID from torchrun, no submitit job); {fix}")
