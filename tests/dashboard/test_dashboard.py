"""Dashboard: API and Prometheus against a real Redis fed through MetricsSink, and a real headless Chromium."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from slime_rl.dashboard.aggregate import Aggregator
from slime_rl.dashboard.app import start_dashboard
from slime_rl.metrics import MetricsSink
from slime_rl.run_keys import RunKeys

OUT = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM = "/usr/bin/chromium"
KEYS = RunKeys("dashboard-test")


def feed(sink: MetricsSink, step: int) -> None:
    sink.log(
        "rollout",
        {
            "engine": "http://e0",
            "tokens": 100,
            "tokens_per_s": 50.0 + step,
            "trajectories": 4,
            "groups": 1,
            "reward_mean": 0.25,
        },
    )
    sink.log(
        "trainer",
        {
            "version": step,
            "reward_mean": 0.2 + 0.1 * step,
            "masked_frac": 0.05,
            "step_time_s": 2.0,
            "tokens_per_s": 400.0,
            "loss": 0.1,
            "staleness_hist": {"0": 3, "1": 1},
        },
        step=step,
    )
    sink.log("buffer", {"depth": 5 + step, "pending": 2, "produced": 10, "consumed": 8, "dead_lettered": 0})
    sink.log("relay", {"version": step, "engine_versions": {"http://e0": step}, "sync_s": {"http://e0": 0.5}})
    sink.log("sandbox", {"executions": 3, "failures": 1, "latency_s_mean": 0.1})
    sink.log(
        "trajectory",
        {
            "id": f"traj-{step}",
            "group_id": "g",
            "env": "arithmetic",
            "status": "completed",
            "reward": 1.0,
            "length": 3,
            "text": "3 + 4 = 7",
            "prompt_ids": [1, 2],
            "response_ids": [10, 11, 12],
            "loss_mask": [1, 0, 1],
            "versions": [step, -1, step],
        },
    )


def wait_records(url: str, n: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        summary = httpx.get(f"{url}api/summary").json()
        if summary["records"] >= n or time.monotonic() > deadline:
            return summary
        time.sleep(0.1)


def test_aggregator_is_pure_and_counts():
    agg = Aggregator()
    agg.add({"kind": "trainer", "t": 1.0, "reward_mean": 0.5, "staleness_hist": {"0": 2, "2": 1}})
    agg.add({"kind": "trainer", "t": 2.0, "reward_mean": 0.7, "staleness_hist": {"0": 1}})
    snap = agg.snapshot()
    assert snap["latest"]["trainer_reward_mean"] == 0.7
    assert snap["staleness_hist"] == {"0": 3, "2": 1}
    assert snap["series"]["trainer_reward_mean"] == [(1.0, 0.5), (2.0, 0.7)]


def test_api_prometheus_and_controls(redis_url):
    sink = MetricsSink("test", redis_url, keys=KEYS)
    for step in (1, 2):
        feed(sink, step)
    dash = start_dashboard(redis_url, KEYS, token="s3cret")
    try:
        summary = wait_records(dash.url, 12)
        assert summary["latest"]["trainer_reward_mean"] == pytest.approx(0.4)
        assert summary["latest"]["buffer_depth"] == 7 and summary["engine_versions"] == {"http://e0": 2}
        assert summary["totals"]["rollout_tokens"] == 200
        trajs = httpx.get(f"{dash.url}api/trajectories").json()
        assert [t["id"] for t in trajs] == ["traj-2", "traj-1"]
        one = httpx.get(f"{dash.url}api/trajectory/traj-2").json()
        assert [t["mask"] for t in one["tokens"]] == [None, None, 1, 0, 1]
        assert httpx.get(f"{dash.url}api/trajectory/nope").status_code == 404
        prom = httpx.get(f"{dash.url}metrics").text
        assert "slime_buffer_depth 7.0" in prom
        assert 'slime_engine_weight_version{engine="http://e0"} 2.0' in prom
        assert 'slime_staleness_trajectories{lag="0"} 6.0' in prom
        r = redis.Redis.from_url(redis_url)
        assert httpx.post(f"{dash.url}api/control/checkpoint").status_code == 401
        assert (
            httpx.post(f"{dash.url}api/control/checkpoint", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        assert r.xlen(KEYS.control) == 0
        ok = httpx.post(f"{dash.url}api/control/pause_rollout", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and r.xrange(KEYS.control)[0][1][b"action"] == b"pause_rollout"
    finally:
        dash.stop()


def test_dashboard_shows_and_controls_only_its_own_run(redis_url):
    other = RunKeys("other-run")  # a second run on the same Redis, with the same source names
    feed(MetricsSink("test", redis_url, keys=other), 5)
    feed(MetricsSink("test", redis_url, keys=KEYS), 1)
    dash = start_dashboard(redis_url, KEYS, token="s3cret")
    try:
        summary = wait_records(dash.url, 7, timeout=3)  # gives the other run's 6 records time to show up
        assert summary["records"] == 6 and summary["latest"]["trainer_reward_mean"] == pytest.approx(0.3)
        assert summary["engine_versions"] == {"http://e0": 1}
        ok = httpx.post(f"{dash.url}api/control/checkpoint", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        r = redis.Redis.from_url(redis_url)
        assert r.xlen(KEYS.control) == 1 and r.xlen(other.control) == 0
    finally:
        dash.stop()


def test_controls_disabled_without_a_token(redis_url):
    dash = start_dashboard(redis_url, KEYS)
    try:
        r = httpx.post(f"{dash.url}api/control/checkpoint", headers={"Authorization": "Bearer x"})
        assert r.status_code == 403
    finally:
        dash.stop()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: `make test` installs it")
def test_page_renders_live_charts_and_trajectory_viewer(redis_url):
    from playwright.sync_api import sync_playwright

    sink = MetricsSink("test", redis_url, keys=KEYS)
    feed(sink, 1)
    dash = start_dashboard(redis_url, KEYS, token="s3cret")
    OUT.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(dash.url)
            page.wait_for_function("window.dashboardState.snapshots > 0 && window.dashboardState.last.records >= 6")
            assert page.text_content("[data-testid=reward]") == "0.300"
            assert page.text_content("[data-testid=buffer]") == "6 / 2"
            assert page.locator("#c-reward canvas").count() == 1  # uPlot drew the chart
            assert page.locator("#c-staleness .bar[data-lag='0']").get_attribute("data-count") == "3"
            feed(sink, 2)  # live update through server-sent events
            page.wait_for_function("document.querySelector('[data-testid=reward]').textContent === '0.400'")
            assert page.text_content("[data-testid=version]") == "2"
            page.click("#trajectories tbody tr[data-id='traj-2']")
            page.wait_for_selector("#viewer:not([hidden])")
            assert page.locator("#tokens .tok.m1").count() == 2 and page.locator("#tokens .tok.m0").count() == 1
            page.click("button[data-action=checkpoint]")  # no token typed: refused
            page.wait_for_function(
                "document.querySelector('[data-testid=control-result]').textContent.includes('refused')"
            )
            page.screenshot(path=str(OUT / "dashboard.png"), full_page=True)
            browser.close()
    finally:
        dash.stop()
    assert (OUT / "dashboard.png").stat().st_size > 10_000
