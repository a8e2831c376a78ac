"""The CPU engine's SGLang-native HTTP API: conformance, logprob parity, batching invariance, abort/pause,
weight swaps in flight, and clear errors for bad requests."""

from __future__ import annotations

import json
import threading
import time

import httpx
import torch
from safetensors.torch import save, save_file
from transformers import AutoModelForCausalLM

from slime_rl.rollout.engine_launcher import launch_cpu_engine

PROMPT = [1, 504, 3458, 314, 1345, 30]


def gen(url, ids=PROMPT, rid=None, **sp):
    body = {
        "input_ids": ids,
        "sampling_params": {"max_new_tokens": 8, "temperature": 0.0, **sp},
        "return_logprob": True,
        "rid": rid,
    }
    r = httpx.post(f"{url}/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_generate_response_shape(tiny_engine):
    out = gen(tiny_engine.url)
    assert isinstance(out["text"], str)
    assert len(out["output_ids"]) == 8 and all(isinstance(t, int) for t in out["output_ids"])
    meta = out["meta_info"]
    assert meta["finish_reason"]["type"] in ("stop", "length")
    assert meta["prompt_tokens"] == len(PROMPT) and meta["completion_tokens"] == 8
    assert isinstance(meta["weight_version"], str) and isinstance(meta["id"], str)
    lps = meta["output_token_logprobs"]
    assert [t for _, t, _ in lps] == out["output_ids"]
    assert all(isinstance(lp, float) and lp <= 0 and txt is None for lp, _, txt in lps)
    assert meta["output_token_weight_versions"] == [int(meta["weight_version"])] * 8


def test_n_samples_and_batched_prompts_return_lists(tiny_engine):
    body = {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 4, "n": 3}, "return_logprob": True}
    out = httpx.post(f"{tiny_engine.url}/generate", json=body, timeout=60).json()
    assert isinstance(out, list) and len(out) == 3
    body = {"input_ids": [PROMPT, PROMPT[:3]], "sampling_params": {"max_new_tokens": 4, "temperature": 0}}
    out = httpx.post(f"{tiny_engine.url}/generate", json=body, timeout=60).json()
    assert [o["meta_info"]["prompt_tokens"] for o in out] == [len(PROMPT), 3]


