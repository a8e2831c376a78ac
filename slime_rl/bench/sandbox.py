"""`slime-rl bench sandbox`: executions/s and p50/p99 latency of a trivial program under each backend and as a
bare `python -c` subprocess, in the same run; throughput at concurrency 1, 2 and 4.

`bwrap` is the default configuration (a warm pool of started sandboxes); `bwrap_cold` starts every sandbox on
demand (warm_pool=0), to show what the pool hides. `bwrap_vs_bare` = bwrap / bare executions per second at
concurrency 1 (target >= 0.6)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from slime_rl.config import SandboxConfig
from slime_rl.sandboxes.base import RunRequest

PROGRAM = "print(sum(range(100)))"
CONCURRENCY = (1, 2, 4)


def _measure(fn: Callable[[], None], n: int, concurrency: int) -> dict:
    def timed(_) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    fn()  # warm-up (page cache, pools)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(timed, range(n)))
    wall = time.perf_counter() - t0
    return {
        "executions_per_s": n / wall,
        "p50_s": float(np.percentile(lat, 50)),
        "p99_s": float(np.percentile(lat, 99)),
    }


def _checked(sandbox) -> Callable[[], None]:
    req = RunRequest(code=PROGRAM)

    def one() -> None:
        res = sandbox.run(req)
        if res.status != "Success" or res.run_result.stdout.strip() != "4950":
            raise RuntimeError(f"sandbox run failed: {res}")

    return one


def _bare() -> None:
    subprocess.run(["/usr/bin/python3", "-c", PROGRAM], capture_output=True, check=True)


def run(quick: bool = False) -> dict:
    from slime_rl.sandboxes.bwrap import BwrapSandbox

    n = 12 if quick else 40
    out: dict = {"program": PROGRAM, "runs_per_point": n, "concurrency": list(CONCURRENCY)}
    for c in CONCURRENCY:
        cfg = SandboxConfig(concurrency=c, warm_pool=max(2, c))
        warm, cold = BwrapSandbox(cfg), BwrapSandbox(cfg.model_copy(update={"warm_pool": 0}))
        try:
            # interleaved per concurrency level, so the three see the same machine load
            for name, fn in (("bare", _bare), ("bwrap", _checked(warm)), ("bwrap_cold", _checked(cold))):
                out.setdefault(name, {})[f"c{c}"] = _measure(fn, n, c)
        finally:
            warm.close()
            cold.close()
    out["bwrap_vs_bare"] = out["bwrap"]["c1"]["executions_per_s"] / out["bare"]["c1"]["executions_per_s"]
    # the same ratio on median latency: less sensitive to load spikes from other processes on a shared machine
    out["bwrap_vs_bare_p50"] = out["bare"]["c1"]["p50_s"] / out["bwrap"]["c1"]["p50_s"]
    out["bwrap_cold_vs_bare"] = out["bwrap_cold"]["c1"]["executions_per_s"] / out["bare"]["c1"]["executions_per_s"]
    out["docker"] = _docker(max(6, n // 4))
    if "c1" in out["docker"]:
        out["docker_vs_bare"] = out["docker"]["c1"]["executions_per_s"] / out["bare"]["c1"]["executions_per_s"]
    return out


def _docker(n: int) -> dict:
    """Needs a Docker engine: a private dockerd is started for the measurement and stopped after."""
    from slime_rl.sandboxes.docker_backend import DockerSandbox
    from slime_rl.sandboxes.dockerd import PrivateDockerd
    from slime_rl.sandboxes.rootfs import ensure_image

    root = tempfile.mkdtemp(prefix="dkr", dir="/tmp")
    try:
        daemon = PrivateDockerd(root).start()
    except Exception as exc:
        shutil.rmtree(root, ignore_errors=True)
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
    try:
        import docker

        ensure_image(docker.DockerClient(base_url=daemon.url))
        sb = DockerSandbox(SandboxConfig(backend="docker"), base_url=daemon.url)
        result: dict = {"storage_driver": daemon.storage_driver}
        for c in CONCURRENCY:
            result[f"c{c}"] = _measure(_checked(sb), n, c)
        sb.close()
        return result
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
