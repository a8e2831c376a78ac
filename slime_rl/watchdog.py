"""The run's progress watchdog: a small pure state machine that the training loops feed with what each wait for
data brought, and that stops a run which cannot make progress with a message naming the cause.

Two ways a run stops progressing:
- batches keep arriving but none holds a trainable group (`TrajectoryGroup.trainable`: every sample failed or
  was aborted, e.g. an environment that never returns a reward or a reward function that raises): stop after
  `max_untrainable_batches` such batches in a row, with the most frequent failure reasons and their counts;
- nothing arrives for `max_silence_s` (a rollout that hangs, workers blocked at their staleness capacity behind a
  trainer that cannot step): stop with what the rollout side reports.
Groups a filter drops on purpose (staleness, zero reward variance) are trainable groups, so a converged run whose
groups are all filtered does not trip it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from .config import WatchdogConfig
from .results import BatchStats


class RunStalled(RuntimeError):
    """The run cannot make progress; the message names the cause."""


def describe_failures(failures: Counter | dict[str, int], samples: int, top: int = 3) -> str:
    """`24/24 samples failed: EnvError: ... (24x); TimeoutError: ... (2x)`."""
    counts = Counter(failures)
    listed = "; ".join(f"{reason} ({n}x)" for reason, n in counts.most_common(top))
    more = f"; {len(counts) - top} other reasons" if len(counts) > top else ""
    return f"{sum(counts.values())}/{samples} samples failed: {listed}{more}"


class ProgressWatchdog:
    def __init__(self, cfg: WatchdogConfig, clock: Callable[[], float] = time.monotonic):
        self.cfg, self.clock = cfg, clock
        self.untrainable_streak = 0
        self._streak_failures: Counter = Counter()
        self._streak_samples = 0
        self._last_arrival = clock()

    def on_batch(self, batch: BatchStats) -> str | None:
        """A batch reached the trainer. Returns a warning when it held no trainable group; raises RunStalled when
        that happened `max_untrainable_batches` times in a row."""
        self._last_arrival = self.clock()
        if batch.trainable_groups > 0:
            self.untrainable_streak, self._streak_failures, self._streak_samples = 0, Counter(), 0
            return None
        self.untrainable_streak += 1
        self._streak_failures.update(batch.failure_reasons)
        self._streak_samples += batch.samples
        limit = self.cfg.max_untrainable_batches
        if self.untrainable_streak >= limit:
            raise RunStalled(
                f"the run cannot make progress: {self.untrainable_streak} batches in a row held no "
                f"trainable group (watchdog.max_untrainable_batches={limit}); "
                f"{describe_failures(self._streak_failures, self._streak_samples)}"
            )
        return (
            f"batch of {batch.groups} groups held no trainable group "
            f"({self.untrainable_streak}/{limit} before the run stops); "
            f"{describe_failures(batch.failure_reasons, batch.samples)}"
        )

    def on_wait(self, paused: bool, describe_rollout: Callable[[], str]) -> None:
        """A wait for data came back empty. Raises RunStalled once nothing has arrived for `max_silence_s`
        (waiting while rollouts are paused from the dashboard does not count)."""
        now = self.clock()
        if paused:
            self._last_arrival = now
            return
        silent = now - self._last_arrival
        if silent <= self.cfg.max_silence_s:
            return
        streak = ""
        if self.untrainable_streak:
            streak = (
                f" The last {self.untrainable_streak} batches held no trainable group: "
                f"{describe_failures(self._streak_failures, self._streak_samples)}."
            )
        raise RunStalled(
            f"the run cannot make progress: no trajectory reached the trainer for {silent:.0f} s "
            f"(watchdog.max_silence_s={self.cfg.max_silence_s:g}). {describe_rollout()}{streak}"
        )
