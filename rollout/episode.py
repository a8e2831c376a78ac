"""One environment episode, token-in-token-out.

The prompt is rendered with the chat template and tokenised once. Model tokens are appended exactly as the engine
returned them (never re-tokenised) with loss mask 1, their logprobs and per-token versions; environment
observations are rendered as the next chat turn, tokenised once, and appended with loss mask 0, logprob 0 and
version -1. An exception or timeout in the environment fails the sample, not the worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slime_rl.config import EnvConfig, SamplingConfig
from slime_rl.env_api import Env, EnvError, EnvFactory, SingleTurnEnv, StepResult, load_reward_fn
from slime_rl.trajectory import Status, Trajectory

from .engine_client import GenerateResult
from .partial import Partial
from .router import Router


def encode_chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def observation_ids(
    tokenizer, history: list[dict[str, str]], reply: str, observation: str, role: str, ended_with_eos: bool
) -> list[int]:
    """Tokens that close the model's turn (if it did not emit EOS itself) and open the observation turn plus the
    next assistant turn, from the chat template's own rendering."""
    with_reply = history + [{"role": "assistant", "content": reply}]
    before = tokenizer.apply_chat_template(with_reply, tokenize=False)
    after = tokenizer.apply_chat_template(
        with_reply + [{"role": role, "content": observation}], add_generation_prompt=True, tokenize=False
    )
    suffix = after[len(before) :] if after.startswith(before) else after
    eos = tokenizer.eos_token or ""
    end_of_reply = (
        before[before.rfind(eos) + len(eos) :]
        if ended_with_eos and eos in before
        else (before[before.rfind(reply) + len(reply) :] if reply and reply in before else "")
    )
    return tokenizer(end_of_reply + suffix, add_special_tokens=False)["input_ids"]


