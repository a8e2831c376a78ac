"""The Trajectory: the one record that flows from rollout to loss.

Token-in-token-out: response_ids are exactly what the engine produced plus environment observation tokens
(loss_mask 0). Per-token arrays (loss_mask, rollout_logprobs, versions) are aligned with response_ids.
On the wire a trajectory group is msgpack with the per-token arrays packed as little-endian binary
(int32 ids/versions, float32 logprobs, uint8 mask): a 2,000-token trajectory is ~18 KB, not ~60 KB of JSON.
"""
from __future__ import annotations

import time
import uuid
from enum import Enum
from typing import Any

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

WIRE_VERSION = 1


class TrajectoryError(ValueError):
    """Raised when bytes or fields do not form a valid trajectory; the message names the field."""


class Status(str, Enum):
    COMPLETED = "completed"
    TRUNCATED = "truncated"
    ABORTED = "aborted"
    FAILED = "failed"


def new_id() -> str:
    return uuid.uuid4().hex


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: str = Field(default_factory=new_id, min_length=1)
    group_id: str = Field(min_length=1)
    prompt_ids: list[int]
    response_ids: list[int] = Field(default_factory=list)
    loss_mask: list[int] = Field(default_factory=list)
    rollout_logprobs: list[float] = Field(default_factory=list)
    versions: list[int] = Field(default_factory=list, description="policy version of each response token")
    reward: float = 0.0
    status: Status = Status.COMPLETED
    env_name: str = ""
    finish_reason: str | None = None
    prompt_index: int = -1
    sample_index: int = 0
    timing: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aligned(self) -> Trajectory:
        n = len(self.response_ids)
        for name in ("loss_mask", "rollout_logprobs", "versions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, response_ids has {n}")
        if any(m not in (0, 1) for m in self.loss_mask):
            raise ValueError("loss_mask entries must be 0 or 1")
        if not self.prompt_ids:
            raise ValueError("prompt_ids is empty")
        if any(t < 0 for t in self.prompt_ids) or any(t < 0 for t in self.response_ids):
            raise ValueError("token ids must be non-negative")
        if not np.isfinite(self.reward):
            raise ValueError("reward is not finite")
        return self

    # --- derived views -------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    @property
    def first_version(self) -> int:
        """Version of the first model-generated token (the staleness clock); -1 if none was generated."""
        for v, m in zip(self.versions, self.loss_mask):
            if m:
                return v
        return -1

    @property
    def trainable(self) -> bool:
        return self.status in (Status.COMPLETED, Status.TRUNCATED) and any(self.loss_mask)

    # --- wire ----------------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"prompt_ids", "response_ids", "loss_mask", "rollout_logprobs", "versions"})
        d["status"] = self.status.value
        d["prompt_ids"] = np.asarray(self.prompt_ids, dtype="<i4").tobytes()
        d["response_ids"] = np.asarray(self.response_ids, dtype="<i4").tobytes()
        d["loss_mask"] = np.asarray(self.loss_mask, dtype="u1").tobytes()
        d["rollout_logprobs"] = np.asarray(self.rollout_logprobs, dtype="<f4").tobytes()
        d["versions"] = np.asarray(self.versions, dtype="<i4").tobytes()
        return d

    @classmethod
    def from_wire(cls, d: Any) -> Trajectory:
        if not isinstance(d, dict):
            raise TrajectoryError(f"trajectory: expected a map, got {type(d).__name__}")
        d = dict(d)
        for name, dtype in (("prompt_ids", "<i4"), ("response_ids", "<i4"), ("loss_mask", "u1"),
                            ("rollout_logprobs", "<f4"), ("versions", "<i4")):
            raw = d.get(name)
            if raw is None:
                raise TrajectoryError(f"trajectory.{name}: missing")
            if not isinstance(raw, bytes):
                raise TrajectoryError(f"trajectory.{name}: expected packed bytes, got {type(raw).__name__}")
            if len(raw) % np.dtype(dtype).itemsize:
                raise TrajectoryError(f"trajectory.{name}: {len(raw)} bytes is not a whole number of {dtype}")
            d[name] = np.frombuffer(raw, dtype=dtype).tolist()
        return validate_trajectory(d)


def validate_trajectory(d: dict[str, Any]) -> Trajectory:
    try:
        return Trajectory.model_validate(d)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        where = f"trajectory.{path}" if path else "trajectory"
        raise TrajectoryError(f"{where}: {err['msg']}") from None


class TrajectoryGroup(BaseModel):
    """All samples of one prompt: the unit stored in the buffer and normalised together (GRPO)."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(default_factory=new_id, min_length=1)
    prompt_index: int = -1
    created_at: float = Field(default_factory=time.time)
    trajectories: list[Trajectory] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_group(self) -> TrajectoryGroup:
        for i, t in enumerate(self.trajectories):
            if t.group_id != self.group_id:
                raise ValueError(f"trajectories[{i}].group_id {t.group_id!r} != group_id {self.group_id!r}")
        return self

    def to_bytes(self) -> bytes:
        return msgpack.packb({
            "v": WIRE_VERSION,
            "group_id": self.group_id,
            "prompt_index": self.prompt_index,
            "created_at": self.created_at,
            "trajectories": [t.to_wire() for t in self.trajectories],
        }, use_bin_type=True)

    @classmethod
    def from_bytes(cls, raw: bytes, max_bytes: int | None = None) -> TrajectoryGroup:
        if max_bytes is not None and len(raw) > max_bytes:
            raise TrajectoryError(f"group: {len(raw)} bytes exceeds the limit of {max_bytes}")
        try:
            d = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types for corrupt input
            raise TrajectoryError(f"group: undecodable msgpack ({type(exc).__name__}: {exc})") from None
        if not isinstance(d, dict):
            raise TrajectoryError("group: expected a map at top level")
        if d.get("v") != WIRE_VERSION:
            raise TrajectoryError(f"group.v: unsupported wire version {d.get('v')!r}")
        trajs = d.get("trajectories")
        if not isinstance(trajs, list):
            raise TrajectoryError("group.trajectories: missing or not a list")
        parsed = []
        for i, t in enumerate(trajs):
            try:
                parsed.append(Trajectory.from_wire(t))
            except TrajectoryError as exc:
                raise TrajectoryError(f"group.trajectories[{i}].{str(exc).removeprefix('trajectory.')}") from None
        try:
            return cls(group_id=d.get("group_id"), prompt_index=d.get("prompt_index", -1),
                       created_at=d.get("created_at", 0.0), trajectories=parsed)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise TrajectoryError(f"group.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
