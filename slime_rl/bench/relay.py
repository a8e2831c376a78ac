"""`slime-rl bench relay`: trainer-blocked time for K = 1, 2 and 4 engines (it must not grow with K), end-to-end
propagation, and a bound measured in the same run: the same bytes copied once over the same transport (into Ray's
object store, read there by an actor, then handed to an engine the way a syncer hands them: relay/delivery.py).
Propagation also pays what the bound does not: serialising and checksumming on the trainer, the relay's and the
syncer's checks, and the announcement. Each K is pushed `reps` times after a warm-up push; the medians are
reported (a single push on a shared machine is mostly noise)."""

from __future__ import annotations

import statistics
import tempfile
import time

import ray
import torch

from slime_rl.config import RelayConfig
from slime_rl.model_store import DEFAULT_OUT
from slime_rl.redis_server import EmbeddedRedis
from slime_rl.relay.delivery import deliver
from slime_rl.relay.group import RelayGroup
from slime_rl.relay.versions import pack_weights
from slime_rl.run_context import start_ray
from slime_rl.run_keys import RunKeys


@ray.remote(num_cpus=0)
class _Sink:
    def take(self, held: list) -> int:
        return len(ray.get(held[0]))  # read from the object store in place, as a relay does


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


def run(quick: bool = False) -> dict:
    from slime_rl.rollout.engine_launcher import launch_cpu_engine

    model = DEFAULT_OUT
    weights = _weights(model)
    if quick:  # a slice of the model keeps the smoke test small
        weights = {k: v for k, v in list(weights.items())[:8]}
    ks, reps = ((1, 2), 1) if quick else ((1, 2, 4), 3)
    started_ray = not ray.is_initialized() and start_ray()  # niceness 0, as in a real run
    engines = [launch_cpu_engine(model, threads=1) for _ in range(max(ks))]
    out: dict = {"bytes": None, "per_k": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as redis:
            version = 0
            for k in ks:
                group = RelayGroup.start(
                    RelayConfig(num_relays=max(1, k // 2), fanout=2),
                    redis.url,
                    [e.url for e in engines[:k]],
                    keys=RunKeys(f"bench-relay-{k}"),
                )
                samples = []
                try:
                    for rep in range(reps + 1):  # the first push warms up (first-touch, connections): not counted
                        version += 1
                        receipt = group.publisher().publish(version, weights)
                        t0 = time.perf_counter()
                        prop = group.wait_for_version(version, timeout=600)
                        out["bytes"] = receipt["bytes"]
                        if rep:
                            samples.append(
                                {
                                    "blocked_s": receipt["blocked_s"],
                                    "propagation_s": receipt["blocked_s"] + (time.perf_counter() - t0),
                                    "per_engine_s": list(prop.values()),
                                }
                            )
                finally:
                    group.stop()
                out["per_k"][k] = {
                    "blocked_s": statistics.median(x["blocked_s"] for x in samples),
                    "propagation_s": statistics.median(x["propagation_s"] for x in samples),
                    "samples": samples,
                }
            sink, bounds = _Sink.remote(), []
            for rep in range(reps + 1):
                version += 1
                _, blob = pack_weights(version, weights)
                t0 = time.perf_counter()
                ray.get(sink.take.remote([ray.put(blob)]))
                if not deliver(engines[0].url, blob, version, RelayConfig().transport, timeout=600):
                    raise RuntimeError(f"bound: engine {engines[0].url} refused version {version}")
                if rep:
                    bounds.append(time.perf_counter() - t0)
            bound = statistics.median(bounds)
    finally:
        for e in engines:
            e.stop()
        if started_ray:
            ray.shutdown()
    first, last = out["per_k"][ks[0]], out["per_k"][ks[-1]]
    out.update(
        {
            "bound_s": bound,
            f"blocked_ratio_k{ks[-1]}_k1": last["blocked_s"] / first["blocked_s"],
            "propagation_s": first["propagation_s"],
            "propagation_vs_bound": first["propagation_s"] / bound,
        }
    )
    return out
