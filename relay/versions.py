"""What a relay holds, as a small pure state machine: complete versions only, newest and previous kept, versions
only move forward (a late, older publication is ignored), and a blob is visible only after its checksums match."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors


class IntegrityError(ValueError):
    pass


@dataclass(frozen=True)
class Manifest:
    version: int
    total_bytes: int
    chunk_bytes: int
    chunk_sha256: tuple[str, ...]
    tensor_sha256: tuple[tuple[str, str], ...]  # (name, sha256 of the tensor's bytes)


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()).hexdigest()


def pack_weights(version: int, tensors: dict[str, torch.Tensor], chunk_bytes: int) -> tuple[Manifest, bytes]:
    blob = save_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    chunks = tuple(hashlib.sha256(blob[i:i + chunk_bytes]).hexdigest() for i in range(0, len(blob), chunk_bytes))
    digests = tuple(sorted((k, tensor_digest(v)) for k, v in tensors.items()))
    return Manifest(version, len(blob), chunk_bytes, chunks, digests), blob


def verify(manifest: Manifest, blob: bytes) -> None:
    if len(blob) != manifest.total_bytes:
        raise IntegrityError(f"version {manifest.version}: {len(blob)} bytes, manifest says {manifest.total_bytes}")
    step = manifest.chunk_bytes
    for i, want in enumerate(manifest.chunk_sha256):
        if hashlib.sha256(blob[i * step:(i + 1) * step]).hexdigest() != want:
            raise IntegrityError(f"version {manifest.version}: chunk {i} checksum mismatch")


def unpack_weights(manifest: Manifest, blob: bytes) -> dict[str, torch.Tensor]:
    verify(manifest, blob)
    tensors = load_safetensors(blob)
    for name, want in manifest.tensor_sha256:
        if tensor_digest(tensors[name]) != want:
            raise IntegrityError(f"version {manifest.version}: tensor {name} checksum mismatch")
    return tensors


@dataclass
class VersionStore:
    keep: int = 2
    versions: dict[int, tuple[Manifest, bytes]] = field(default_factory=dict)

    @property
    def newest(self) -> int:
        return max(self.versions, default=-1)

    def offer(self, manifest: Manifest, blob: bytes) -> bool:
        """Store a verified version if it is newer than what we hold; returns whether it was taken."""
        if manifest.version <= self.newest:
            return False
        verify(manifest, blob)
        self.versions[manifest.version] = (manifest, blob)
        for old in sorted(self.versions)[:-self.keep]:
            del self.versions[old]
        return True

    def get(self, version: int) -> tuple[Manifest, bytes] | None:
        return self.versions.get(version)
