import os
import tempfile
from pathlib import Path

import pytest

from slime_rl.config import SandboxConfig

LIMITS = dict(cpu_seconds=2, memory_mb=256, max_processes=32, max_file_mb=8, wall_timeout_s=6.0,
              output_cap_bytes=64 * 1024, concurrency=2)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sandbox_cfg() -> SandboxConfig:
    return SandboxConfig(backend="bwrap", **LIMITS)


@pytest.fixture(scope="session")
def docker_daemon():
    """A private dockerd + the sandbox image (imported from a debootstrapped rootfs). Fails loudly if impossible."""
    from slime_rl.sandboxes.dockerd import PrivateDockerd
    from slime_rl.sandboxes.rootfs import ROOTFS, ensure_image

    root = Path(tempfile.mkdtemp(prefix="dkr", dir="/tmp"))
    try:
        daemon = PrivateDockerd(root).start()
    except Exception as exc:
        pytest.fail(f"DOCKER TESTS CANNOT RUN: private dockerd did not start: {exc}")
    try:
        import docker

        ensure_image(docker.DockerClient(base_url=daemon.url), REPO / ROOTFS)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(params=["bwrap", "docker"])
def sandbox(request, sandbox_cfg):
    if request.param == "bwrap":
        from slime_rl.sandboxes.bwrap import BwrapSandbox

        return BwrapSandbox(sandbox_cfg)
    from slime_rl.sandboxes.docker_backend import DockerSandbox

    daemon = request.getfixturevalue("docker_daemon")
    return DockerSandbox(sandbox_cfg.model_copy(update={"backend": "docker"}), base_url=daemon.url)
