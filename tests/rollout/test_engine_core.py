"""The CPU engine in-process: the KV pool's bookkeeping, shared-prefix prefill, the scheduler's continuous batching
(requests joining mid-flight, n samples of one prompt, retract and resume), and all-or-nothing weight swaps."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from slime_rl.rollout.engine_core import EngineCore
from slime_rl.rollout.engine_model import KVPool, ServingLlama, shared_prefix_groups
from slime_rl.rollout.sampling import SamplingParams

SYSTEM = list(range(300, 330))  # a 30-token "system prompt" shared by several requests


@pytest.fixture(scope="module")
def core(tiny_model_path):
    engine = EngineCore(tiny_model_path, max_batch_size=8, threads=1)
    yield engine
    engine.shutdown()


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.0, ignore_eos=True, **kw)


def run_alone(core: EngineCore, ids: list[int], n: int) -> list[int]:
    return core.submit(ids, greedy(n)).future.result(60)["output_ids"]


def test_pool_keeps_live_slots_dense_and_moves_their_caches():
    pool = KVPool(layers=1, kv_heads=1, head_dim=2, dtype=torch.float32)
    seqs = [pool.alloc() for _ in range(5)]  # forces a resize past the initial 4 slots
    for i, s in enumerate(seqs):
        pool.reserve(s, 3)
        with torch.inference_mode():  # the pool's storage is an inference tensor (the forward writes it there)
            pool.data[:, :, s.slot, :, :3] = float(i)
        s.length = 3
    pool.free(seqs[1])
    assert sorted(s.slot for s in pool.seqs) == [0, 1, 2, 3]
    assert seqs[4].slot == 1 and torch.all(pool.data[:, :, 1, :, :3] == 4.0)  # the last one moved into the hole
    pool.reserve(seqs[0], 500)  # capacity growth keeps every cache
    assert pool.capacity >= 503 and torch.all(pool.data[:, :, seqs[4].slot, :, :3] == 4.0)
    twin = pool.fork(seqs[2])
    assert twin.length == 3 and torch.all(pool.data[:, :, twin.slot, :, :3] == 2.0)
    for s in list(pool.seqs):
        pool.free(s)
    assert pool.data is None  # idle pool releases its memory


def test_shared_prefix_groups():
    a, b, c = tuple(SYSTEM + [1, 2]), tuple(SYSTEM + [3]), (5, 6, 7)
    groups = {frozenset(m): common for common, m in shared_prefix_groups([a, b, c, a[:31]], min_shared=16)}
    assert groups == {frozenset({0, 1, 3}): 30, frozenset({2}): 2}  # a[:31] keeps one token of its own to prefill
    assert sorted(shared_prefix_groups([a, c], min_shared=16)) == [(2, [1]), (31, [0])]  # nothing shared


def test_shared_prefix_prefill_matches_separate_prefills(tiny_model_path):
    model = ServingLlama(AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32))
    prompts = [tuple(SYSTEM + [7, 8, 9]), tuple(SYSTEM + [11]), (4, 5, 6)]
    seqs, shared = model.prefill_many(prompts)
    assert [s.length for s in seqs] == [33, 31, 3]
    for p, row in zip(prompts, shared):
        alone = model.prefill([list(p)], [model.pool.alloc()])[0]
        assert (alone - row).abs().max().item() < 1e-4


def test_requests_joining_mid_flight_and_n_samples_change_nothing(core):
    prompts = [SYSTEM + [1], [9, 8, 7, 6], SYSTEM + [2, 3], [42] * 5]
    alone = [run_alone(core, p, 12 + 3 * i) for i, p in enumerate(prompts)]
    first = core.submit(prompts[0], greedy(12))
    while len(first.output_ids) < 3:  # let it decode a few steps before the others arrive
        time.sleep(0.005)
    rest = [core.submit(p, greedy(12 + 3 * i)) for i, p in enumerate(prompts) if i > 0]
    together = [j.future.result(60)["output_ids"] for j in [first, *rest]]
    assert together == alone
    twins = [core.submit(prompts[1], greedy(15)) for _ in range(3)]  # one prefill, copied caches
    assert all(t.future.result(60)["output_ids"] == alone[1] for t in twins)
    assert core.model.pool.data is None  # every slot was freed


def test_retract_then_continue_resumes_from_the_tokens(core):
    ids = [11, 12, 13, 14]
    full = run_alone(core, ids, 40)
    job = core.submit(ids, greedy(40))
    while len(job.output_ids) < 5:
        time.sleep(0.005)
    core.pause("retract").result(10)
    assert job.cache is None and core.info()["cached_tokens"] == 0  # its KV was given up
    core.resume().result(10)
    out = job.future.result(60)
    assert out["output_ids"] == full and out["finish_reason"]["type"] == "length"


def test_weight_swap_is_all_or_nothing_and_names_the_bad_tensor(core):
    params = dict(core.model.hf.named_parameters())
    name = "model.layers.0.mlp.down_proj.weight"
    before = params[name].clone()
    bad = {name: before * 2, "model.layers.1.mlp.up_proj.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="up_proj"):
        core.request_weight_swap(bad, 3).result(10)
    with pytest.raises(ValueError, match="not floating point"):
        core.request_weight_swap({name: before.to(torch.int32)}, 3).result(10)
    assert torch.equal(params[name], before) and core.weight_version == 0
    ids = [21, 22, 23]
    base = run_alone(core, ids, 10)
    # half precision is cast; lm_head.weight is accepted as the tied embedding's other name
    core.request_weight_swap(
        {name: (before * 3).half(), "lm_head.weight": params["model.embed_tokens.weight"]}, 4
    ).result(10)
    assert core.weight_version == 4 and run_alone(core, ids, 10) != base
    core.request_weight_swap({name: before}, 5).result(10)
    assert run_alone(core, ids, 10) == base  # the fused weights the engine runs on follow the parameters


def test_bfloat16_engine_holds_bf16_weights_and_float32_logprobs_near_the_float32_models(tiny_model_path):
    engine = EngineCore(tiny_model_path, max_batch_size=4, threads=1, dtype="bfloat16")
    try:
        assert {p.dtype for p in engine.model.hf.parameters()} == {torch.bfloat16}
        prompt = SYSTEM[:8]
        out = engine.submit(prompt, greedy(6)).future.result(60)
    finally:
        engine.shutdown()
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    ids = torch.tensor(prompt + out["output_ids"])
    with torch.no_grad():
        ref = torch.log_softmax(hf(ids[None]).logits[0, len(prompt) - 1 : -1].float(), -1)
    ref = ref.gather(-1, ids[len(prompt) :, None])[:, 0]
    assert len(out["output_ids"]) == 6
    assert torch.allclose(torch.tensor(out["logprobs"]), ref, atol=0.05)


def test_engine_rejects_a_dtype_that_is_not_floating_point(tiny_model_path):
    with pytest.raises(ValueError, match="engine dtype"):
        EngineCore(tiny_model_path, dtype="int8")
