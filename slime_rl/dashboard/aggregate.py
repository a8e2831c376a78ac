"""Metric records -> what the dashboard shows. Pure: fed records, asked for a snapshot; no server, no Redis."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

MAX_POINTS = 600
MAX_TRAJECTORIES = 100


class Aggregator:
    def __init__(self) -> None:
        self.series: dict[str, deque] = {}
        self.staleness: Counter[str] = Counter()
        self.engine_versions: dict[str, int] = {}
        self.sync_s: dict[str, float] = {}
        self.trajectories: deque[dict[str, Any]] = deque(maxlen=MAX_TRAJECTORIES)
        self.latest: dict[str, float] = {}
        self.totals: Counter[str] = Counter()
        self.records = 0

    def _point(self, name: str, t: float, value: float | None) -> None:
        if value is None:
            return
        self.series.setdefault(name, deque(maxlen=MAX_POINTS)).append((t, float(value)))
        self.latest[name] = float(value)

    def add(self, rec: dict[str, Any]) -> None:
        self.records += 1
        kind, t = rec.get("kind"), float(rec.get("t", 0.0))
        if kind == "rollout":
            self.totals["rollout_tokens"] += rec.get("tokens", 0)
            self.totals["trajectories"] += rec.get("trajectories", 0)
            self._point("rollout_tokens_total", t, self.totals["rollout_tokens"])
            self._point("trajectories_total", t, self.totals["trajectories"])
            self._point(f"rollout_tps:{rec.get('engine', '?')}", t, rec.get("tokens_per_s"))
            self._point("rollout_reward", t, rec.get("reward_mean"))
        elif kind == "trainer":
            for key in (
                "reward_mean",
                "masked_frac",
                "step_time_s",
                "tokens_per_s",
                "loss",
                "logp_diff_mean",
                "version",
                "grad_norm",
                "clip_frac",
            ):
                self._point(f"trainer_{key}", t, rec.get(key))
            for lag, count in (rec.get("staleness_hist") or {}).items():
                self.staleness[str(lag)] += int(count)
        elif kind == "buffer":
            for key in ("depth", "pending", "produced", "consumed", "dead_lettered"):
                self._point(f"buffer_{key}", t, rec.get(key))
        elif kind == "relay":
            self.engine_versions.update({k: int(v) for k, v in (rec.get("engine_versions") or {}).items()})
            self.sync_s.update({k: float(v) for k, v in (rec.get("sync_s") or {}).items()})
            for url, v in (rec.get("sync_s") or {}).items():
                self._point(f"sync_s:{url}", t, v)
        elif kind == "sandbox":
            self.totals["sandbox_executions"] += rec.get("executions", 0)
            self.totals["sandbox_failures"] += rec.get("failures", 0)
            self._point("sandbox_executions_total", t, self.totals["sandbox_executions"])
            self._point("sandbox_failures_total", t, self.totals["sandbox_failures"])
        elif kind == "eval":
            self._point("eval_reward", t, rec.get("reward_mean"))
        elif kind == "trajectory":
            self.trajectories.appendleft(
                {
                    k: rec.get(k)
                    for k in (
                        "id",
                        "group_id",
                        "env",
                        "status",
                        "reward",
                        "length",
                        "text",
                        "prompt_ids",
                        "response_ids",
                        "loss_mask",
                        "versions",
                        "t",
                    )
                }
            )

    def rates(self) -> dict[str, float]:
        """Per-second rates over the last minute of cumulative series (tokens/s, trajectories/s, ...)."""
        out = {}
        for name in ("rollout_tokens_total", "trajectories_total", "sandbox_executions_total"):
            pts = self.series.get(name)
            if pts and len(pts) >= 2:
                t_end, v_end = pts[-1]
                window = [p for p in pts if p[0] >= t_end - 60] or list(pts)
                t0, v0 = window[0]
                out[name.replace("_total", "_per_s")] = (v_end - v0) / (t_end - t0) if t_end > t0 else 0.0
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "latest": dict(self.latest),
            "rates": self.rates(),
            "series": {k: list(v) for k, v in self.series.items()},
            "staleness_hist": dict(sorted(self.staleness.items(), key=lambda kv: int(kv[0]))),
            "engine_versions": dict(self.engine_versions),
            "sync_s": dict(self.sync_s),
            "totals": dict(self.totals),
            "trajectories": [
                {k: v for k, v in tr.items() if k not in ("prompt_ids", "response_ids", "loss_mask", "versions")}
                for tr in self.trajectories
            ],
        }

    def trajectory(self, traj_id: str) -> dict[str, Any] | None:
        return next((t for t in self.trajectories if t["id"] == traj_id), None)
