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
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .engine_model import KVCache, ServingLlama
from .sampling import SamplingParams, sample_next

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
    cache: KVCache | None = None
    finish: dict[str, Any] | None = None
    generator: torch.Generator | None = None
    created: float = field(default_factory=time.time)

    def result(self) -> dict[str, Any]:
        return {"rid": self.rid, "input_ids": self.input_ids, "output_ids": list(self.output_ids),
                "logprobs": list(self.logprobs), "versions": list(self.versions), "finish_reason": self.finish}


class EngineCore:
    def __init__(self, model_path: str | Path, max_batch_size: int = 32, weight_version: int = 0,
                 threads: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_path = str(model_path)
        hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
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
    def submit(self, input_ids: list[int], params: SamplingParams, rid: str | None = None,
               on_token: Callable[[Request], None] | None = None) -> Request:
        bad = [t for t in input_ids if not 0 <= t < self.model.vocab_size]
        if not input_ids or bad:
            raise ValueError(f"input_ids: empty or out of vocabulary range [0, {self.model.vocab_size}): {bad[:5]}")
        if len(input_ids) + params.max_new_tokens > self.model.max_positions:
            raise ValueError(f"input_ids + max_new_tokens exceeds the model's {self.model.max_positions} positions")
        req = Request(rid or uuid.uuid4().hex, list(input_ids), params, on_token)
        req.generator = torch.Generator().manual_seed(params.seed if params.seed is not None else next(self._seeds))
        self._call(lambda: self.waiting.append(req))
        return req

    def abort(self, rid: str | None = None, abort_all: bool = False) -> Future:
        return self._call(lambda: self._abort(lambda r: abort_all or r.rid == rid or r.rid.startswith(f"{rid}-")))

    def pause(self, mode: str = "abort") -> Future:
        def op():
            self.paused = True
            if mode == "abort":
                self._abort(lambda r: True)
            elif mode == "retract":  # give up KV caches; the requests re-prefill from their tokens on continue
                for r in self.running:
                    r.cache = None
                self.waiting[:0] = self.running
                self.running = []
        return self._call(op)

    def resume(self) -> Future:
        return self._call(lambda: setattr(self, "paused", False))

    def request_weight_swap(self, named_tensors: dict[str, torch.Tensor], version: int | None = None) -> Future:
        """Copy the given HF-named tensors into the model between decode steps (all or nothing)."""
        params = dict(self.model.hf.named_parameters())
        for name, t in named_tensors.items():
            if name not in params:
                raise KeyError(f"unknown parameter {name!r}")
            if tuple(t.shape) != tuple(params[name].shape):
                raise ValueError(f"{name}: shape {tuple(t.shape)} != model's {tuple(params[name].shape)}")

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
        own = dict(self.model.hf.named_parameters())
        if "lm_head.weight" in tensors and "lm_head.weight" not in own:
            tensors.pop("lm_head.weight")  # tied embeddings
        return self.request_weight_swap(tensors, version)

    def set_version(self, version: int) -> Future:
        return self._call(lambda: setattr(self, "weight_version", int(version)))

    def flush_cache(self) -> Future:
        return self._call(lambda: None)  # caches are per request and freed when it finishes

    def info(self) -> dict[str, Any]:
        return {"weight_version": str(self.weight_version), "max_batch_size": self.max_batch_size,
                "num_running_reqs": len(self.running), "num_waiting_reqs": len(self.waiting),
                "generated_tokens_total": self.generated_tokens_total, "paused": self.paused,
                "model_path": self.model_path}

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
                    if not r.future.done():
                        r.future.set_exception(exc)
                self.waiting, self.running = [], []

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
            self.waiting = self.waiting[len(batch):]
            # requests sharing a prompt (the n samples of a GRPO group) prefill once and copy the cache
            fresh: dict[tuple[int, ...], list[Request]] = {}
            for r in batch:
                fresh.setdefault(tuple(r.input_ids + r.output_ids), []).append(r)
            keys = list(fresh)
            caches = [self.model.new_cache(len(k) + fresh[k][0].params.max_new_tokens) for k in keys]
            logits = self.model.forward([list(k) for k in keys], caches)
            for i, k in enumerate(keys):
                for j, r in enumerate(fresh[k]):
                    r.cache = caches[i] if j == 0 else caches[i].clone()
                    self._emit(r, logits[i])
            self.running += [r for r in batch if r.finish is None]

    def _decode_step(self) -> None:
        batch = self.running
        logits = self.model.forward([[r.output_ids[-1]] for r in batch], [r.cache for r in batch])
        for r, row in zip(batch, logits):
            self._emit(r, row)
        self.running = [r for r in batch if r.finish is None]

    def _emit(self, r: Request, logits: torch.Tensor) -> None:
        token, logprob = sample_next(logits, r.params, r.generator)
        r.output_ids.append(token)
        r.logprobs.append(logprob)
        r.versions.append(self.weight_version)
        self.generated_tokens_total += 1
        if token in r.params.stop_token_ids or (token in self.eos_ids and not r.params.ignore_eos):
            r.finish = {"type": "stop", "matched": token}
        elif len(r.output_ids) >= r.params.max_new_tokens:
            r.finish = {"type": "length", "length": len(r.output_ids)}
        if r.on_token:
            r.on_token(r)
        if r.finish is not None:
            self._finish(r)

    def _finish(self, r: Request) -> None:
        r.cache = None
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
