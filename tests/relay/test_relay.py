"""Weight relay against real engines (tiny model), a real Redis and real Ray actors."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
import ray
import redis
import torch
from transformers import AutoModelForCausalLM

from slime_rl.config import RelayConfig
from slime_rl.relay.group import RelayGroup
from slime_rl.relay.versions import IntegrityError, VersionStore, pack_weights, unpack_weights, verify
from slime_rl.rollout.engine_launcher import launch_cpu_engine
from slime_rl.run_keys import RunKeys

PROMPT = [1, 504, 3458, 314]
KEYS = RunKeys("relay-test")


@pytest.fixture(scope="module")
def engines(tiny_model_path):
    procs = [launch_cpu_engine(tiny_model_path, threads=1) for _ in range(2)]
    yield procs
    for p in procs:
        p.stop()


def perturbed(model_path, scale: float) -> dict[str, torch.Tensor]:
    hf = AutoModelForCausalLM.from_pretrained(model_path)
    return {k: (v * scale).contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}


def greedy(url: str, n: int = 12) -> dict:
    body = {
        "input_ids": PROMPT,
        "sampling_params": {"max_new_tokens": n, "temperature": 0, "ignore_eos": True},
        "return_logprob": True,
    }
    return httpx.post(f"{url}/generate", json=body, timeout=120).json()


def reference_greedy(model_path, weights: dict[str, torch.Tensor], n: int = 12) -> list[int]:
    hf = AutoModelForCausalLM.from_pretrained(model_path)
    hf.load_state_dict(weights, strict=False)
    out = hf.generate(torch.tensor([PROMPT]), max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, len(PROMPT) :].tolist()


@pytest.mark.parametrize("transport", ["auto", "http"])  # auto: these local engines load from a /dev/shm file
def test_push_reaches_every_engine_with_exactly_the_trainers_weights(
    ray_local, redis_url, engines, tiny_model_path, transport
):
    group = RelayGroup.start(
        RelayConfig(num_relays=2, fanout=1, transport=transport), redis_url, [e.url for e in engines], keys=KEYS
    )
    base = max(group.engine_versions().values())  # the engines are shared by the module: start past their version
    try:
        weights = perturbed(tiny_model_path, 1.05 if transport == "auto" else 1.03)
        receipt = group.publisher().publish(base + 3, weights)
        assert receipt.accepted and receipt.blocked_s > 0
        prop = group.wait_for_version(base + 3, timeout=120)
        assert set(prop) == {e.url for e in engines}
        assert group.engine_versions() == {e.url: base + 3 for e in engines}
        # what each engine now computes is what a transformers model with the trainer's tensors computes
        expected = reference_greedy(tiny_model_path, weights)
        for e in engines:
            out = greedy(e.url)
            assert out["output_ids"] == expected
            assert set(out["meta_info"]["output_token_weight_versions"]) == {base + 3}
        # versions only move forward: a late, older publication is ignored everywhere
        assert group.publisher().publish(base + 2, perturbed(tiny_model_path, 0.5)).accepted is False
        time.sleep(1.0)
        assert group.engine_versions() == {e.url: base + 3 for e in engines}
    finally:
        group.stop()


def test_generation_in_flight_during_a_swap_finishes_with_switched_versions(ray_local, redis_url, tiny_model_path):
    engine = launch_cpu_engine(tiny_model_path, threads=1)
    group = RelayGroup.start(RelayConfig(num_relays=1), redis_url, [engine.url], keys=KEYS)
    try:
        box = {}
        body = {
            "input_ids": PROMPT,
            "sampling_params": {"max_new_tokens": 600, "temperature": 0, "ignore_eos": True},
            "return_logprob": True,
        }
        thread = threading.Thread(
            target=lambda: box.setdefault("out", httpx.post(f"{engine.url}/generate", json=body, timeout=300).json())
        )
        thread.start()
        while httpx.get(f"{engine.url}/server_info").json()["num_running_reqs"] == 0:
            time.sleep(0.01)
        # hold decoding in place so the tiny model cannot finish before the relay delivers: the request stays
        # in flight, and the swap must land between two of its decode steps
        httpx.post(f"{engine.url}/pause_generation", json={"mode": "in_place"})
        group.publisher().publish(1, perturbed(tiny_model_path, 1.02))
        group.wait_for_version(1, timeout=120)
        httpx.post(f"{engine.url}/continue_generation")
        thread.join(300)
        versions = box["out"]["meta_info"]["output_token_weight_versions"]
        assert box["out"]["meta_info"]["finish_reason"]["type"] == "length"
        k = versions.index(1)
        assert 0 < k < len(versions) and set(versions[:k]) == {0} and set(versions[k:]) == {1}
    finally:
        group.stop()
        engine.stop()


def test_relay_killed_mid_fanout_engines_still_get_the_version(ray_local, redis_url, engines, tiny_model_path):
    group = RelayGroup.start(RelayConfig(num_relays=3, fanout=2), redis_url, [e.url for e in engines], keys=KEYS)
    try:
        ray.kill(group.relays[1])  # engine 1's own relay dies before the version reaches it
        group.publisher().publish(10, perturbed(tiny_model_path, 0.98))
        group.wait_for_version(10, timeout=120)
        assert set(group.engine_versions().values()) == {10}
    finally:
        group.stop()


@pytest.mark.parametrize("left_by", ["own-earlier-start", "another-run"])
def test_syncers_follow_only_their_own_relays_announcements(ray_local, redis_url, engines, tiny_model_path, left_by):
    """A newer version announced on the weights stream before this group started, by relays that are gone (this
    run before a resume) or that are not ours (another run on the same Redis), must not hold the engines back:
    a syncer chasing it would wait for a version none of its relays will ever have."""
    base = max(int(httpx.get(f"{e.url}/get_weight_version").json()["weight_version"]) for e in engines)
    stale = KEYS if left_by == "own-earlier-start" else RunKeys("another-run")
    redis.Redis.from_url(redis_url).xadd(stale.weights, {"version": base + 50, "relay": "relay-0"})
    group = RelayGroup.start(RelayConfig(num_relays=1), redis_url, [engines[0].url], keys=KEYS)
    try:
        group.publisher().publish(base + 1, perturbed(tiny_model_path, 1.01))
        group.wait_for_version(base + 1, timeout=20)  # well inside the 30 s a syncer waits for a missing version
    finally:
        group.stop()


def test_stopped_syncer_ends_its_loop_and_closes_its_http_client(ray_local, redis_url, engines):
    group = RelayGroup.start(RelayConfig(num_relays=1), redis_url, [engines[0].url], keys=KEYS)
    try:
        syncer = group.syncers[engines[0].url]
        assert ray.get(syncer.__ray_call__.remote(lambda s: (s._thread.is_alive(), s.http.is_closed))) == (True, False)
        ray.get(syncer.stop.remote())
        assert ray.get(syncer.__ray_call__.remote(lambda s: (s._thread.is_alive(), s.http.is_closed))) == (False, True)
    finally:
        group.stop()


def test_corrupted_or_torn_blob_is_detected_and_never_loaded(tiny_model_path):
    weights = perturbed(tiny_model_path, 1.0)
    manifest, blob = pack_weights(4, weights)
    verify(manifest, blob)
    back = unpack_weights(manifest, blob)
    assert back.keys() == weights.keys() and all(torch.equal(back[k], v) for k, v in weights.items())
    for where, match in ((len(blob) // 2, "tensor .* checksum mismatch"), (12, "header checksum")):
        corrupted = blob.copy()
        corrupted[where] ^= 0xFF
        with pytest.raises(IntegrityError, match=match):
            verify(manifest, corrupted)
        store = VersionStore(keep=2)
        with pytest.raises(IntegrityError):
            store.offer(manifest, corrupted)
        assert store.newest == -1  # nothing was taken
    with pytest.raises(IntegrityError, match="bytes, manifest says"):
        verify(manifest, blob[:-100])  # torn: cut short
    # a reused packing buffer gives the same bytes as a fresh one
    again, reused = pack_weights(4, weights, out=np.zeros(len(blob) + 64, np.uint8))
    assert again == manifest and bytes(reused) == bytes(blob)
