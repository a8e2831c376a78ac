"""Client for the sandbox service and for existing SandboxFusion deployments (same `/run_code` shapes)."""

from __future__ import annotations

import threading

import httpx

from .base import RunRequest, RunResult


class SandboxClient:
    def __init__(self, url: str, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        try:
            resp = self.http.post(f"{self.url}/run_code", json=req.model_dump(exclude_none=True))
        except httpx.HTTPError as exc:
            return RunResult(status="SandboxError", message=f"{type(exc).__name__}: {exc}")
        if resp.status_code != 200:
            return RunResult(status="SandboxError", message=f"HTTP {resp.status_code}: {resp.text[:300]}")
        return RunResult.model_validate(resp.json())

    def close(self) -> None:
        self.http.close()
