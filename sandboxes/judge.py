"""The judge agent: a task spec becomes checks (unit tests, stdin/stdout cases, a build, an HTTP service probe, a
browser check); each runs in the sandbox against the generated solution; the reward is the fraction of checks
passed (or all-or-nothing), with a per-check report that goes into the trajectory's metadata."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from slime_rl.metrics import MetricsSink

from .base import RunRequest, RunResult


class PytestCheck(BaseModel):
    kind: Literal["pytest"] = "pytest"
    name: str = "unit tests"
    test_code: str  # a pytest file that does `from solution import ...`


class IOCheck(BaseModel):
    kind: Literal["io"] = "io"
    name: str = "io case"
    stdin: str = ""
    expected_stdout: str


class BuildCheck(BaseModel):
    kind: Literal["build"] = "build"
    name: str = "build"
    command: str  # bash, run in the folder holding the solution


class HttpProbe(BaseModel):
    path: str = "/"
    method: Literal["GET", "POST"] = "GET"
    body: str | None = None
    expect_status: int = 200
    expect_json: dict | None = None
    expect_body_contains: str | None = None


class HttpCheck(BaseModel):
    kind: Literal["http"] = "http"
    name: str = "http service"
    start_command: list[str] = Field(default_factory=lambda: ["python3", "solution.py"])
    port: int = 8000
    startup_timeout_s: float = 5.0
    probes: list[HttpProbe]


class BrowserCheck(BaseModel):
    kind: Literal["browser"] = "browser"
    name: str = "web page"
    click: str | None = None  # CSS selector to click first
    read: str  # CSS selector whose text is checked
    expect_text: str


Check = Annotated[PytestCheck | IOCheck | BuildCheck | HttpCheck | BrowserCheck, Field(discriminator="kind")]


class TaskSpec(BaseModel):
    checks: list[Check] = Field(min_length=1)
    scoring: Literal["fraction", "all_or_nothing"] = "fraction"
    solution_file: str = "solution.py"
    per_check_timeout_s: float = Field(10.0, gt=0)
    total_timeout_s: float = Field(60.0, gt=0)


class CheckResult(BaseModel):
    name: str
    kind: str
    passed: bool
    detail: str = ""
    duration_s: float = 0.0


class JudgeReport(BaseModel):
    reward: float
    checks: list[CheckResult]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


_HTTP_HARNESS = """
import json, socket, subprocess, sys, time, urllib.request, urllib.error
spec = json.loads(sys.argv[1])
proc = subprocess.Popen(spec["start"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
deadline = time.time() + spec["startup"]
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", spec["port"]), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
results = []
for p in spec["probes"]:
    url = "http://127.0.0.1:%d%s" % (spec["port"], p["path"])
    data = p["body"].encode() if p.get("body") else None
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, data=data, method=p["method"]), timeout=3)
        status, body = r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode(errors="replace")
    except Exception as e:
        status, body = None, repr(e)
    ok = status == p["expect_status"]
    if ok and p.get("expect_json") is not None:
        try: ok = json.loads(body) == p["expect_json"]
        except ValueError: ok = False
    if ok and p.get("expect_body_contains"):
        ok = p["expect_body_contains"] in body
    results.append({"path": p["path"], "status": status, "ok": ok, "body": body[:200]})
proc.kill()
print(json.dumps(results))
"""


class Judge:
    def __init__(self, sandbox, metrics: MetricsSink | None = None):
        self.sandbox, self.metrics = sandbox, metrics

    async def score(self, spec: TaskSpec, solution: str) -> JudgeReport:
        cancel = threading.Event()  # set when this coroutine is cancelled (the rollout was aborted)
        started = time.time()
        results: list[CheckResult] = []
        try:
            for check in spec.checks:
                remaining = spec.total_timeout_s - (time.time() - started)
                if remaining <= 0:
                    results.append(
                        CheckResult(
                            name=check.name, kind=check.kind, passed=False, detail="total judge timeout reached"
                        )
                    )
                    continue
                results.append(
                    await self._run_check(check, spec, solution, min(remaining, spec.per_check_timeout_s), cancel)
                )
        except asyncio.CancelledError:
            cancel.set()
            raise
        passed = sum(r.passed for r in results)
        reward = passed / len(results) if spec.scoring == "fraction" else float(passed == len(results))
        if self.metrics:
            self.metrics.log(
                "sandbox",
                {
                    "executions": len(results),
                    "failures": len(results) - passed,
                    "latency_s_mean": sum(r.duration_s for r in results) / len(results),
                },
            )
        return JudgeReport(reward=reward, checks=results)

    async def _run_check(
        self, check, spec: TaskSpec, solution: str, timeout: float, cancel: threading.Event
    ) -> CheckResult:
        t0 = time.time()
        try:
            passed, detail = await self._dispatch(check, spec, solution, timeout, cancel)
        except Exception as exc:  # a broken check is a failed check, not a crashed judge
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        return CheckResult(
            name=check.name, kind=check.kind, passed=passed, detail=detail[:2000], duration_s=time.time() - t0
        )

    async def _sandboxed(self, req: RunRequest, cancel: threading.Event) -> RunResult:
        return await asyncio.to_thread(self.sandbox.run, req, cancel)

    async def _dispatch(self, check, spec: TaskSpec, solution: str, timeout: float, cancel) -> tuple[bool, str]:
        files = {spec.solution_file: _b64(solution)}
        if check.kind == "pytest":
            files["test_solution.py"] = _b64(check.test_code)
            code = "import sys, pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'test_solution.py']))"
            res = await self._sandboxed(RunRequest(code=code, files=files, run_timeout=timeout), cancel)
            return res.status == "Success", _describe(res)
        if check.kind == "io":
            res = await self._sandboxed(RunRequest(code=solution, stdin=check.stdin, run_timeout=timeout), cancel)
            out = res.run_result.stdout.strip() if res.run_result else ""
            return res.status == "Success" and out == check.expected_stdout.strip(), _describe(res)
        if check.kind == "build":
            res = await self._sandboxed(
                RunRequest(code=check.command, language="bash", files=files, run_timeout=timeout), cancel
            )
            return res.status == "Success", _describe(res)
        if check.kind == "http":
            arg = json.dumps(
                {
                    "start": check.start_command,
                    "port": check.port,
                    "startup": check.startup_timeout_s,
                    "probes": [p.model_dump() for p in check.probes],
                }
            )
            code = f"import sys\nsys.argv = ['harness', {arg!r}]\n" + _HTTP_HARNESS
            res = await self._sandboxed(RunRequest(code=code, files=files, run_timeout=timeout), cancel)
            if res.status != "Success":
                return False, _describe(res)
            probes = json.loads(res.run_result.stdout.strip().splitlines()[-1])
            return all(p["ok"] for p in probes), json.dumps(probes)[:2000]
        if check.kind == "browser":
            from .browser_check import check_page

            return await asyncio.wait_for(
                check_page(solution, check.click, check.read, check.expect_text, timeout), timeout + 5
            )
        raise ValueError(f"unknown check kind {check.kind!r}")


def _describe(res: RunResult) -> str:
    r = res.run_result
    if r is None:
        return f"{res.status}: {res.message}"
    return f"{res.status}/{r.status.value} rc={r.return_code} stdout={r.stdout[-600:]!r} stderr={r.stderr[-600:]!r}"
