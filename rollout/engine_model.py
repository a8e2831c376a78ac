"""Llama-family forward for serving, on the weights of a transformers model.

Running requests live in a KV pool, one slot each, kept dense (slots 0..B-1) so a decode step runs every layer once
for the whole batch: fused QKV and gate/up matmuls over B tokens and one masked attention call over the pool's view.
Prefill runs the linear layers over all new prompts at once and attention per prompt. The transformers modules'
parameters become views into the fused weights, so a weight swap that copies into `named_parameters()` updates
both (no second copy of the model in memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_GROW = 128  # pool capacity grows in steps of this many positions (plus 25%) to keep regrowth rare


class Seq:
    """One request's place in the pool: its slot and how many positions it has cached."""

    __slots__ = ("slot", "length")

    def __init__(self, slot: int):
        self.slot, self.length = slot, 0


class KVPool:
    """Keys/values of all running requests: [layers, 2, slots, kv_heads, capacity, head_dim], grown on demand,
    released when empty. Freeing a slot moves the last slot into the hole so the live slots stay 0..n-1.
    The storage is an inference tensor (made under the forward's inference mode), so every method that writes
    it runs in inference mode too: aborts and forks come from the scheduler's control path, outside a forward."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype):
        self.shape = (layers, 2, kv_heads, head_dim)
        self.dtype = dtype
        self.data: torch.Tensor | None = None
        self.seqs: list[Seq] = []

    @property
    def capacity(self) -> int:
        return 0 if self.data is None else self.data.shape[4]

    @torch.inference_mode()
    def _resize(self, slots: int, capacity: int) -> None:
        layers, two, kvh, hd = self.shape
        # zeros, not empty: attention masks the unused positions to weight 0, but 0 * NaN garbage would be NaN
        grown = torch.zeros(layers, two, slots, kvh, capacity, hd, dtype=self.dtype)
        if self.data is not None and self.seqs:
            n, used = len(self.seqs), max(s.length for s in self.seqs)
            grown[:, :, :n, :, :used] = self.data[:, :, :n, :, :used]
        self.data = grown

    def reset(self) -> None:
        self.data, self.seqs = None, []

    @torch.inference_mode()
    def alloc(self) -> Seq:
        if self.data is None or self.data.shape[2] <= len(self.seqs):
            self._resize(max(4, 2 * len(self.seqs)), max(self.capacity, _GROW))
        seq = Seq(len(self.seqs))
        self.seqs.append(seq)
        return seq

    @torch.inference_mode()
    def reserve(self, seq: Seq, extra: int) -> None:
        need = seq.length + extra
        if need > self.capacity:
            cap = -(-max(need, self.capacity * 5 // 4) // _GROW) * _GROW
            self._resize(self.data.shape[2], cap)

    @torch.inference_mode()
    def fork(self, src: Seq) -> Seq:
        """A new slot holding a copy of `src`'s cache (the n samples of one prompt prefill once)."""
        seq = self.alloc()
        self.data[:, :, seq.slot, :, : src.length] = self.data[:, :, src.slot, :, : src.length]
        seq.length = src.length
        return seq

    @torch.inference_mode()
    def free(self, seq: Seq) -> None:
        if seq.slot < 0:
            return  # already freed
        last = self.seqs[-1]
        if last is not seq:  # copy first: a failure must leave the pool as it was
            self.data[:, :, seq.slot, :, : last.length] = self.data[:, :, last.slot, :, : last.length]
            last.slot = seq.slot
            self.seqs[seq.slot] = last
        self.seqs.pop()
        seq.slot, seq.length = -1, 0
        if not self.seqs:
            self.data = None  # idle: give the memory back


