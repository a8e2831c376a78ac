"""Per-request sampling with exact logprobs of the raw model distribution (temperature 1): that is what the
trainer compares against. temperature/top_p/top_k only shape which token is drawn."""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="allow")  # SGLang accepts many more; unknown ones are ignored

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    n: int = Field(1, ge=1, le=1024)
    seed: int | None = None


def sample_next(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None) -> tuple[int, float]:
    logprobs = torch.log_softmax(logits, dim=-1)
    if p.temperature == 0.0:
        token = int(torch.argmax(logits))
        return token, float(logprobs[token])
    scaled = logits / p.temperature
    if p.top_k > 0:
        kth = torch.topk(scaled, min(p.top_k, scaled.numel())).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cut = sorted_probs.cumsum(0) - sorted_probs > p.top_p  # keep the smallest prefix reaching top_p
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    if p.min_p > 0.0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(logprobs[token])
