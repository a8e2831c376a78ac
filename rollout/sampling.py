"""Per-request sampling with exact logprobs of the raw model distribution (temperature 1): that is what the
trainer compares against. temperature/top_p/top_k/min_p only shape which token is drawn."""

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


def _filtered(probs: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """top-k / top-p / min-p on one row of probabilities (already at temperature); zeros out what is cut."""
    if p.top_k > 0 and p.top_k < probs.numel():
        kth = torch.topk(probs, p.top_k).values[-1]
        probs = probs.masked_fill(probs < kth, 0.0)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cut = sorted_probs.cumsum(0) - sorted_probs > p.top_p * sorted_probs.sum()  # smallest prefix reaching top_p
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    if p.min_p > 0.0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    return probs


def sample_batch(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> tuple[list[int], list[float]]:
    """One token per row of `logits` [B, vocab] and its logprob under log_softmax(logits). Written to make few
    passes over the [B, vocab] logits: at temperature 1 the sampling distribution reuses the logsumexp."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    tokens = torch.zeros(len(params), dtype=torch.long)
    greedy = [i for i, p in enumerate(params) if p.temperature == 0.0]
    if greedy:
        tokens[greedy] = torch.argmax(logits[greedy], dim=-1)
    rows = [i for i, p in enumerate(params) if p.temperature > 0.0]
    if rows:
        every = len(rows) == len(params)
        sub, sub_lse = (logits, lse) if every else (logits[rows], lse[rows])
        if all(params[i].temperature == 1.0 for i in rows):
            probs = (sub - sub_lse).exp_()
        else:
            temps = torch.tensor([params[i].temperature for i in rows], dtype=logits.dtype)[:, None]
            probs = torch.softmax(sub / temps, dim=-1)
        for j, i in enumerate(rows):
            p = params[i]
            if p.top_k > 0 or p.top_p < 1.0 or p.min_p > 0.0:
                probs[j] = _filtered(probs[j], p)
        # inverse-CDF draw, one uniform per request from its own generator (reproducible with `seed`)
        cdf = probs.cumsum_(dim=-1)
        u = torch.cat([torch.rand(1, generator=generators[i]) for i in rows]).to(cdf.dtype) * cdf[:, -1]
        drawn = torch.searchsorted(cdf, u[:, None], right=True)[:, 0].clamp_(max=logits.shape[-1] - 1)
        if every:
            tokens = drawn
        else:
            tokens[rows] = drawn
    logprobs = logits.gather(1, tokens[:, None])[:, 0] - lse[:, 0]
    return tokens.tolist(), logprobs.tolist()