class ServingLlama:
    def __init__(self, hf_model):
        self.hf = hf_model.eval()
        c = hf_model.config
        self.n_layers = c.num_hidden_layers
        self.heads = c.num_attention_heads
        self.kv_heads = c.num_key_value_heads or c.num_attention_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.vocab_size = c.vocab_size
        self.max_positions = c.max_position_embeddings
        self.dtype = next(hf_model.parameters()).dtype
        self.layers = [_FusedLayer(layer, self.heads, self.kv_heads, self.head_dim) for layer in hf_model.model.layers]
        with torch.no_grad():  # the model's own rotary module: rope scaling variants come out exactly as in HF
            pos = torch.arange(self.max_positions)[None]
            cos, sin = hf_model.model.rotary_emb(torch.zeros(1, dtype=self.dtype), pos)
        self.cos, self.sin = cos[0].to(self.dtype), sin[0].to(self.dtype)
        self.pool = KVPool(self.n_layers, self.kv_heads, self.head_dim, self.dtype)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos[pos][:, None, :], self.sin[pos][:, None, :]  # [T, 1, d]
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf.lm_head(self._norm(x, self.hf.model.norm.weight)).float()

    def prefill_many(self, prompts: list[tuple[int, ...]], min_shared: int = 16) -> tuple[list[Seq], torch.Tensor]:
        """New seqs for distinct prompts and each prompt's last-token logits. Prompts that share a prefix of at
        least `min_shared` tokens (a system prompt, a multi-turn history) compute it once and copy its cache."""
        seqs: list[Seq | None] = [None] * len(prompts)
        shared = [
            (common, members) for common, members in shared_prefix_groups(prompts, min_shared) if len(members) > 1
        ]
        if shared:
            firsts = [self.pool.alloc() for _ in shared]
            self.prefill([list(prompts[m[0]][:c]) for c, m in shared], firsts)
            for first, (_, members) in zip(firsts, shared):
                seqs[members[0]] = first
                for m in members[1:]:
                    seqs[m] = self.pool.fork(first)
        for i, s in enumerate(seqs):
            if s is None:
                seqs[i] = self.pool.alloc()
        logits = self.prefill([list(p[s.length :]) for p, s in zip(prompts, seqs)], seqs)
        return seqs, logits

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], seqs: list[Seq]) -> torch.Tensor:
        """Append each prompt to its (usually empty) seq; logits of each prompt's last token, [N, vocab]."""
        lens = [len(p) for p in prompts]
        for s, n in zip(seqs, lens):
            self.pool.reserve(s, n)
        pos = torch.cat([torch.arange(s.length, s.length + n) for s, n in zip(seqs, lens)])
        x = self.hf.model.embed_tokens(torch.tensor([t for p in prompts for t in p]))
        ends = torch.tensor(lens).cumsum(0).tolist()
        for li, layer in enumerate(self.layers):
            q, k, v = layer.qkv(self._norm(x, layer.ln1), pos, self._rope)
            outs = []
            for s, n, end in zip(seqs, lens, ends):
                kv, start, total = self.pool.data[li, :, s.slot], end - n, s.length + n
                kv[0, :, s.length : total] = k[start:end].transpose(0, 1)
                kv[1, :, s.length : total] = v[start:end].transpose(0, 1)
                # causal within the new tokens, every cached token visible
                mask = None if s.length == 0 else torch.ones(n, total, dtype=torch.bool).tril(diagonal=s.length)
                o = F.scaled_dot_product_attention(
                    q[start:end].transpose(0, 1)[None],
                    kv[0, :, :total][None],
                    kv[1, :, :total][None],
                    attn_mask=mask,
                    is_causal=mask is None,
                    enable_gqa=True,
                )
                outs.append(o[0].transpose(0, 1).reshape(n, -1))
            x = layer.rest(x, torch.cat(outs), self._norm)
        for s, n in zip(seqs, lens):
            s.length += n
        return self._logits(x[torch.tensor(ends) - 1])

    @torch.inference_mode()
    def decode(self, tokens: list[int], seqs: list[Seq]) -> torch.Tensor:
        """One new token per seq, all in one batch; logits [B, vocab] in the order given."""
        for s in seqs:
            self.pool.reserve(s, 1)
        b = len(seqs)
        slots = [s.slot for s in seqs]
        dense = slots == list(range(b))  # the usual case: read the pool as a view, no gather
        slot_t = torch.tensor(slots)
        pos = torch.tensor([s.length for s in seqs])
        width = int(pos.max()) + 1
        mask = (torch.arange(width)[None, :] <= pos[:, None])[:, None, None, :]  # [B, 1, 1, width]
        x = self.hf.model.embed_tokens(torch.tensor(tokens))
        for li, layer in enumerate(self.layers):
            q, k, v = layer.qkv(self._norm(x, layer.ln1), pos, self._rope)
            keys, values = self.pool.data[li, 0], self.pool.data[li, 1]  # [slots, kv_heads, cap, d]
            keys[slot_t, :, pos] = k
            values[slot_t, :, pos] = v
            if dense:
                ks, vs = keys[:b, :, :width], values[:b, :, :width]
            else:
                ks, vs = keys[slot_t, :, :width], values[slot_t, :, :width]
            o = F.scaled_dot_product_attention(q[:, :, None], ks, vs, attn_mask=mask, enable_gqa=True)
            x = layer.rest(x, o.reshape(b, -1), self._norm)
        for s in seqs:
            s.length += 1
        return self._logits(x)


