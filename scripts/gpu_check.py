"""The trainer's GPU path, checked on a CUDA machine (CI has none; run by hand where one is lent):

1. the CPU shim stays off when CUDA is present;
2. a SmolLM2-135M-shaped Llama (random weights: nothing is downloaded) converted HF -> Megatron gives the token
   logprobs of transformers on the same GPU (fp32, TF32 off): max |diff|;
3. a real train step (bilateral loss) on CUDA: finite loss and grad norm, weights move, the HF export round-trips;
4. a Megatron distributed checkpoint saved and loaded on CUDA reproduces the next step exactly;
5. `bench trainer`'s comparison on this GPU: our packed step against the plain transformers loop.

usage: python scripts/gpu_check.py OUT_JSON [HF_CONFIG_JSON]"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def on_policy_groups(policy, n_groups: int = 4, group_size: int = 8, seed: int = 1):
    """bench_trainer's long-tailed groups with the policy's own logprobs as rollout logprobs (staleness 0), so the
    bilateral band keeps every token and the step is the on-policy policy gradient."""
    from slime_rl.bench.trainer import make_groups

    groups = make_groups(n_groups, group_size, seed=seed)
    with torch.no_grad():
        for t in (t for g in groups for t in g.trajectories):
            ids = torch.tensor([t.prompt_ids + t.response_ids])
            lp = policy.forward_logprobs(ids, torch.arange(ids.shape[1])[None], torch.tensor([0, ids.shape[1]]))
            t.rollout_logprobs = lp[0, len(t.prompt_ids) - 1 : -1].float().cpu().tolist()
    return groups


def save_random_model(config_json: Path | None, out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = (
        LlamaConfig(**json.loads(config_json.read_text()))
        if config_json
        else LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            rms_norm_eps=1e-5,
        )
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
    return out


def main() -> None:
    out_json = Path(sys.argv[1])
    config_json = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from transformers import AutoModelForCausalLM

    from slime_rl.config import RunConfig
    from slime_rl.trainer import megatron_shim
    from slime_rl.trainer.parallel import init_parallel
    from slime_rl.trainer.policy import MegatronPolicy
    from slime_rl.trainer.train_step import train_step

    report: dict = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model_dir = save_random_model(config_json, tmp / "model")
    report["shim_active"] = megatron_shim.activate()
    init_parallel()
    cfg = RunConfig.model_validate(
        {"model": {"path": str(model_dir)}, "trainer": {"micro_batch_tokens": 4096, "lr": 1e-5}}
    )
    policy = MegatronPolicy.from_hf(model_dir, cfg.trainer)
    report["param_device"] = str(next(policy.module.parameters()).device)

    # 2. logprob parity against transformers on the same device (the trainer consumes logprobs, not logits)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    ids = torch.randint(100, 40000, (1, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.log_softmax(hf(input_ids=ids.to(dev)).logits.float()[0, :-1], -1)
        ref = ref.gather(-1, ids[0, 1:, None].to(dev))[:, 0]
        ours = policy.forward_logprobs(ids, torch.arange(256)[None], torch.tensor([0, 256]))[0, :-1]
    report["max_abs_logprob_diff"] = (ours.to(dev) - ref).abs().max().item()
    del hf

    # 3. a real train step, and the HF export round trip
    before = {k: v.clone() for k, v in policy.export_hf_state_dict().items()}
    m = train_step(policy, on_policy_groups(policy), 0, cfg).update.model_dump()
    after = policy.export_hf_state_dict()
    report["train_step"] = {
        k: m[k]
        for k in (
            "loss",
            "grad_norm",
            "tokens",
            "step_time_s",
            "tokens_per_s",
            "padding_waste",
            "masked_frac",
            "logp_diff_mean",
        )
        if k in m
    }
    report["weights_moved"] = sum(int(not torch.equal(before[k], after[k])) for k in before)
    report["export_tensors"] = len(after)

    # 4. checkpoint on CUDA: save, take a step, reload, take the same step again
    policy.save_checkpoint(tmp / "ckpt", 1, 1, {})
    nxt = on_policy_groups(policy, 2, 8, seed=2)
    first = train_step(policy, nxt, 1, cfg).update.loss
    policy.load_checkpoint(tmp / "ckpt")
    again = train_step(policy, nxt, 1, cfg).update.loss
    report["resume_same_next_loss"] = {"uninterrupted": first, "resumed": again, "equal": first == again}

    # 5. throughput against the plain transformers loop on this GPU
    from slime_rl.bench import trainer as bench_trainer

    started = time.perf_counter()
    bench_trainer._model_path = lambda: model_dir  # the random SmolLM2-shaped model, not the converted one
    bench = bench_trainer.run(quick=False)
    report["bench_trainer"] = {**bench, "wall_s": time.perf_counter() - started}
    out_json.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
