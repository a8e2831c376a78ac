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
from slime_rl.env_api import Env, SingleTurnEnv, StepResult
from slime_rl.trajectory import Status, Trajectory

from .engine_client import EngineError, GenerateResult
from .partial import Partial
from .router import Router


def encode_chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def observation_ids(tokenizer, history: list[dict[str, str]], reply: str, observation: str, role: str,
                    ended_with_eos: bool) -> list[int]:
    """Tokens that close the model's turn (if it did not emit EOS itself) and open the observation turn plus the
    next assistant turn, from the chat template's own rendering."""
    with_reply = history + [{"role": "assistant", "content": reply}]
    before = tokenizer.apply_chat_template(with_reply, tokenize=False)
    after = tokenizer.apply_chat_template(with_reply + [{"role": role, "content": observation}],
                                          add_generation_prompt=True, tokenize=False)
    suffix = after[len(before):] if after.startswith(before) else after
    eos = tokenizer.eos_token or ""
    end_of_reply = before[before.rfind(eos) + len(eos):] if ended_with_eos and eos in before else (
        before[before.rfind(reply) + len(reply):] if reply and reply in before else "")
    return tokenizer(end_of_reply + suffix, add_special_tokens=False)["input_ids"]


class EpisodeRunner:
    def __init__(self, env_cls: type[Env], env_cfg: EnvConfig, sampling: SamplingConfig, tokenizer, router: Router):
        self.env_cls, self.env_cfg, self.sampling, self.tok, self.router = env_cls, env_cfg, sampling, tokenizer, router
        self.eos_id = tokenizer.eos_token_id

    def sampling_params(self, max_new_tokens: int, greedy: bool) -> dict[str, Any]:
        s = self.sampling
        return {"max_new_tokens": max_new_tokens, "temperature": 0.0 if greedy else s.temperature,
                "top_p": s.top_p, "top_k": s.top_k}

    async def run(self, sample: dict[str, Any], group_id: str, index: int, greedy: bool = False,
                  resume: Partial | None = None) -> Trajectory | Partial:
        started = time.time()
        env = self.env_cls(**self.env_cfg.kwargs)
        key = resume.key if resume else f"{group_id}-{index}"
        traj = Trajectory(group_id=group_id, prompt_ids=[0], env_name=getattr(env, "name", self.env_cls.__name__),
                          sample_index=index, metadata={"sample_id": sample.get("id")})
        try:
            reset = await asyncio.wait_for(env.reset(sample), self.env_cfg.step_timeout_s)
            history = list(reset.messages)
            traj.prompt_ids = resume.prompt_ids if resume else encode_chat(self.tok, history)
            if resume:
                traj.response_ids, traj.rollout_logprobs = list(resume.output_ids), list(resume.logprobs)
                traj.versions, traj.loss_mask = list(resume.versions), [1] * len(resume.output_ids)
            for turn in range(self.env_cfg.max_turns):
                budget = self.sampling.max_new_tokens - (len(resume.output_ids) if resume and turn == 0 else 0)
                res = await self.router.generate(key, traj.prompt_ids + traj.response_ids,
                                                 self.sampling_params(budget, greedy), rid=f"{key}-{turn}-{time.time_ns()}")
                assert isinstance(res, GenerateResult)
                traj.response_ids += res.output_ids
                traj.rollout_logprobs += res.logprobs
                traj.versions += res.versions
                traj.loss_mask += [1] * len(res.output_ids)
                if res.finish_reason == "abort":
                    return self._aborted(traj, sample, key, turn)
                n_model = len(res.output_ids) + (len(resume.output_ids) if resume and turn == 0 else 0)
                reply = self.tok.decode(traj.response_ids[-n_model:], skip_special_tokens=True)
                step = await self._step(env, reply)
                traj.finish_reason = res.finish_reason
                if step.done or turn == self.env_cfg.max_turns - 1:
                    if step.reward is None:
                        raise ValueError("environment finished the episode without a reward")
                    traj.reward = float(step.reward)
                    traj.status = Status.TRUNCATED if res.finish_reason == "length" and not step.done else Status.COMPLETED
                    traj.metadata.update(step.info)
                    break
                ended = bool(res.output_ids) and res.output_ids[-1] == self.eos_id
                obs = observation_ids(self.tok, history, reply, step.observation or "", step.observation_role, ended)
                history += [{"role": "assistant", "content": reply},
                            {"role": step.observation_role, "content": step.observation or ""}]
                traj.response_ids += obs
                traj.rollout_logprobs += [0.0] * len(obs)
                traj.versions += [-1] * len(obs)
                traj.loss_mask += [0] * len(obs)
        except (asyncio.TimeoutError, EngineError) as exc:
            self._fail(traj, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # any bug in user code fails this sample only
            self._fail(traj, f"{type(exc).__name__}: {exc}")
        finally:
            try:
                await asyncio.wait_for(env.close(), 10)
            except Exception:
                pass
        traj.timing = {"start": started, "end": time.time()}
        return traj

    async def _step(self, env: Env, reply: str) -> StepResult:
        timeout = self.env_cfg.reward_timeout_s
        if isinstance(env, SingleTurnEnv) and type(env).step is SingleTurnEnv.step:
            # user reward functions are plain (maybe blocking) code: run them off the event loop
            reward = await asyncio.wait_for(asyncio.to_thread(env.reward, env.sample, reply), timeout)
            return StepResult(reward=float(reward), done=True)
        return await asyncio.wait_for(env.step(reply), timeout)

    def _fail(self, traj: Trajectory, reason: str) -> None:
        traj.status = Status.FAILED
        traj.reward = 0.0
        traj.metadata["failure"] = reason

    def _aborted(self, traj: Trajectory, sample: dict[str, Any], key: str, turn: int) -> Trajectory | Partial:
        if self.env_cfg.max_turns == 1 and turn == 0:
            return Partial(key, sample, traj.group_id, traj.sample_index, traj.prompt_ids, traj.response_ids,
                           traj.rollout_logprobs, traj.versions)
        traj.status = Status.ABORTED  # multi-turn episodes are not resumed mid-conversation
        return traj
