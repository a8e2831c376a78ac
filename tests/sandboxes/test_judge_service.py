"""The judge on real solutions (correct, wrong, crashing, hanging), an HTTP service, a web page; the service."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from slime_rl.sandboxes.base import RunRequest
from slime_rl.sandboxes.judge import BrowserCheck, HttpCheck, HttpProbe, IOCheck, Judge, PytestCheck, TaskSpec

ADD_TESTS = (
    "from solution import add\n\ndef test_small():\n    assert add(2, 3) == 5\n\n"
    "def test_neg():\n    assert add(-1, 1) == 0\n"
)
SPEC = TaskSpec(
    checks=[PytestCheck(test_code=ADD_TESTS), IOCheck(name="io", stdin="4 5\n", expected_stdout="9")],
    per_check_timeout_s=5,
)
MAIN = (
    "\nif __name__ == '__main__':\n    import sys\n"
    "    a, b = map(int, sys.stdin.read().split())\n    print(add(a, b))\n"
)


@pytest.fixture
def judge(sandbox):
    """Both backends."""
    return Judge(sandbox)


@pytest.fixture
def bwrap_judge(bwrap_sandbox):
    return Judge(bwrap_sandbox)


@pytest.mark.parametrize(
    "solution, reward",
    [
        ("def add(a, b):\n    return a + b\n" + MAIN, 1.0),
        ("def add(a, b):\n    return a - b\n" + MAIN, 0.0),
        ("def add(a, b):\n    return a + b + (a == 2)\n" + MAIN, 0.5),  # fails one unit test, passes the io case
        ("raise RuntimeError('boom')\n", 0.0),
        ("import time\ntime.sleep(60)\n", 0.0),
    ],
)
def test_rewards_for_correct_wrong_partial_crashing_and_hanging(judge, solution, reward):
    report = asyncio.run(judge.score(SPEC.model_copy(update={"per_check_timeout_s": 3}), solution))
    assert report.reward == reward
    assert [c.name for c in report.checks] == ["unit tests", "io"]


def test_all_or_nothing_scoring_and_sandbox_metrics(bwrap_sandbox, tmp_path):
    from slime_rl.metrics import MetricsSink

    judge = Judge(bwrap_sandbox, MetricsSink("judge", run_dir=tmp_path))
    spec = SPEC.model_copy(update={"scoring": "all_or_nothing"})
    assert asyncio.run(judge.score(spec, "def add(a, b):\n    return a + b + (a == 2)\n" + MAIN)).reward == 0.0
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["kind"] == "sandbox" and record["executions"] == 2 and record["failures"] == 1
    assert record["latency_s_mean"] > 0


def test_generated_http_service_is_probed(judge):
    service = """
import json
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ok": True}).encode() if self.path == "/health" else b"hello world"
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", 8000), H).serve_forever()
"""
    spec = TaskSpec(
        checks=[
            HttpCheck(
                probes=[
                    HttpProbe(path="/health", expect_json={"ok": True}),
                    HttpProbe(path="/", expect_body_contains="hello"),
                ]
            )
        ],
        per_check_timeout_s=8,
    )
    assert asyncio.run(judge.score(spec, service)).reward == 1.0
    broken = service.replace("hello world", "goodbye")
    assert asyncio.run(judge.score(spec, broken)).reward == 0.0


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium missing: make test installs it")
def test_generated_web_page_is_checked_in_a_real_browser(bwrap_judge):
    judge = bwrap_judge
    page = (
        "<html><body><button id='b' onclick=\"document.getElementById('out').textContent='clicked!'\">go</button>"
        "<p id='out'>waiting</p></body></html>"
    )
    spec = TaskSpec(checks=[BrowserCheck(click="#b", read="#out", expect_text="clicked!")], per_check_timeout_s=20)
    report = asyncio.run(judge.score(spec, page))
    assert report.reward == 1.0, report
    assert asyncio.run(judge.score(spec, page.replace("clicked!", "nope"))).reward == 0.0


def test_cancelled_judge_kills_its_sandbox_run(judge):  # both backends
    spec = TaskSpec(checks=[IOCheck(expected_stdout="x")], per_check_timeout_s=30, total_timeout_s=60)

    async def go():
        task = asyncio.create_task(judge.score(spec, "import time\ntime.sleep(30)\n"))
        await asyncio.sleep(1.0)
        started = time.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.time() - started

    assert asyncio.run(go()) < 5


def test_service_speaks_sandboxfusion_and_limits_concurrency(sandbox_cfg):
    import uvicorn

    from slime_rl.config import SandboxConfig
    from slime_rl.net import free_port, wait_for_port
    from slime_rl.sandboxes.base import make_sandbox
    from slime_rl.sandboxes.client import SandboxClient
    from slime_rl.sandboxes.service import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(sandbox_cfg.model_copy(update={"concurrency": 1})),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}"
        body = httpx.post(f"{url}/run_code", json={"code": "print(6 * 7)", "language": "python"}, timeout=30).json()
        assert body["status"] == "Success"
        assert body["run_result"]["status"] == "Finished" and body["run_result"]["stdout"].strip() == "42"
        assert set(body["run_result"]) >= {"status", "execution_time", "return_code", "stdout", "stderr"}
        bad = httpx.post(f"{url}/run_code", json={"code": "x", "language": "cobol"})
        assert bad.status_code == 422 and "cobol" in bad.text
        client = SandboxClient(url)
        results = {}

        def one(i):
            results[i] = client.run(RunRequest(code="import time; time.sleep(1); print('done')"))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        started = time.time()
        for t in threads:
            t.start()
        time.sleep(0.4)
        stats = httpx.get(f"{url}/stats").json()
        for t in threads:
            t.join()
        assert stats["running"] == 1 and stats["waiting"] == 2  # concurrency limit 1: the others queue
        assert all(r.status == "Success" for r in results.values())
        assert time.time() - started >= 3.0  # served one at a time
        # the remote backend is the client: a judge can run against the service (or a SandboxFusion deployment)
        remote = make_sandbox(SandboxConfig(backend="remote", remote_url=url))
        report = asyncio.run(Judge(remote).score(SPEC, "def add(a, b):\n    return a + b\n" + MAIN))
        assert report.reward == 1.0, report
        remote.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_client_reads_a_sandboxfusion_response_with_nulls_and_extra_fields():
    from slime_rl.sandboxes.base import RunResult

    body = {
        "status": "Failed",
        "message": "",
        "compile_result": None,
        "executor_pod_name": None,
        "files": {},
        "run_result": {
            "status": "TimeLimitExceeded",
            "execution_time": None,
            "return_code": None,
            "stdout": None,
            "stderr": "",
            "meta": {},
        },
    }
    res = RunResult.model_validate(body)
    assert res.status == "Failed" and res.run_result.status.value == "TimeLimitExceeded"
    assert res.run_result.stdout == "" and res.run_result.execution_time is None