def test_sse_streaming(tiny_engine):
    body = {
        "input_ids": PROMPT,
        "sampling_params": {"max_new_tokens": 5, "temperature": 0},
        "stream": True,
        "return_logprob": True,
    }
    chunks = []
    with httpx.stream("POST", f"{tiny_engine.url}/generate", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    events = [json.loads(c) for c in chunks[:-1]]
    assert len(events) == 5
    assert [len(e["output_ids"]) for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert events[-1]["output_ids"] == gen(tiny_engine.url, max_new_tokens=5)["output_ids"]


def test_logprobs_match_a_teacher_forced_forward(real_model_path):
    engine = launch_cpu_engine(real_model_path, threads=1)
    try:
        out = gen(engine.url, max_new_tokens=12, temperature=1.0, seed=3)
    finally:
        engine.stop()
    hf = AutoModelForCausalLM.from_pretrained(real_model_path, dtype=torch.float32)
    ids = torch.tensor([PROMPT + out["output_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits[0, len(PROMPT) - 1 : -1].float(), -1)
    ref = logp.gather(-1, torch.tensor(out["output_ids"])[:, None])[:, 0]
    got = torch.tensor([lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]])
    assert (ref - got).abs().mean().item() <= 1e-4


def test_continuous_batching_changes_nothing(tiny_engine):
    prompts = [PROMPT, [5, 6, 7], [100, 200, 300, 400, 500, 600, 700], [42] * 12]
    alone = [gen(tiny_engine.url, p, max_new_tokens=10 + i)["output_ids"] for i, p in enumerate(prompts)]
    together: list = [None] * len(prompts)

    def run(i):
        together[i] = gen(tiny_engine.url, prompts[i], max_new_tokens=10 + i)["output_ids"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def _in_background(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", fn()))
    thread.start()
    return thread, box


def _wait_running(url):
    for _ in range(200):
        if httpx.get(f"{url}/server_info").json()["num_running_reqs"] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("request never started running")


def test_abort_returns_partial_output_that_can_be_resumed(tiny_engine):
    url = tiny_engine.url
    thread, box = _in_background(lambda: gen(url, max_new_tokens=1000, rid="long-1", ignore_eos=True))
    _wait_running(url)
    assert httpx.post(f"{url}/abort_request", json={"rid": "long-1"}).json()["success"]
    thread.join(60)
    partial = box["out"]
    assert partial["meta_info"]["finish_reason"]["type"] == "abort"
    n = len(partial["output_ids"])
    assert 0 < n < 1000
    assert len(partial["meta_info"]["output_token_logprobs"]) == n
    full = gen(url, max_new_tokens=n + 6, ignore_eos=True)["output_ids"]
    assert partial["output_ids"] == full[:n]  # greedy: the partial is a prefix of the uninterrupted output
    resumed = gen(url, PROMPT + partial["output_ids"], max_new_tokens=6, ignore_eos=True)["output_ids"]
    assert partial["output_ids"] + resumed == full


def test_pause_in_place_then_continue_and_pause_abort(tiny_engine):
    url = tiny_engine.url
    thread, box = _in_background(lambda: gen(url, max_new_tokens=60, ignore_eos=True))
    _wait_running(url)
    assert httpx.post(f"{url}/pause_generation", json={"mode": "in_place"}).json()["success"]
    before = httpx.get(f"{url}/server_info").json()["generated_tokens_total"]
    time.sleep(0.3)
    assert httpx.get(f"{url}/server_info").json()["generated_tokens_total"] == before  # nothing decoded
    httpx.post(f"{url}/continue_generation")
    thread.join(60)
    assert box["out"]["meta_info"]["finish_reason"]["type"] == "length"
    thread, box = _in_background(lambda: gen(url, max_new_tokens=1000, ignore_eos=True))
    _wait_running(url)
    httpx.post(f"{url}/pause_generation", json={"mode": "abort"})
    thread.join(60)
    httpx.post(f"{url}/continue_generation")
    assert box["out"]["meta_info"]["finish_reason"]["type"] == "abort"
    assert httpx.post(f"{url}/pause_generation", json={"mode": "sideways"}).status_code == 400


def test_weight_swap_in_flight_switches_versions_at_the_swap_point(tiny_model_path, tmp_path):
    engine = launch_cpu_engine(tiny_model_path, threads=1)
    try:
        url = engine.url
        thread, box = _in_background(lambda: gen(url, max_new_tokens=1000, ignore_eos=True))
        _wait_running(url)
        hf = AutoModelForCausalLM.from_pretrained(tiny_model_path)
        new = {k: v * 1.01 for k, v in hf.state_dict().items() if k.endswith("mlp.down_proj.weight")}
        r = httpx.post(
            f"{url}/update_weights_from_tensor",
            content=save(new),
            params={"weight_version": 5},
            headers={"content-type": "application/octet-stream"},
            timeout=60,
        ).json()
        assert r["success"], r
        thread.join(120)
        versions = box["out"]["meta_info"]["output_token_weight_versions"]
        assert box["out"]["meta_info"]["finish_reason"]["type"] == "length"  # the request finished
        k = versions.index(5)
        assert 0 < k and set(versions[:k]) == {0} and set(versions[k:]) == {5}
        assert httpx.get(f"{url}/get_weight_version").json()["weight_version"] == "5"
        bad = httpx.post(
            f"{url}/update_weights_from_tensor",
            content=save({"nope.weight": torch.zeros(2)}),
            headers={"content-type": "application/octet-stream"},
        ).json()
        assert bad["success"] is False and "nope.weight" in bad["message"]
    finally:
        engine.stop()


def test_update_weights_from_disk_changes_outputs(tiny_engine, tiny_model_path, tmp_path):
    url = tiny_engine.url
    base = gen(url)["output_ids"]
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    changed = {
        k: (v * 3.0 if "mlp" in k else v).contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"
    }
    save_file(changed, str(tmp_path / "model.safetensors"))
    r = httpx.post(f"{url}/update_weights_from_disk", json={"model_path": str(tmp_path), "weight_version": 7}).json()
    assert r["success"], r
    assert gen(url)["output_ids"] != base
    r = httpx.post(f"{url}/update_weights_from_disk", json={"model_path": str(tiny_model_path), "weight_version": 8})
    assert r.json()["success"]
    assert gen(url)["output_ids"] == base
    missing = httpx.post(f"{url}/update_weights_from_disk", json={"model_path": str(tmp_path / "nowhere")}).json()
    assert missing["success"] is False


def test_bad_requests_get_clear_400s(tiny_engine):
    url = tiny_engine.url
    r = httpx.post(f"{url}/generate", json={"sampling_params": {"max_new_tokens": 4}})
    assert r.status_code == 400 and "input_ids" in r.text
    r = httpx.post(f"{url}/generate", json={"input_ids": [1, 10**7], "sampling_params": {"max_new_tokens": 4}})
    assert r.status_code == 400 and "vocabulary" in r.text and str(10**7) in r.text
    r = httpx.post(f"{url}/generate", json={"input_ids": [1], "sampling_params": {"max_new_tokens": -1}})
    assert r.status_code == 400 and "max_new_tokens" in r.text
    r = httpx.post(f"{url}/generate", json={"input_ids": "hello"})
    assert r.status_code == 400 and "input_ids" in r.text
    # one bad prompt in a batch starts none of them
    before = httpx.get(f"{url}/server_info").json()["generated_tokens_total"]
    r = httpx.post(f"{url}/generate", json={"input_ids": [[1, 2], [-3]], "sampling_params": {"max_new_tokens": 4}})
    assert r.status_code == 400 and "-3" in r.text
    assert httpx.get(f"{url}/server_info").json()["generated_tokens_total"] == before
    r = httpx.post(f"{url}/update_weight_version", json={"new_version": "seven"})
    assert r.status_code == 400 and "new_version" in r.text


def test_info_endpoints(tiny_engine):
    url = tiny_engine.url
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/health_generate").status_code == 200
    assert httpx.get(f"{url}/get_model_info").json()["is_generation"] is True
    info = httpx.get(f"{url}/server_info").json()
    assert {"weight_version", "max_batch_size", "num_running_reqs", "num_waiting_reqs"} <= set(info)
    assert httpx.post(f"{url}/flush_cache").json()["success"]
    assert httpx.post(f"{url}/update_weight_version", json={"new_version": 11}).json()["success"]
    assert httpx.get(f"{url}/get_weight_version").json()["weight_version"] == "11"
    assert gen(url)["meta_info"]["output_token_weight_versions"][0] == 11


def test_update_weights_from_tensor_json_base64_and_bad_tensors(tiny_model_path):
    import base64

    engine = launch_cpu_engine(tiny_model_path, threads=1)
    try:
        url = engine.url
        base = gen(url)["output_ids"]
        hf = AutoModelForCausalLM.from_pretrained(tiny_model_path)
        sd = hf.state_dict()
        names = ["model.norm.weight", "model.layers.1.mlp.down_proj.weight"]
        gen_ = torch.Generator().manual_seed(0)
        new = {k: torch.randn(sd[k].shape, generator=gen_) for k in names}
        blobs = [base64.b64encode(save({k: v})).decode() for k, v in new.items()]  # one blob per tensor
        r = httpx.post(
            f"{url}/update_weights_from_tensor", json={"serialized_named_tensors": blobs, "weight_version": 2}
        ).json()
        assert r["success"], r
        changed = gen(url)
        assert changed["output_ids"] != base and changed["meta_info"]["weight_version"] == "2"
        # wrong shape / dtype / garbage: success false, the tensor named, nothing applied
        wrong = {names[1]: sd[names[1]] * 0, "model.norm.weight": torch.ones(3)}
        for payload in (wrong, {names[1]: sd[names[1]].to(torch.int64)}):
            r = httpx.post(
                f"{url}/update_weights_from_tensor",
                content=save(payload),
                params={"weight_version": 9},
                headers={"content-type": "application/octet-stream"},
            ).json()
            assert r["success"] is False and ("model.norm.weight" in r["message"] or names[1] in r["message"])
        r = httpx.post(
            f"{url}/update_weights_from_tensor",
            content=b"not safetensors",
            headers={"content-type": "application/octet-stream"},
        ).json()
        assert r["success"] is False
        assert gen(url)["output_ids"] == changed["output_ids"]
        assert httpx.get(f"{url}/get_weight_version").json()["weight_version"] == "2"
        blob = base64.b64encode(save({k: sd[k] for k in names})).decode()
        r = httpx.post(f"{url}/update_weights_from_tensor", json={"serialized_named_tensors": [blob]}).json()
        assert r["success"] and gen(url)["output_ids"] == base
    finally:
        engine.stop()


def test_rids_text_prompts_and_abort_all(tiny_engine):
    url = tiny_engine.url
    body = {
        "text": ["Hello there", "Two plus two is"],
        "rid": ["a1", "a2"],
        "sampling_params": {"max_new_tokens": 3, "temperature": 0},
    }
    out = httpx.post(f"{url}/generate", json=body, timeout=60).json()
    assert [o["meta_info"]["id"] for o in out] == ["a1", "a2"]
    body = {"input_ids": PROMPT, "rid": "grp", "sampling_params": {"max_new_tokens": 2, "n": 2, "seed": 1}}
    out = httpx.post(f"{url}/generate", json=body, timeout=60).json()
    assert [o["meta_info"]["id"] for o in out] == ["grp-0", "grp-1"]
    threads = [_in_background(lambda: gen(url, max_new_tokens=1000, ignore_eos=True)) for _ in range(3)]
    for _ in range(200):
        if httpx.get(f"{url}/server_info").json()["num_running_reqs"] == 3:
            break
        time.sleep(0.02)
    assert httpx.post(f"{url}/abort_request", json={"abort_all": True}).json()["success"]
    for thread, box in threads:
        thread.join(60)
        assert box["out"]["meta_info"]["finish_reason"]["type"] == "abort"
    assert httpx.post(f"{url}/abort_request", json={}).status_code == 400
