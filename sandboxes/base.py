"""The sandbox contract, in SandboxFusion's request/response shapes, so local backends, the HTTP service and an
existing SandboxFusion deployment are interchangeable."""

from __future__ import annotations

import base64
import threading
from enum import Enum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slime_rl.config import SandboxConfig

LANGUAGES = {"python": ("main.py", ["python3", "main.py"]), "bash": ("main.sh", ["bash", "main.sh"])}


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # SandboxFusion clients send more fields than we use
    code: str
    language: str = "python"
    run_timeout: float | None = Field(None, gt=0)
    memory_limit_MB: int | None = Field(None, gt=0)
    stdin: str | None = None
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> base64 content")

    @field_validator("language")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in LANGUAGES:
            raise ValueError(f"unsupported language {v!r}; supported: {', '.join(LANGUAGES)}")
        return v

    @field_validator("files")
    @classmethod
    def _relative(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v:
            p = Path(path)
            if p.is_absolute() or ".." in p.parts:
                raise ValueError(f"files: {path!r} must be a relative path inside the sandbox")
        return v


class RunStatus(str, Enum):
    FINISHED = "Finished"
    ERROR = "Error"
    TIME_LIMIT = "TimeLimitExceeded"


class CommandResult(BaseModel):
    # SandboxFusion deployments may send nulls and extra fields; read them leniently
    model_config = ConfigDict(extra="ignore")
    status: RunStatus
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str = ""
    stderr: str = ""

    @field_validator("stdout", "stderr", mode="before")
    @classmethod
    def _none_is_empty(cls, v: str | None) -> str:
        return v or ""


class RunResult(BaseModel):
    status: str  # Success | Failed | SandboxError
    message: str = ""
    run_result: CommandResult | None = None

    @classmethod
    def from_command(cls, res: CommandResult) -> RunResult:
        ok = res.status == RunStatus.FINISHED and res.return_code == 0
        return cls(status="Success" if ok else "Failed", run_result=res)


class Sandbox(Protocol):
    """Sync and thread-safe; async callers use `asyncio.to_thread`. Setting `cancel` kills the run at once."""

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult: ...

    def close(self) -> None: ...


def write_files(root: Path, req: RunRequest) -> list[str]:
    """Materialise the program and its files in `root`; returns the command to run inside the sandbox."""
    name, argv = LANGUAGES[req.language]
    (root / name).write_text(req.code)
    for rel, b64 in req.files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(b64))
    return argv


def make_sandbox(cfg: SandboxConfig) -> Sandbox:
    if cfg.backend == "bwrap":
        from .bwrap import BwrapSandbox

        return BwrapSandbox(cfg)
    if cfg.backend == "docker":
        from .docker_backend import DockerSandbox

        return DockerSandbox(cfg)
    from .client import SandboxClient

    if not cfg.remote_url:
        raise ValueError("sandbox.remote_url: backend=remote needs the service URL")
    return SandboxClient(cfg.remote_url)
