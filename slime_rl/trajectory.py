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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

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
        check_token_arrays(**{name: np.asarray(getattr(self, name)) for name in ARRAY_FIELDS})
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

    @property
    def untrainable_reason(self) -> str | None:
        """Why the trainer cannot learn from this sample; None when it can."""
        if self.trainable:
            return None
        if self.status in (Status.FAILED, Status.ABORTED):
            return self.metadata.get("reason") or self.status.value
        return "no model-generated tokens"

    # --- wire ----------------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        d = self.model_dump(exclude=set(ARRAY_FIELDS))
        d["status"] = self.status.value
        for name, dtype in ARRAY_FIELDS.items():
            d[name] = np.asarray(getattr(self, name), dtype=dtype).tobytes()
        return d

    @classmethod
    def from_wire(cls, d: Any) -> Trajectory:
        """Decode one wire map. Arrays are checked vectorised and the scalar fields by a pydantic model of their
        own, so a 2k-token trajectory is not validated element by element (this runs on every buffer read)."""
        if not isinstance(d, dict):
            raise TrajectoryError(f"trajectory: expected a map, got {type(d).__name__}")
        arrays = {}
        for name, dtype in ARRAY_FIELDS.items():
            raw = d.get(name)
            if raw is None:
                raise TrajectoryError(f"trajectory.{name}: missing")
            if not isinstance(raw, bytes):
                raise TrajectoryError(f"trajectory.{name}: expected packed bytes, got {type(raw).__name__}")
            if len(raw) % np.dtype(dtype).itemsize:
                raise TrajectoryError(f"trajectory.{name}: {len(raw)} bytes is not a whole number of {dtype}")
            arrays[name] = np.frombuffer(raw, dtype=dtype)
        try:
            check_token_arrays(**arrays)
        except ValueError as exc:
            raise TrajectoryError(f"trajectory: {exc}") from None
        header = {k: v for k, v in d.items() if k not in ARRAY_FIELDS}
        try:
            fields = _Header.model_validate(header)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise TrajectoryError(f"trajectory.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if not np.isfinite(fields.reward):
            raise TrajectoryError("trajectory.reward: not finite")
        values = dict(fields)
        values.update({name: arr.tolist() for name, arr in arrays.items()})
        return cls.model_construct(**values)


ARRAY_FIELDS = {
    "prompt_ids": "<i4",
    "response_ids": "<i4",
    "loss_mask": "u1",
    "rollout_logprobs": "<f4",
    "versions": "<i4",
}


def check_token_arrays(prompt_ids, response_ids, loss_mask, rollout_logprobs, versions) -> None:
    n = len(response_ids)
    for name, arr in (("loss_mask", loss_mask), ("rollout_logprobs", rollout_logprobs), ("versions", versions)):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries, response_ids has {n}")
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty")
    if n and (loss_mask.min() < 0 or loss_mask.max() > 1):
        raise ValueError("loss_mask entries must be 0 or 1")
    if prompt_ids.min() < 0 or (n and response_ids.min() < 0):
        raise ValueError("token ids must be non-negative")
    if n and not np.isfinite(rollout_logprobs).all():
        raise ValueError("rollout_logprobs has non-finite values")


# the scalar fields of Trajectory, validated on their own when decoding from the wire
_Header = create_model(
    "TrajectoryHeader",
    __config__=ConfigDict(extra="forbid"),
    **{name: (f.annotation, f) for name, f in Trajectory.model_fields.items() if name not in ARRAY_FIELDS},
)


class TrajectoryGroup(BaseModel):
    """All samples of one prompt: the unit stored in the buffer and normalised together (GRPO)."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(default_factory=new_id, min_length=1)
    prompt_index: int = -1
    created_at: float = Field(default_factory=time.time)
    trajectories: list[Trajectory] = Field(min_length=1)

    @property
    def trainable(self) -> bool:
        """The one definition of a group the trainer can learn from: more than half of its samples ran to a
        trainable end. It depends only on how the episodes went: groups a filter drops on purpose (over the
        staleness bound, zero reward variance) are still trainable groups."""
        return 2 * sum(t.trainable for t in self.trajectories) > len(self.trajectories)

    @model_validator(mode="after")
    def _same_group(self) -> TrajectoryGroup:
        for i, t in enumerate(self.trajectories):
            if t.group_id != self.group_id:
                raise ValueError(f"trajectories[{i}].group_id {t.group_id!r} != group_id {self.group_id!r}")
        return self

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "v": WIRE_VERSION,
                "group_id": self.group_id,
                "prompt_index": self.prompt_index,
                "created_at": self.created_at,
                "trajectories": [t.to_wire() for t in self.trajectories],
            },
            use_bin_type=True,
        )

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
        gid = d.get("group_id")
        if not isinstance(gid, str) or not gid:
            raise TrajectoryError(f"group.group_id: expected a non-empty string, got {gid!r}")
        for i, t in enumerate(parsed):
            if t.group_id != gid:
                raise TrajectoryError(f"group.trajectories[{i}].group_id: {t.group_id!r} != {gid!r}")
        if not parsed:
            raise TrajectoryError("group.trajectories: empty")
        prompt_index, created_at = d.get("prompt_index", -1), d.get("created_at", 0.0)
        if not isinstance(prompt_index, int) or not isinstance(created_at, (int, float)):
            raise TrajectoryError("group.prompt_index/created_at: wrong type")
        # members were validated one by one above; re-validating them would redo the array checks
        return cls.model_construct(
            group_id=gid, prompt_index=prompt_index, created_at=float(created_at), trajectories=parsed
        )