def shared_prefix_groups(prompts: list[tuple[int, ...]], min_shared: int) -> list[tuple[int, list[int]]]:
    """Partition prompt indices into runs (in sorted order) whose common prefix is >= min_shared tokens, leaving
    each member at least one token of its own to prefill (its logits come from that). -> [(common, indices)]"""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if groups:
            common, members = groups[-1]
            prev, cur = prompts[members[-1]], prompts[i]
            lcp = next((k for k, (a, b) in enumerate(zip(prev, cur)) if a != b), min(len(prev), len(cur)))
            c = min(common, lcp, len(cur) - 1)
            if c >= min_shared:
                groups[-1] = (c, members + [i])
                continue
        groups.append((len(prompts[i]) - 1, [i]))
    return groups


class _FusedLayer:
    """One decoder layer with q/k/v and gate/up fused into single matmuls; the HF parameters become views."""

    def __init__(self, layer, heads: int, kv_heads: int, head_dim: int):
        attn, mlp = layer.self_attn, layer.mlp
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if not hasattr(attn, name):
                raise ValueError(f"unsupported architecture: attention has no {name} (Llama-family models only)")
        for name in ("gate_proj", "up_proj", "down_proj"):
            if not hasattr(mlp, name):
                raise ValueError(f"unsupported architecture: MLP has no {name} (Llama-family models only)")
        self.sizes = (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim)
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.w_qkv, self.b_qkv = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        self.w_gu, _ = _fuse([mlp.gate_proj, mlp.up_proj])
        self.w_o, self.b_o = _fuse([attn.o_proj])
        self.w_down, _ = _fuse([mlp.down_proj])
        self.act = mlp.act_fn
        self.q_norm, self.k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)  # Qwen3
        self.ln1, self.ln2 = layer.input_layernorm.weight, layer.post_attention_layernorm.weight

    def qkv(self, h: torch.Tensor, pos: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = _matmul(h, self.w_qkv, self.b_qkv).split(self.sizes, dim=-1)
        q = q.reshape(-1, self.heads, self.head_dim)
        k = k.reshape(-1, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return rope(q, pos), rope(k, pos), v.reshape(-1, self.kv_heads, self.head_dim)

    def rest(self, x: torch.Tensor, attn_out: torch.Tensor, norm) -> torch.Tensor:
        x = x + _matmul(attn_out, self.w_o, self.b_o)
        gate, up = (norm(x, self.ln2) @ self.w_gu).chunk(2, dim=-1)
        return x + (self.act(gate) * up) @ self.w_down


def _matmul(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x @ w_t if bias is None else torch.addmm(bias, x, w_t)


def _fuse(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (and biases) of several linears, stored transposed ([in, out]: MKL runs the
    few-row matmuls of decode up to 2x faster that way), and re-point each parameter at its slice."""
    weight_t = torch.cat([m.weight.data for m in linears]).t().contiguous()
    weight = weight_t.t()
    has_bias = [m.bias is not None for m in linears]
    if any(has_bias) and not all(has_bias):
        raise ValueError("unsupported architecture: only some of the fused projections have a bias")
    bias = None
    if all(has_bias):
        bias = torch.cat([m.bias.data for m in linears])
    row = 0
    for m in linears:
        rows = m.weight.shape[0]
        m.weight.data = weight[row : row + rows]
        if bias is not None:
            m.bias.data = bias[row : row + rows]
        row += rows
    return weight_t, bias
