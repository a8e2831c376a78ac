import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from slime_rl.config import SandboxConfig

LIMITS = dict(
    cpu_seconds=2,
    memory_mb=256,
    max_processes=32,
    max_file_mb=8,
    wall_timeout_s=6.0,
    output_cap_bytes=64 * 1024,
    concurrency=2,
    warm_pool=2,
    uid_base=200_000,
    uid_count=4096,
)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sandbox_cfg() -> SandboxConfig:
    return SandboxConfig(backend="bwrap", **LIMITS)


@pytest.fixture(scope="session")
def docker_daemon():
    """A private dockerd + the sandbox image (imported from a debootstrapped rootfs). If dockerd cannot start here,
    the Docker tests are skipped with a loud reason (a warning and the skip line in the -ra summary)."""
    from slime_rl.sandboxes.dockerd import PrivateDockerd
    from slime_rl.sandboxes.rootfs import ROOTFS, ensure_image

    root = Path(tempfile.mkdtemp(prefix="dkr", dir="/tmp"))
    try:
        daemon = PrivateDockerd(root).start()
    except Exception as exc:
        shutil.rmtree(root, ignore_errors=True)
        reason = f"DOCKER TESTS NOT RUN: the private dockerd did not start: {type(exc).__name__}: {exc}"
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    try:
        import docker

        ensure_image(docker.DockerClient(base_url=daemon.url), REPO / ROOTFS)
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def bwrap_sandbox(sandbox_cfg):
    from slime_rl.sandboxes.bwrap import BwrapSandbox

    sb = BwrapSandbox(sandbox_cfg)
    yield sb
    sb.close()


@pytest.fixture(scope="session")
def docker_sandbox(sandbox_cfg, docker_daemon):
    from slime_rl.sandboxes.base import RunRequest
    from slime_rl.sandboxes.docker_backend import DockerSandbox

    sb = DockerSandbox(sandbox_cfg.model_copy(update={"backend": "docker"}), base_url=docker_daemon.url)
    sb.run(RunRequest(code="print(1)", run_timeout=60))  # the first container unpacks layers: not a test's budget
    return sb


@pytest.fixture(params=["bwrap", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox(request):
    return request.getfixturevalue(f"{request.param}_sandbox")
