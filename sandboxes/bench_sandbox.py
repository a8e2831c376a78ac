"""`slime-rl bench sandbox`: executions/s and p50/p99 latency of a trivial program under each backend and as a
bare `python -c` subprocess, in the same run; throughput at concurrency 1, 2 and 4."""
from __future__ import annotations

import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from slime_rl.config import SandboxConfig

from .base import RunRequest

PROGRAM = "print(sum(range(100)))"


def _latencies(fn, n: int, concurrency: int) -> tuple[list[float], float]:
    def timed(_):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(timed, range(n)))
    return lat, time.perf_counter() - t0


def _stats(lat: list[float], wall: float) -> dict:
    return {"executions_per_s": len(lat) / wall, "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99))}


def run(quick: bool = False) -> dict:
    from .bwrap import BwrapSandbox

    n = 10 if quick else 40
    cfg = SandboxConfig()
    bare = lambda: subprocess.run(["/usr/bin/python3", "-c", PROGRAM], capture_output=True, check=True)
    bwrap_sb = BwrapSandbox(cfg)
    bwrap = lambda: bwrap_sb.run(RunRequest(code=PROGRAM))
    out: dict = {"program": PROGRAM, "runs": n}
    for name, fn in (("bare", bare), ("bwrap", bwrap)):
        out[name] = {f"c{c}": _stats(*_latencies(fn, n, c)) for c in (1, 2, 4)}
    out["bwrap_vs_bare"] = out["bwrap"]["c1"]["executions_per_s"] / out["bare"]["c1"]["executions_per_s"]
    out["docker"] = _docker(cfg, max(4, n // 4))
    return out


def _docker(cfg: SandboxConfig, n: int) -> dict:
    """Needs a Docker engine: a private dockerd is started for the measurement and stopped after."""
    from .docker_backend import DockerSandbox
    from .dockerd import PrivateDockerd
    from .rootfs import ensure_image

    try:
        daemon = PrivateDockerd(tempfile.mkdtemp(prefix="dkr", dir="/tmp")).start()
    except Exception as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
    try:
        import docker

        ensure_image(docker.DockerClient(base_url=daemon.url))
        sb = DockerSandbox(cfg.model_copy(update={"backend": "docker"}), base_url=daemon.url)
        return {"c1": _stats(*_latencies(lambda: sb.run(RunRequest(code=PROGRAM)), n, 1))}
    finally:
        daemon.stop()
