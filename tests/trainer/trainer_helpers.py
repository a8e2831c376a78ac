"""Hand-made trajectories and groups for the trainer tests."""

from __future__ import annotations

import torch

from slime_rl.trajectory import Status, Trajectory, TrajectoryGroup


def traj(
    gid: str,
    version: int = 0,
    n: int = 3,
    status: Status = Status.COMPLETED,
    prompt: int = 2,
    reward: float = 0.0,
    tokens: list[int] | None = None,
    logprob: float = -1.0,
) -> Trajectory:
    response = tokens if tokens is not None else [2] * n
    return Trajectory(
        group_id=gid,
        prompt_ids=[1] * prompt,
        response_ids=response,
        loss_mask=[1] * len(response),
        rollout_logprobs=[logprob] * len(response),
        versions=[version] * len(response),
        status=status,
        reward=reward,
    )


def group(gid: str, versions: list[int], **kw) -> TrajectoryGroup:
    return TrajectoryGroup(group_id=gid, trajectories=[traj(gid, v, **kw) for v in versions])


PROMPT = [5, 17, 33, 8]
GOOD, BAD = [101, 102, 103, 104, 105], [201, 202, 203]


def seq_logprobs(policy, prompt: list[int], response: list[int]) -> list[float]:
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        lp = policy.forward_logprobs(ids, torch.arange(ids.shape[1])[None], torch.tensor([0, ids.shape[1]]))
    return lp[0, len(prompt) - 1 : -1].tolist()


def on_policy_group(policy, gid: str, version: int = 0) -> TrajectoryGroup:
    """Two rewarded and two unrewarded samples, with the policy's own logprobs as the rollout logprobs."""
    trajs = []
    for response, reward in ((GOOD, 1.0), (BAD, 0.0), (GOOD, 1.0), (BAD + [7], 0.0)):
        n = len(response)
        trajs.append(
            Trajectory(
                group_id=gid,
                prompt_ids=PROMPT,
                response_ids=response,
                loss_mask=[1] * n,
                rollout_logprobs=seq_logprobs(policy, PROMPT, response),
                versions=[version] * n,
                reward=reward,
            )
        )
    return TrajectoryGroup(group_id=gid, trajectories=trajs)


def run_trainer_until_killed(cfg, redis_url: str, run_dir: str, consumer: str) -> None:
    """Child-process body: train steps forever (the test SIGKILLs this process)."""
    from slime_rl.trainer.actor import TrainerCore

    core = TrainerCore(cfg, redis_url, run_dir, consumer=consumer)
    while True:
        core.train_step(timeout_s=600.0)
