"""What untrusted code must not be able to do, for each backend."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from slime_rl.sandboxes.base import RunRequest


def run(sandbox, code: str, **kw):
    return sandbox.run(RunRequest(code=code, **kw))


def sandbox_procs(cfg) -> int:
    """Processes of the sandbox uids: bwrap's per-run range and Docker's `nobody`."""
    uids = {65534, *range(cfg.uid_base, cfg.uid_base + cfg.uid_count)}
    count = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "status").read_text().split("Uid:")[1].split()[0]) in uids:
                    count += 1
            except (OSError, IndexError):
                pass
    return count


def test_hello(sandbox):
    res = run(sandbox, "import sys; print('hi', sys.stdin.read())", stdin="there")
    assert res.status == "Success" and res.run_result.stdout.strip() == "hi there"


def test_loopback_server_is_unreachable(sandbox):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.1)
    port = srv.getsockname()[1]
    accepted = []
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                accepted.append(srv.accept())
            except OSError:
                pass

    t = threading.Thread(target=serve)
    t.start()
    code = (
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 2); print('CONNECTED')\n"
        "except OSError as e:\n    print('blocked', e)\n"
    )
    try:
        res = run(sandbox, code)
    finally:
        done.set()
        t.join()
        srv.close()
    assert "CONNECTED" not in res.run_result.stdout and "blocked" in res.run_result.stdout
    assert accepted == []


def test_writes_outside_tmp_fail_and_leave_nothing(sandbox, tmp_path):
    marker = f"slime-escape-{os.getpid()}"
    code = (
        f"import os\nfor p in ['/etc/{marker}', '/usr/{marker}', '/{marker}', '/root/{marker}',"
        f" '{tmp_path}/{marker}']:\n"
        "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError as e:\n        print('denied', p)\n"
        f"open('/tmp/{marker}', 'w').write('ok'); print('tmp ok')"
    )
    res = run(sandbox, code)
    assert "WROTE" not in res.run_result.stdout and "tmp ok" in res.run_result.stdout
    for p in (
        f"/etc/{marker}",
        f"/usr/{marker}",
        f"/{marker}",
        f"/root/{marker}",
        f"{tmp_path}/{marker}",
        f"/tmp/{marker}",
    ):
        assert not Path(p).exists(), p


def test_parent_secrets_and_home_are_invisible(sandbox, monkeypatch):
    secret = f"s3cr3t-value-{os.getpid()}"
    monkeypatch.setenv("SLIME_TEST_SECRET", secret)
    home_file = Path.home() / f".slime-secret-{os.getpid()}"
    home_file.write_text(secret)
    try:
        code = (
            f"import os\nprint(dict(os.environ))\ntry:\n    print(open({str(home_file)!r}).read())\n"
            "except OSError as e:\n    print('no home', e)\n"
        )
        out = run(sandbox, code).run_result.stdout
    finally:
        home_file.unlink()
    assert secret not in out and "no home" in out


def test_fork_bomb_is_contained(sandbox, sandbox_cfg):
    before = sandbox_procs(sandbox_cfg)
    res = run(
        sandbox,
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        run_timeout=3,
    )
    assert res.status == "Failed"
    deadline = time.time() + 10
    while sandbox_procs(sandbox_cfg) > before and time.time() < deadline:
        time.sleep(0.2)
    assert sandbox_procs(sandbox_cfg) <= before


def test_memory_bomb_is_killed(sandbox):
    res = run(sandbox, "x = bytearray(2 * 1024 ** 3)\nprint('allocated')")
    assert res.status == "Failed" and "allocated" not in res.run_result.stdout


def test_cpu_spin_dies_at_the_cpu_limit(sandbox):
    res = run(sandbox, "while True:\n    pass\n", run_timeout=60)
    assert res.run_result.status.value == "TimeLimitExceeded"
    assert res.run_result.execution_time < 6.0 + 1.0  # the CPU limit (2 s) or the backend's wall limit, not 60 s


def test_sleep_dies_at_the_wall_clock_limit(sandbox):
    res = run(sandbox, "import time\ntime.sleep(100)", run_timeout=1.5)
    assert res.run_result.status.value == "TimeLimitExceeded"
    assert res.run_result.execution_time < 10


def test_huge_print_is_capped_promptly(sandbox):
    started = time.time()
    res = run(sandbox, "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n")
    assert len(res.run_result.stdout) <= 64 * 1024
    assert time.time() - started < 30


def test_huge_file_write_fails(sandbox):
    res = run(sandbox, "open('/tmp/big', 'wb').write(b'0' * (64 << 20))\nprint('wrote')")
    assert "wrote" not in res.run_result.stdout and res.status == "Failed"


def test_signals_to_the_parent_are_impossible(sandbox):
    me = os.getpid()
    code = (
        f"import os, signal\nfor pid in (os.getppid(), 1, {me}):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError as e:\n        print('denied', pid, type(e).__name__)\n"
    )
    run(sandbox, code)
    assert os.getpid() == me  # we are alive: nothing reached this process
