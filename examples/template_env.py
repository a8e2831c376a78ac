"""A template for your own environment. Copy this file into your package, rename the classes, fill in the bodies.

How slime-rl finds it
---------------------
Name the class in the run config, by dotted path (your module must be importable, e.g. installed or on
PYTHONPATH):

    env:
      name: my_pkg.my_env:MyEnv          # or my_pkg.my_env.MyEnv
      dataset: data/train.jsonl          # one JSON object per line; each row is a `sample` below
      eval_dataset: data/eval.jsonl
      kwargs: {difficulty: 2}            # MyEnv(difficulty=2): the constructor's arguments, nothing else
      dataset_kwargs: {num_samples: 500} # MyEnv.load_dataset(path, split, num_samples=500), nothing else
      max_turns: 4                       # optional: overrides the class's `max_turns` (model turns per episode)
      step_timeout_s: 60                 # reset/step time limit; over it the sample fails, the run goes on
      reward_timeout_s: 30               # reward time limit
      reward_fn: my_pkg.rewards:score    # optional: fn(sample, response_text) -> float replaces the env's reward

or register it under the `slime_rl.envs` entry-point group in your pyproject.toml and use the short name:

    [project.entry-points."slime_rl.envs"]
    my_env = "my_pkg.my_env:MyEnv"       # then env.name: my_env

Both kwargs maps are checked against the signatures once, at start-up: a key the constructor (or `load_dataset`)
does not take stops the run before any episode with `EnvError: env.kwargs: unknown key 'dificulty' for MyEnv ...`.
So take named arguments, not `**kwargs` (a signature with `**kwargs` accepts any key, typos included).

Two ways to build environments
------------------------------
- The simple path: `env.name` names an `Env` subclass. Each episode gets a new instance, `MyEnv(**env.kwargs)`.
  Right for environments whose construction is cheap (most single-turn tasks, tool-use games).
- A factory: `env.name` names an `EnvFactory` subclass (`TemplateFactory` below). It is built once per rollout
  worker, as `MyFactory(**env.kwargs)`, and owns what episodes share and what is expensive to build: a judge, an
  HTTP client, a sandbox pool, a loaded scoring model. `new_episode()` returns a fresh per-episode `Env` handed
  those shared things; `async close()` releases them, once, when the worker stops. Its class attribute `env_class`
  names the `Env` subclass it returns (the run takes `name` and `max_turns` from there), and its `load_dataset`
  defaults to that class's. examples/code_env.py's `CodeEnvFactory` shares one judge and sandbox pool this way.

The contract (slime_rl.env_api)
-------------------------------
- One environment instance per episode: keep per-episode state on `self`; shared state lives in a factory.
- Single-turn: subclass `SingleTurnEnv`, implement `prompt(sample) -> messages` and
  `reward(sample, response_text) -> float`. `reward` is plain code (run in a thread, so it may block).
- Multi-turn: subclass `Env`, implement `async reset(sample) -> ResetResult(messages=...)` and
  `async step(response_text) -> StepResult(observation=..., done=..., reward=...)`. Until `done`, the observation
  is appended as the next chat turn (role `observation_role`, default "user") and the model answers again.
  An episode is cut after `max_turns` model turns: the class attribute (8 for `Env`, 1 for `SingleTurnEnv`), or
  `env.max_turns` in the config. `reward` is required on the step that ends the episode, by `done=True` or by that
  cut: a step with `done=False` should carry the reward the episode gets if it is cut there.
- Token-in-token-out: you only ever see text. The worker keeps the model's tokens exactly as the engine sampled
  them (trained, loss mask 1) and tokenises your observations once (not trained, loss mask 0).
- Failures are contained: an exception in new_episode, or an exception or a timeout in reset/step/reward/close,
  marks that one sample `failed` (its reason in `metadata["reason"]`); the worker keeps going.
- `info` returned by a step is merged into the trajectory's metadata (shown on the dashboard).
- `load_dataset(path, split, ...)`: a class method; defaults to reading a JSONL file; override it to generate data,
  taking the generator's options (`env.dataset_kwargs`) as named arguments.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from slime_rl.env_api import Env, EnvFactory, Messages, ResetResult, SingleTurnEnv, StepResult


class TemplateSingleTurnEnv(SingleTurnEnv):
    """Rows look like {"question": "...", "answer": "..."}; reward 1 when the answer appears in the response."""

    name = "template-single-turn"

    def prompt(self, sample: dict[str, Any]) -> Messages:
        return [{"role": "user", "content": sample["question"]}]

    def reward(self, sample: dict[str, Any], response_text: str) -> float:
        return float(str(sample["answer"]).strip().lower() in response_text.lower())


class TemplateMultiTurnEnv(Env):
    """A guessing game: the model guesses a number, the environment answers "higher"/"lower" until it is right.
    Rows look like {"secret": 7}; reward 1 for a hit, less the more turns it took."""

    name = "template-multi-turn"
    max_turns = 4  # one per guess: the episode ends by itself within max_guesses (default 4) turns

    def __init__(self, low: int = 0, high: int = 9, max_guesses: int = 4):
        self.low, self.high, self.max_guesses = low, high, max_guesses
        self.guesses = 0
        self.secret = 0

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        self.secret, self.guesses = int(sample["secret"]), 0
        return ResetResult(
            messages=[
                {
                    "role": "user",
                    "content": (f"I picked a number from {self.low} to {self.high}. Guess it: reply with one number."),
                }
            ]
        )

    async def step(self, response_text: str) -> StepResult:
        self.guesses += 1
        digits = "".join(ch if ch.isdigit() else " " for ch in response_text).split()
        guess = int(digits[0]) if digits else None
        if guess == self.secret:
            return StepResult(done=True, reward=1.0 - 0.2 * (self.guesses - 1), info={"guesses": self.guesses})
        if self.guesses >= self.max_guesses:
            return StepResult(done=True, reward=0.0, info={"guesses": self.guesses})
        hint = "Reply with one number." if guess is None else ("Higher." if guess < self.secret else "Lower.")
        return StepResult(observation=hint, done=False, reward=0.0)  # the reward if max_turns runs out here

    @classmethod
    def load_dataset(cls, path: Any, split: str = "train", low: int = 0, high: int = 9) -> list[dict[str, Any]]:
        if path is not None:
            return super().load_dataset(path, split)
        return [
            {"id": f"{split}-{i}", "secret": low + (i * 7 + (split == "eval")) % (high - low + 1)} for i in range(200)
        ]


def contains_answer(answer: str, response_text: str) -> float:
    """Stands in for a blocking scorer (a reward model, a slow checker)."""
    return float(str(answer).strip().lower() in response_text.lower())


class TemplateSharedEnv(Env):
    """The per-episode side of TemplateFactory: its own state is this episode's sample; the pool is the worker's."""

    name = "template-shared"
    max_turns = 1

    def __init__(self, pool: Executor):
        self.pool = pool
        self.sample: dict[str, Any] = {}

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        self.sample = sample
        return ResetResult(messages=[{"role": "user", "content": sample["question"]}])

    async def step(self, response_text: str) -> StepResult:
        loop = asyncio.get_running_loop()
        reward = await loop.run_in_executor(self.pool, contains_answer, self.sample["answer"], response_text)
        return StepResult(reward=reward, done=True)


class TemplateFactory(EnvFactory):
    """Built once per rollout worker: owns a thread pool for the blocking scorer (stand-in for a judge, an HTTP
    client or a sandbox pool), hands it to every episode, shuts it down in close(). `env.kwargs: {threads: 2}`."""

    env_class = TemplateSharedEnv  # its load_dataset (a JSONL file) is the factory's too

    def __init__(self, threads: int = 2):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="template-scorer")

    def new_episode(self) -> TemplateSharedEnv:
        return TemplateSharedEnv(self.pool)

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, wait=True)
