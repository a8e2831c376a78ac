"""Llama-family forward for serving: the weights of a transformers model, run with per-request KV caches so
requests can join and leave the decode batch at every step. Linear layers run batched over all running requests;
attention runs per request on views of its own cache (no padding, no copies)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class KVCache:
    """One request's keys/values for every layer: [layers, 2, kv_heads, capacity, head_dim], grown by doubling."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype):
        self.data = torch.empty(layers, 2, kv_heads, max(capacity, 16), head_dim, dtype=dtype)
        self.length = 0

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need > self.data.shape[3]:
            cap = max(need, 2 * self.data.shape[3])
            grown = torch.empty(*self.data.shape[:3], cap, self.data.shape[4], dtype=self.data.dtype)
            grown[:, :, :, : self.length] = self.data[:, :, :, : self.length]
            self.data = grown

    def clone(self) -> KVCache:
        other = KVCache.__new__(KVCache)
        other.data, other.length = self.data.clone(), self.length
        return other


class ServingLlama:
    def __init__(self, hf_model):
        self.hf = hf_model.eval()
        c = hf_model.config
        self.layers = hf_model.model.layers
        self.n_layers = c.num_hidden_layers
        self.heads = c.num_attention_heads
        self.kv_heads = c.num_key_value_heads or c.num_attention_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.dtype = next(hf_model.parameters()).dtype
        params = getattr(c, "rope_parameters", None) or {}
        theta = float(params.get("rope_theta", getattr(c, "rope_theta", 10000.0)))
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        freqs = torch.outer(torch.arange(c.max_position_embeddings, dtype=torch.float64), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        self.vocab_size = c.vocab_size
        self.max_positions = c.max_position_embeddings

    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(self.n_layers, self.kv_heads, self.head_dim, capacity, self.dtype)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype) * weight

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos[pos][:, None, :], self.sin[pos][:, None, :]  # [T, 1, d]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], caches: list[KVCache]) -> torch.Tensor:
        """Append each request's new tokens (a whole prompt, or one token) to its cache; return the logits of
        each request's last new token, [B, vocab]."""
        lens = [len(t) for t in tokens]
        flat = torch.tensor([tok for t in tokens for tok in t], dtype=torch.long)
        pos = torch.cat([torch.arange(c.length, c.length + n) for c, n in zip(caches, lens)])
        for c, n in zip(caches, lens):
            c.reserve(n)
        x = self.hf.model.embed_tokens(flat)  # [T, hidden]
        splits = torch.tensor(lens).cumsum(0).tolist()
        starts = [0] + splits[:-1]
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = self._norm(x, layer.input_layernorm.weight)
            q = self._rope(attn.q_proj(h).view(-1, self.heads, self.head_dim), pos)
            k = self._rope(attn.k_proj(h).view(-1, self.kv_heads, self.head_dim), pos)
            v = attn.v_proj(h).view(-1, self.kv_heads, self.head_dim)
            outs = []
            for c, s, n in zip(caches, starts, lens):
                kv = c.data[li]
                kv[0, :, c.length:c.length + n] = k[s:s + n].transpose(0, 1)
                kv[1, :, c.length:c.length + n] = v[s:s + n].transpose(0, 1)
                total = c.length + n
                qi = q[s:s + n].transpose(0, 1)[None]  # [1, H, n, d]
                o = F.scaled_dot_product_attention(qi, kv[0, :, :total][None], kv[1, :, :total][None],
                                                   is_causal=n > 1 and c.length == 0, enable_gqa=True)
                if n > 1 and c.length > 0:  # a resumed prefill: causal within the new tokens, all old ones visible
                    mask = torch.ones(n, total, dtype=torch.bool).tril(diagonal=c.length)
                    o = F.scaled_dot_product_attention(qi, kv[0, :, :total][None], kv[1, :, :total][None],
                                                       attn_mask=mask, enable_gqa=True)
                outs.append(o[0].transpose(0, 1).reshape(n, -1))
            x = x + attn.o_proj(torch.cat(outs))
            h = self._norm(x, layer.post_attention_layernorm.weight)
            x = x + layer.mlp(h)
        for c, n in zip(caches, lens):
            c.length += n
        last = torch.tensor([e - 1 for e in splits])
        h = self._norm(x[last], self.hf.model.norm.weight)
        return self.hf.lm_head(h).float()
