"""The CPU engine's scheduler: one thread owns the model; requests join and leave the decode batch every step.

Between decode steps it applies control operations (weight swaps, aborts, pause/continue, cache flushes), so a
running request keeps its tokens across a weight swap and its later tokens carry the new version.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .engine_model import Seq, ServingLlama
from .sampling import SamplingParams, sample_batch

log = logging.getLogger("slime_rl.engine")


@dataclass
class Request:
    rid: str
    input_ids: list[int]
    params: SamplingParams
    on_token: Callable[[Request], None] | None = None  # streaming hook, called from the scheduler thread
    future: Future = field(default_factory=Future)
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    cache: Seq | None = None  # its slot in the model's KV pool while running
    finish: dict[str, Any] | None = None
    generator: torch.Generator | None = None
    created: float = field(default_factory=time.time)

    def result(self) -> dict[str, Any]:
        return {
            "rid": self.rid,
            "input_ids": self.input_ids,
            "output_ids": list(self.output_ids),
            "logprobs": list(self.logprobs),
            "versions": list(self.versions),
            "finish_reason": self.finish,
        }


class EngineCore:
    def __init__(
        self,
        model_path: str | Path,
        max_batch_size: int = 32,
        weight_version: int = 0,
        threads: int | None = None,
        dtype: str = "float32",
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_path = str(model_path)
        # bfloat16 runs the matrix multiplies on the CPU's bf16 units where it has them (AMX, AVX512-BF16);
        # logits are taken to float32 before sampling and logprobs either way
        hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=_torch_dtype(dtype))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = ServingLlama(hf)
        self.max_batch_size = max_batch_size
        self.weight_version = weight_version
        self.eos_ids = _eos_ids(hf.generation_config, self.tokenizer)
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.control: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self.paused = False
        self.generated_tokens_total = 0
        self._wake = threading.Condition()
        self._stop = False
        self._seeds = itertools.count(1)
        self.thread = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)
        self.thread.start()

    # --- API used by the HTTP server (any thread) -------------------------------------------------------
    def submit(
        self,
        input_ids: list[int],
        params: SamplingParams,
        rid: str | None = None,
        on_token: Callable[[Request], None] | None = None,
    ) -> Request:
        self.validate(input_ids, params)
        req = Request(rid or uuid.uuid4().hex, list(input_ids), params, on_token)
        req.generator = torch.Generator().manual_seed(params.seed if params.seed is not None else next(self._seeds))
        self._call(lambda: self.waiting.append(req))
        return req

    def validate(self, input_ids: list[int], params: SamplingParams) -> None:
        if not input_ids:
            raise ValueError("input_ids: empty prompt")
        bad = [t for t in input_ids if not 0 <= t < self.model.vocab_size]
        if bad:
            raise ValueError(f"input_ids: token ids {bad[:5]} outside the vocabulary [0, {self.model.vocab_size})")
        if len(input_ids) + params.max_new_tokens > self.model.max_positions:
            raise ValueError(
                f"input_ids ({len(input_ids)}) + max_new_tokens ({params.max_new_tokens}) exceeds the "
                f"model's {self.model.max_positions} positions"
            )

    def abort(self, rid: str | None = None, abort_all: bool = False) -> Future:
        return self._call(lambda: self._abort(lambda r: abort_all or r.rid == rid or r.rid.startswith(f"{rid}-")))

    def pause(self, mode: str = "abort") -> Future:
        def op():
            self.paused = True
            if mode == "abort":
                self._abort(lambda r: True)
            elif mode == "retract":  # give up KV caches; the requests re-prefill from their tokens on continue
                for r in self.running:
                    self._release(r)
                self.waiting[:0] = self.running
                self.running = []

        return self._call(op)

    def resume(self) -> Future:
        return self._call(lambda: setattr(self, "paused", False))

    def request_weight_swap(self, named_tensors: dict[str, torch.Tensor], version: int | None = None) -> Future:
        """Copy the given HF-named tensors (a subset is fine) into the model between decode steps. All or
        nothing: a wrong name, shape or dtype fails the returned future, naming the tensor, and changes nothing.
        Floating-point tensors of another precision are cast (as SGLang does); integer/bool ones are refused."""
        # with tied embeddings lm_head.weight is an alias of embed_tokens.weight: accept either name
        params = dict(self.model.hf.named_parameters(remove_duplicate=False))
        try:
            for name, t in named_tensors.items():
                if name not in params:
                    raise KeyError(f"unknown parameter {name!r} (not in {type(self.model.hf).__name__})")
                if tuple(t.shape) != tuple(params[name].shape):
                    raise ValueError(f"{name}: shape {tuple(t.shape)} != model's {tuple(params[name].shape)}")
                if not t.is_floating_point():
                    raise ValueError(f"{name}: dtype {t.dtype} is not floating point (model is {self.model.dtype})")
        except (KeyError, ValueError) as exc:
            failed: Future = Future()
            failed.set_exception(exc)
            return failed

        def op():
            with torch.no_grad():
                for name, t in named_tensors.items():
                    params[name].copy_(t.to(params[name].dtype))
            if version is not None:
                self.weight_version = int(version)

        return self._call(op)

    def load_weights_from_disk(self, path: str, version: int | None = None) -> Future:
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path}")
        tensors: dict[str, torch.Tensor] = {}
        for f in files:
            tensors.update(load_file(str(f)))
        return self.request_weight_swap(tensors, version)

    def set_version(self, version: int) -> Future:
        return self._call(lambda: setattr(self, "weight_version", int(version)))

    def flush_cache(self) -> Future:
        # no cross-request prefix cache to drop: a request's KV slot is freed when it finishes, and the pool's
        # memory is released whenever no request is running
        return self._call(lambda: None)

    def info(self) -> dict[str, Any]:
        return {
            "weight_version": str(self.weight_version),
            "max_batch_size": self.max_batch_size,
            "num_running_reqs": len(self.running),
            "num_waiting_reqs": len(self.waiting),
            "generated_tokens_total": self.generated_tokens_total,
            "paused": self.paused,
            "cached_tokens": sum(s.length for s in self.model.pool.seqs),
            "model_path": self.model_path,
        }

    def shutdown(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self.thread.join(timeout=10)

    # --- scheduler thread --------------------------------------------------------------------------------
    def _call(self, op: Callable[[], Any]) -> Future:
        fut: Future = Future()
        with self._wake:
            self.control.put((op, fut))
            self._wake.notify()
        return fut

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and self.control.empty() and not self._has_work():
                    self._wake.wait()
                if self._stop:
                    return
            self._apply_control()
            try:
                self._admit()
                if self.running and not self.paused:
                    self._decode_step()
            except Exception as exc:  # a bug must fail the requests, not hang them
                log.exception("engine step failed")
                for r in self.waiting + self.running:
                    r.cache = None
                    if not r.future.done():
                        r.future.set_exception(exc)
                self.waiting, self.running = [], []
                self.model.pool.reset()

    def _has_work(self) -> bool:
        return not self.paused and bool(self.waiting or self.running)

    def _apply_control(self) -> None:
        while not self.control.empty():
            op, fut = self.control.get()
            try:
                fut.set_result(op())
            except Exception as exc:
                fut.set_exception(exc)

    def _admit(self) -> None:
        if self.paused:
            return
        while self.waiting and len(self.running) < self.max_batch_size:
            batch = self.waiting[: self.max_batch_size - len(self.running)]
            self.waiting = self.waiting[len(batch) :]
            # requests sharing a prompt (the n samples of a GRPO group) prefill once and copy the cache; distinct
            # prompts with a long common prefix (system prompt, multi-turn history) share that part
            groups: dict[tuple[int, ...], list[Request]] = {}
            for r in batch:
                groups.setdefault(tuple(r.input_ids + r.output_ids), []).append(r)
            self.running += batch  # before any work, so a failure below fails these requests too
            seqs, logits = self.model.prefill_many(list(groups))
            rows = []
            for i, (seq, group) in enumerate(zip(seqs, groups.values())):
                group[0].cache = seq
                for r in group[1:]:
                    r.cache = self.model.pool.fork(seq)
                rows += [i] * len(group)
            self._emit([r for g in groups.values() for r in g], logits[torch.tensor(rows)])

    def _decode_step(self) -> None:
        batch = sorted(self.running, key=lambda r: r.cache.slot)  # pool order: attention reads a dense view
        logits = self.model.decode([r.output_ids[-1] for r in batch], [r.cache for r in batch])
        self._emit(batch, logits)

    def _emit(self, batch: list[Request], logits: torch.Tensor) -> None:
        tokens, logprobs = sample_batch(logits, [r.params for r in batch], [r.generator for r in batch])
        for r, token, logprob in zip(batch, tokens, logprobs):
            r.output_ids.append(token)
            r.logprobs.append(logprob)
            r.versions.append(self.weight_version)
            if token in r.params.stop_token_ids or (token in self.eos_ids and not r.params.ignore_eos):
                r.finish = {"type": "stop", "matched": token}
            elif len(r.output_ids) >= r.params.max_new_tokens:
                r.finish = {"type": "length", "length": len(r.output_ids)}
            if r.on_token:
                r.on_token(r)
        self.generated_tokens_total += len(batch)
        for r in batch:
            if r.finish is not None:
                self._finish(r)
        self.running = [r for r in self.running if r.finish is None]

    def _release(self, r: Request) -> None:
        if r.cache is not None:
            self.model.pool.free(r.cache)
            r.cache = None

    def _finish(self, r: Request) -> None:
        self._release(r)
        if not r.future.done():
            r.future.set_result(r.result())

    def _abort(self, match: Callable[[Request], bool]) -> int:
        hit = [r for r in self.waiting + self.running if match(r)]
        for r in hit:
            r.finish = {"type": "abort", "message": "aborted"}
            if r.on_token:
                r.on_token(r)
            self._finish(r)
        self.waiting = [r for r in self.waiting if r.finish is None]
        self.running = [r for r in self.running if r.finish is None]
        return len(hit)


def _eos_ids(gen_cfg, tokenizer) -> set[int]:
    ids = getattr(gen_cfg, "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"engine dtype must be a floating-point torch dtype such as float32 or bfloat16, got {name!r}")
    return dtype
