"""Shared fixtures: a real redis-server per test, the real model folder, a tiny random Llama, a local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slime_rl.redis_server import EmbeddedRedis

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server with AOF on a free loopback port, stopped by handle."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    from slime_rl.model_store import DEFAULT_NAME, ensure

    return ensure(DEFAULT_NAME)  # the model store's folder, as runs find it


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, real_model_path) -> Path:
    """A tiny random Llama (2 layers, GQA, tied embeddings) with the real tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(real_model_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance for the test session (its own short temp dir: socket paths are length-limited)."""
    import shutil
    import tempfile

    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=temp_dir,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
        )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
