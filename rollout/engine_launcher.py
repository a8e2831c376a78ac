"""Start engines as processes on free loopback ports and stop them by handle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from slime_rl.children import spawn
from slime_rl.net import free_port


@dataclass
class EngineProcess:
    url: str
    port: int
    proc: subprocess.Popen
    argv: list[str] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout: float = 300.0) -> EngineProcess:
        """Same command, same port: clients and the router see the engine come back at its old address."""
        self.kill()
        return _spawn(self.argv, self.port, self.log_path, timeout)


def _spawn(argv: list[str], port: int, log_path: Path | None, timeout: float) -> EngineProcess:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # its own session (stopped as a group, with anything it starts), killed if the process that started it dies
    proc = spawn(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    engine = EngineProcess(f"http://127.0.0.1:{port}", port, proc, argv, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not engine.alive():
            raise RuntimeError(f"engine exited with {proc.returncode} while starting (log: {log_path})")
        try:
            if httpx.get(f"{engine.url}/health", timeout=1.0).status_code == 200:
                return engine
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    engine.kill()
    raise TimeoutError(f"engine on port {port} not healthy after {timeout:.0f}s (log: {log_path})")


def launch_cpu_engine(
    model_path: str | Path,
    port: int | None = None,
    max_batch_size: int = 32,
    threads: int = 1,
    weight_version: int = 0,
    log_path: str | Path | None = None,
    timeout: float = 300.0,
    dtype: str = "float32",
) -> EngineProcess:
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "slime_rl.cli",
        "engine",
        "serve",
        "--model",
        str(model_path),
        "--port",
        str(port),
        "--max-batch-size",
        str(max_batch_size),
        "--threads",
        str(threads),
        "--weight-version",
        str(weight_version),
        "--dtype",
        dtype,
    ]
    return _spawn(argv, port, Path(log_path) if log_path else None, timeout)


def launch_sglang_server(
    model_path: str | Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    log_path: str | Path | None = None,
    timeout: float = 900.0,
) -> EngineProcess:
    """A real SGLang server on a GPU machine: same native API, same client and router as the CPU engine.

    Install with `pip install slime-rl[sglang]` (CUDA torch first), then e.g.
    `launch_sglang_server("/models/Qwen2.5-7B", extra_args=("--tp", "2", "--mem-fraction-static", "0.8"))`,
    or the config `engines.kind: sglang`. What differs from the CPU engine: SGLang reports one `weight_version`
    per response (no `output_token_weight_versions`; the client fills every token with it), its weights are
    pushed with `/update_weights_from_disk` as here (its `/update_weights_from_tensor` expects SGLang's own
    serialisation), and its bf16 GPU kernels put its logprobs further from the trainer's than fp32 on CPU.
    Not testable on a CPU-only machine: nothing in the test suite starts it.
    """
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    return _spawn(argv, port, Path(log_path) if log_path else None, timeout)
