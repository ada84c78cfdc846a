"""`jax.distributed.initialize` driven by the config and the environment. Call before any other JAX work.

mode (config `distributed.mode`):
    none      single process
    explicit  coordinator_address / num_processes / process_id from the config, else from the environment
              (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)
    slurm     jax's SLURM detection (SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, SLURM_STEP_NODELIST)
    tpu       jax's Cloud TPU detection (every worker of a pod runs the same command)
    auto      explicit if a coordinator address is given (config or JAX_COORDINATOR_ADDRESS); slurm if
              SLURM_NTASKS > 1; tpu if TPU_WORKER_HOSTNAMES lists several workers; else none

On CPU, cross-process collectives need an implementation: `cpu_collectives: gloo` (default) sets
`jax_cpu_collectives_implementation` before the backend starts.
"""

from __future__ import annotations

import os

from stvl_jax.errors import ConfigError
from stvl_jax.train.config import DistributedConfig

_initialized = False


def detect_mode(cfg: DistributedConfig, env=os.environ) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    if cfg.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS"):
        return "explicit"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return "slurm"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "tpu"
    return "none"


def explicit_args(cfg: DistributedConfig, env=os.environ) -> dict:
    address = cfg.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    n = cfg.num_processes if cfg.num_processes is not None else env.get("JAX_NUM_PROCESSES")
    i = cfg.process_id if cfg.process_id is not None else env.get("JAX_PROCESS_ID")
    missing = [name for name, v in (("coordinator_address", address), ("num_processes", n), ("process_id", i))
               if v is None]
    if missing:
        raise ConfigError(f"distributed.mode=explicit needs {missing} (config distributed.* or the JAX_COORDINATOR_"
                          f"ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables)")
    n, i = int(n), int(i)
    if not 0 <= i < n:
        raise ConfigError(f"distributed.process_id={i} outside [0, num_processes={n})")
    return {"coordinator_address": address, "num_processes": n, "process_id": i}


def initialize(cfg: DistributedConfig) -> str:
    """Initialise multi-process JAX as `cfg` says; returns the mode used. Idempotent."""
    global _initialized
    import jax

    mode = detect_mode(cfg)
    if mode == "none" or _initialized:
        return mode
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if cfg.cpu_collectives != "none" and (platforms in ("", "cpu") or "cpu" in platforms.split(",")):
        # harmless on accelerators (only the CPU client reads it); must precede backend initialisation
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    kwargs = {"initialization_timeout": cfg.initialization_timeout_s}
    if mode == "explicit":
        kwargs.update(explicit_args(cfg))
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return mode
