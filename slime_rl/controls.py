"""The dashboard's control actions, acted on by the async loop: pause and resume the rollout workers, checkpoint.
Actions arrive on the run's control stream (the dashboard checks the token before writing one)."""

from __future__ import annotations

import ray

from .run_context import RunContext


class ControlInbox:
    def __init__(self, ctx: RunContext):
        from .buffer import connect, stream_tail

        self.ctx, self.stream, self.r = ctx, ctx.keys.control, connect(ctx.redis_url)
        self.last_id = stream_tail(self.r, self.stream)  # only actions sent after the run started
        self.paused = False

    def apply(self, producing: dict[ray.actor.ActorHandle, ray.ObjectRef]) -> None:
        for _, entries in self.r.xread({self.stream: self.last_id}, count=100) or []:
            for eid, fields in entries:
                self.last_id = eid
                self._act(fields.get(b"action", b"").decode(), producing)

    def _act(self, action: str, producing: dict) -> None:
        if action == "pause_rollout" and not self.paused:
            self.ctx.call([w.stop.remote() for w in self.ctx.workers], "stopping the rollout workers")
            # their run() calls return once the groups in flight are cut short
            self.ctx.call(list(producing.values()), "the rollout workers winding down")
            producing.clear()
            self.paused = True
        elif action == "resume_rollout" and self.paused:
            for w in self.ctx.workers:
                producing[w] = w.run.remote()
            self.paused = False
        elif action == "checkpoint":
            self.ctx.call(self.ctx.trainer.save_checkpoint.remote(), "a checkpoint")
        else:
            return
        self.ctx.metrics.log("control", {"action": action})