class EpisodeRunner:
    def __init__(self, envs: EnvFactory, env_cfg: EnvConfig, sampling: SamplingConfig, tokenizer, router: Router):
        self.envs, self.env_cfg, self.sampling, self.tok, self.router = envs, env_cfg, sampling, tokenizer, router
        env_cls = envs.env_class
        self.eos_id = tokenizer.eos_token_id
        self._requests = 0  # makes every rid unique
        self._prompt_cache: dict[tuple, list[int]] = {}
        self.aborting: set[str] = set()  # group ids being cut off: start no new request for them
        self.reward_fn = load_reward_fn(env_cfg.reward_fn) if env_cfg.reward_fn else None
        self.max_turns = env_cfg.max_turns or env_cls.max_turns
        self._turn_limit_source = "env.max_turns" if env_cfg.max_turns else f"{env_cls.__name__}.max_turns"

    def encode_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template runs once per prompt, not once per sample of its group."""
        key = tuple((m.get("role", ""), m.get("content", "")) for m in messages)
        ids = self._prompt_cache.get(key)
        if ids is None:
            if len(self._prompt_cache) >= 4096:
                self._prompt_cache.clear()
            ids = self._prompt_cache[key] = encode_chat(self.tok, messages)
        return list(ids)

    def max_new_tokens(self, sample: dict[str, Any]) -> int:
        """Per turn; a dataset row may lower it with its own `max_new_tokens` (e.g. by difficulty)."""
        own = sample.get("max_new_tokens")
        return min(self.sampling.max_new_tokens, int(own)) if own is not None else self.sampling.max_new_tokens

    def sampling_params(self, max_new_tokens: int, greedy: bool) -> dict[str, Any]:
        s = self.sampling
        return {
            "max_new_tokens": max_new_tokens,
            "temperature": 0.0 if greedy else s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "ignore_eos": s.ignore_eos,
        }

    async def run(
        self, sample: dict[str, Any], group_id: str, index: int, greedy: bool = False, resume: Partial | None = None
    ) -> Trajectory | Partial:
        """One episode -> a finished Trajectory (completed/truncated/failed/aborted), or a Partial when a
        single-turn request was cut off and can be resumed from its tokens."""
        started = time.time()
        env: Env | None = None
        key = resume.key if resume else f"{group_id}-{index}"
        traj = Trajectory(
            group_id=group_id,
            prompt_ids=[0],
            env_name=getattr(self.envs.env_class, "name", "env"),
            sample_index=index,
            metadata={"sample_id": sample.get("id")},
            timing={"start": started},
        )
        try:
            env = self.envs.new_episode()
            reset = await asyncio.wait_for(env.reset(sample), self.env_cfg.step_timeout_s)
            history = list(reset.messages)
            traj.prompt_ids = resume.prompt_ids if resume else self.encode_prompt(history)
            carried = 0  # model tokens of the current turn generated before an abort
            if resume:
                carried = len(resume.output_ids)
                traj.response_ids, traj.rollout_logprobs = list(resume.output_ids), list(resume.logprobs)
                traj.versions, traj.loss_mask = list(resume.versions), [1] * carried
                traj.metadata["resumed"] = resume.aborts
            for turn in range(self.max_turns):
                budget = self.max_new_tokens(sample) - carried
                res = GenerateResult([], [], [], "length", "", "")  # a resume with no budget left
                if group_id in self.aborting:
                    res = GenerateResult([], [], [], "abort", "", "")
                elif budget > 0:
                    self._requests += 1
                    res = await self.router.generate(
                        key,
                        traj.prompt_ids + traj.response_ids,
                        self.sampling_params(budget, greedy),
                        rid=f"{key}-t{turn}-{self._requests}",
                    )
                    assert isinstance(res, GenerateResult), "n > 1 is not used by episodes"
                    traj.metadata["engine"] = res.engine
                traj.response_ids += res.output_ids
                traj.rollout_logprobs += res.logprobs
                traj.versions += res.versions
                traj.loss_mask += [1] * len(res.output_ids)
                if res.finish_reason == "abort":
                    return self._aborted(traj, sample, key, turn, resume)
                n_model = len(res.output_ids) + carried
                carried = 0
                reply = self.tok.decode(traj.response_ids[len(traj.response_ids) - n_model :], skip_special_tokens=True)
                step = await self._step(env, reply)
                traj.finish_reason = res.finish_reason
                if step.done or turn == self.max_turns - 1:
                    reward = step.reward if self.reward_fn is None else await self._reward_fn(sample, reply)
                    if reward is None:
                        raise EnvError(self._no_reward(cut=not step.done))
                    traj.reward = float(reward)
                    truncated = res.finish_reason == "length" or not step.done
                    traj.status = Status.TRUNCATED if truncated else Status.COMPLETED
                    traj.metadata.update(step.info)
                    break
                ended = bool(res.output_ids) and res.output_ids[-1] == self.eos_id
                obs = observation_ids(self.tok, history, reply, step.observation or "", step.observation_role, ended)
                history += [
                    {"role": "assistant", "content": reply},
                    {"role": step.observation_role, "content": step.observation or ""},
                ]
                traj.response_ids += obs
                traj.rollout_logprobs += [0.0] * len(obs)
                traj.versions += [-1] * len(obs)
                traj.loss_mask += [0] * len(obs)
                traj.metadata.update(step.info)
        except TimeoutError:
            self._fail(traj, "timeout: the environment did not answer within its time limit")
        except Exception as exc:  # engine errors and any bug in user code fail this sample only
            self._fail(traj, f"{type(exc).__name__}: {exc}")
        finally:
            try:
                if env is not None:
                    await asyncio.wait_for(env.close(), 10)
            except Exception:
                pass
        traj.timing["end"] = time.time()
        return traj

    async def _step(self, env: Env, reply: str) -> StepResult:
        timeout = self.env_cfg.reward_timeout_s
        if isinstance(env, SingleTurnEnv) and type(env).step is SingleTurnEnv.step:
            # user reward functions are plain (maybe blocking) code: run them off the event loop
            reward = await asyncio.wait_for(asyncio.to_thread(env.reward, env.sample, reply), timeout)
            return StepResult(reward=float(reward), done=True)
        return await asyncio.wait_for(env.step(reply), timeout)

    async def _reward_fn(self, sample: dict[str, Any], reply: str) -> float:
        """env.reward_fn(sample, response_text) -> float, sync (run in a thread) or async."""
        timeout = self.env_cfg.reward_timeout_s
        if asyncio.iscoroutinefunction(self.reward_fn):
            return await asyncio.wait_for(self.reward_fn(sample, reply), timeout)
        return await asyncio.wait_for(asyncio.to_thread(self.reward_fn, sample, reply), timeout)

    def _no_reward(self, cut: bool) -> str:
        if not cut:
            return "the environment ended the episode (done=True) without a reward"
        return (
            f"the episode was cut at {self._turn_limit_source}={self.max_turns} and the environment's last step "
            f"gave no reward (set env.max_turns, or return a reward on that step)"
        )

    def _fail(self, traj: Trajectory, reason: str) -> None:
        traj.status = Status.FAILED
        traj.reward = 0.0
        traj.metadata["reason"] = reason

    def _aborted(
        self, traj: Trajectory, sample: dict[str, Any], key: str, turn: int, resume: Partial | None
    ) -> Trajectory | Partial:
        if self.max_turns == 1 and turn == 0:
            return Partial(
                key,
                sample,
                traj.group_id,
                traj.sample_index,
                traj.prompt_ids,
                traj.response_ids,
                traj.rollout_logprobs,
                traj.versions,
                aborts=(resume.aborts + 1) if resume else 1,
            )
        traj.status = Status.ABORTED  # multi-turn episodes are not resumed mid-conversation
        traj.metadata["reason"] = f"aborted in turn {turn}"
        traj.timing["end"] = time.time()
        return traj
