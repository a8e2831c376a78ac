"""Prometheus exposition of the dashboard's latest values (a fresh registry per scrape: values are snapshots)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest


def render_prometheus(snap: dict[str, Any]) -> str:
    reg = CollectorRegistry()
    latest, rates, totals = snap["latest"], snap["rates"], snap["totals"]

    def gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None) -> None:
        if value is None:
            return
        g = Gauge(name, doc, list(labels or {}), registry=reg)
        (g.labels(**labels) if labels else g).set(value)

    gauge("slime_rollout_tokens_per_second", "rollout tokens/s over the last minute", rates.get("rollout_tokens_per_s"))
    gauge("slime_trajectories_per_second", "trajectories/s over the last minute", rates.get("trajectories_per_s"))
    gauge("slime_rollout_tokens_total", "tokens generated", totals.get("rollout_tokens"))
    for key in ("depth", "pending", "produced", "consumed", "dead_lettered"):
        gauge(f"slime_buffer_{key}", f"trajectory buffer {key}", latest.get(f"buffer_{key}"))
    for key in ("reward_mean", "masked_frac", "step_time_s", "tokens_per_s", "loss", "version"):
        gauge(f"slime_trainer_{key}", f"trainer {key}", latest.get(f"trainer_{key}"))
    gauge("slime_sandbox_executions_total", "sandbox executions", totals.get("sandbox_executions"))
    gauge("slime_sandbox_failures_total", "sandbox failures", totals.get("sandbox_failures"))
    if snap["engine_versions"]:
        g = Gauge("slime_engine_weight_version", "weight version held by each engine", ["engine"], registry=reg)
        for url, v in snap["engine_versions"].items():
            g.labels(engine=url).set(v)
    if snap["staleness_hist"]:
        g = Gauge("slime_staleness_trajectories", "trained trajectories by lag (versions)", ["lag"], registry=reg)
        for lag, count in snap["staleness_hist"].items():
            g.labels(lag=lag).set(count)
    return generate_latest(reg).decode()
