"""What a relay holds, as a small pure state machine: complete versions only, newest and previous kept, versions
only move forward (a late, older publication is ignored), and a blob is visible only after its checksums match.

Checksums are CRC-32 (zlib): they guard against torn and corrupted transfers, not against an adversary, and at
several GB/s they keep a 0.5 GB push from costing seconds of CPU at each hop on a small machine."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

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
    chunk_checksums: tuple[str, ...]
    tensor_checksums: tuple[tuple[str, str], ...]  # (name, checksum of the tensor bytes)


def checksum(data) -> str:
    return f"{zlib.crc32(data):08x}"


def tensor_digest(t: torch.Tensor) -> str:
    return checksum(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())


def pack_weights(version: int, tensors: dict[str, torch.Tensor], chunk_bytes: int) -> tuple[Manifest, bytes]:
    blob = save_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    view = memoryview(blob)
    chunks = tuple(checksum(view[i:i + chunk_bytes]) for i in range(0, len(blob), chunk_bytes))
    digests = tuple(sorted((k, tensor_digest(v)) for k, v in tensors.items()))
    return Manifest(version, len(blob), chunk_bytes, chunks, digests), blob


def verify(manifest: Manifest, blob: bytes) -> None:
    if len(blob) != manifest.total_bytes:
        raise IntegrityError(f"version {manifest.version}: {len(blob)} bytes, manifest says {manifest.total_bytes}")
    step, view = manifest.chunk_bytes, memoryview(blob)
    for i, want in enumerate(manifest.chunk_checksums):
        if checksum(view[i * step:(i + 1) * step]) != want:
            raise IntegrityError(f"version {manifest.version}: chunk {i} checksum mismatch")


def unpack_weights(manifest: Manifest, blob: bytes) -> dict[str, torch.Tensor]:
    verify(manifest, blob)
    tensors = load_safetensors(blob)
    for name, want in manifest.tensor_checksums:
        if tensor_digest(tensors[name]) != want:
            raise IntegrityError(f"version {manifest.version}: tensor {name} checksum mismatch")
    return tensors


@dataclass
class VersionStore:
    """Holds (manifest, payload) per version: the payload is the verified blob itself, or whatever the caller keeps
    in its place (a relay keeps an object-store reference, so it holds no second copy)."""
    keep: int = 2
    versions: dict[int, tuple[Manifest, Any]] = field(default_factory=dict)

    @property
    def newest(self) -> int:
        return max(self.versions, default=-1)

    def offer(self, manifest: Manifest, blob: bytes, keep_as: Callable[[bytes], Any] | None = None) -> bool:
        """Store a verified version if it is newer than what we hold; returns whether it was taken."""
        if manifest.version <= self.newest:
            return False
        verify(manifest, blob)
        self.versions[manifest.version] = (manifest, keep_as(blob) if keep_as else blob)
        for old in sorted(self.versions)[:-self.keep]:
            del self.versions[old]
        return True

    def get(self, version: int) -> tuple[Manifest, Any] | None:
        return self.versions.get(version)
