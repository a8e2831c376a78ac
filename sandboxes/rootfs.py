"""A Docker image for the sandbox, made without a registry: debootstrap a minimal Debian with Python into a
folder (once, cached under .cache/), tar it, and `docker import` it."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from .docker_backend import IMAGE

ROOTFS = Path(os.environ.get("SLIME_SANDBOX_ROOTFS", ".cache/sandbox-rootfs"))
MIRROR = "http://deb.debian.org/debian"


def build_rootfs(target: Path = ROOTFS, suite: str = "bookworm") -> Path:
    if (target / "usr/bin/python3").exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no .cache/ (the model lives elsewhere)
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3-minimal,python3-pytest", suite, str(tmp), MIRROR],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tmp.rename(target)
    return target


# not needed to run programs; left out of the image (a smaller image also makes each container start faster)
SKIP = (
    "./var/cache/apt/",
    "./var/lib/apt/lists/",
    "./usr/share/doc/",
    "./usr/share/man/",
    "./usr/share/locale/",
    "./usr/share/info/",
)


def _slim(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.name.startswith(SKIP) else info


def ensure_image(client, rootfs: Path = ROOTFS, image: str = IMAGE) -> str:
    try:
        client.images.get(image)
        return image
    except Exception:  # docker.errors.ImageNotFound
        pass
    build_rootfs(rootfs)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(rootfs), arcname=".", filter=_slim)
    repo, _, tag = image.partition(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag or "latest")
    return image


if __name__ == "__main__":  # one-time set-up: `python -m slime_rl.sandboxes.rootfs`
    print(build_rootfs())
