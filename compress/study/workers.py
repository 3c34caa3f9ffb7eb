"""Worker processes of one study (`compress search --workers N`) and the GPU each trains on."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from compress.core.errors import CompressError, Interrupted
from compress.study.storage import STORAGE_ENV, masked

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or all that CUDA counts)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]  # NVML count: no CUDA context in this parent


def gpu_per_worker(device: str, workers: int, gpus: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker: with device cuda or auto and several GPUs, worker i trains on
    GPU i mod len(gpus) alone (GPUs are shared only when workers outnumber them); None keeps the environment."""
    if device == "cpu" or len(gpus) < 2:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]


def spawn(
    recipe_path: Path, overrides: list[str], url: str, workers: int, threads: int | None, gpus: list[str | None]
) -> None:
    """N worker processes on one study. Threads are split between them, so latency is measured under
    contention: for latency you trust, run one worker per machine (they join the same study by name)."""
    per = max(1, (threads or os.cpu_count() or 1) // workers)
    cmd = [
        sys.executable,
        "-m",
        "compress",
        "search",
        str(recipe_path),
        *[a for o in overrides for a in ("--set", o)],
        "--set",
        f"threads={per}",
    ]
    log.info("starting %d workers (%d threads each) on %s", workers, per, masked(url))
    env = os.environ | {STORAGE_ENV: url}  # the URL (and any password) through the environment, not the command line
    if any(gpus):
        log.info("worker GPUs (CUDA_VISIBLE_DEVICES): %s", ", ".join(f"{i}: {g}" for i, g in enumerate(gpus)))
    own = [env | ({"CUDA_VISIBLE_DEVICES": g} if g is not None else {}) for g in gpus]
    procs = [subprocess.Popen([*cmd, "--worker", str(i)], env=own[i]) for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise Interrupted(
            "search interrupted; finished trials are kept in the study - run again with --resume to continue"
        ) from None
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        raise CompressError(
            f"search worker(s) {', '.join(f'{i} (exit {c})' for i, c in bad)} failed; see their messages above, then "
            "--resume"
        )
