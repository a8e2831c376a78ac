"""Metrics from every component: one record type, written to a capped Redis stream (the dashboard's live feed)
and to `metrics.jsonl` in the run directory (the durable record).

Record: {"t": unix time, "source": "trainer-0", "kind": "trainer", "step": 3, ...values}.
Kinds and their fields (the dashboard reads these names):
  rollout    (rollout workers)  engine, tokens, dt_s, tokens_per_s, trajectories, groups, reward_mean,
                                response_len_mean, aborted, failed
  trajectory (rollout workers)  id, group_id, env, status, reward, length, text, prompt_ids, response_ids,
                                loss_mask, versions   (a sample of finished trajectories, for the viewer)
  trainer    (trainer)          TrainStepResult.record() (slime_rl/results.py): state (trained |
                                nothing_trainable), stepped, version, the batch's groups, samples,
                                trainable_groups, kept, dropped_stale, padded, staleness_hist {lag: count},
                                failure_reasons {reason: count}, reward_mean; when trained also loss, masked_frac,
                                clip_frac, logp_diff_mean, grad_norm, tokens, tokens_per_s, step_time_s
  buffer     (trainer/launcher) depth, pending, produced, consumed, dead_lettered
  relay      (relay)            version, publish_s, blocked_s, propagation_s, engine_versions {url: v},
                                sync_s {url: seconds}
  sandbox    (judge)            executions, failures, latency_s_mean
  eval       (launcher)         EvalResult: reward_mean, samples, failed, failure_reasons, response_len_mean
The Redis stream is the run's (RunKeys.metrics); control actions from the dashboard go to the run's control
stream (RunKeys.control) as {"action": ..., "t": ...}.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis

from .run_keys import RunKeys

METRICS_MAXLEN = 20000


class MetricsSink:
    def __init__(
        self, source: str, redis_url: str | None = None, run_dir: str | Path | None = None, keys: RunKeys | None = None
    ):
        if redis_url and keys is None:
            raise ValueError("a MetricsSink that writes to Redis needs the run's keys")
        self.source = source
        self.stream = keys.metrics if keys else ""
        self.r = redis.Redis.from_url(redis_url) if redis_url else None
        self.path = Path(run_dir) / "metrics.jsonl" if run_dir else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, kind: str, values: dict[str, Any], step: int | None = None) -> dict[str, Any]:
        record = {
            "t": time.time(),
            "source": self.source,
            "kind": kind,
            **({"step": step} if step is not None else {}),
            **values,
        }
        line = json.dumps(record, default=_jsonable)
        if self.path:
            # one write() per record on an O_APPEND fd: lines from several processes never interleave
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        if self.r is not None:
            try:
                self.r.xadd(self.stream, {"json": line}, maxlen=METRICS_MAXLEN, approximate=True)
            except redis.RedisError:
                pass  # metrics must never take a component down; the JSONL copy remains
        return record

    def close(self) -> None:
        if self.r is not None:
            self.r.close()


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def read_metrics(
    r: redis.Redis, keys: RunKeys, since_id: str = "0-0", count: int = 1000
) -> tuple[str, list[dict[str, Any]]]:
    """The run's records after `since_id`; returns the last id read (pass it back to get only newer ones)."""
    out, last = [], since_id
    for eid, fields in r.xrange(keys.metrics, min=f"({since_id}" if since_id != "0-0" else "-", count=count):
        last = eid.decode()
        out.append(json.loads(fields[b"json"]))
    return last, out
