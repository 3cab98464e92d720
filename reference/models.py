"""Llama model family with the POET-X paper's dimensions.

Multi-head attention (no GQA), vocab 32000, RoPE, RMSNorm, SwiGLU MLP, causal
`scaled_dot_product_attention`, untied `lm_head`. Models are constructed on the meta device and then
materialised directly on the target device and dtype, so a 13B model builds in seconds on a GPU with no
float32 staging copy on the host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaConfig:
    name: str
    hidden: int
    intermediate: int
    n_heads: int
    n_layers: int
    vocab_size: int = 32000
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def as_dict(self) -> dict:
        return asdict(self)


MODEL_CONFIGS: dict[str, LlamaConfig] = {
    c.name: c
    for c in (
        LlamaConfig("tiny", 128, 352, 4, 2),
        LlamaConfig("60m", 512, 1280, 8, 8),
        LlamaConfig("130m", 768, 2048, 12, 12),
        LlamaConfig("350m", 1024, 2736, 16, 24),
        LlamaConfig("1b", 2048, 5632, 32, 24),
        LlamaConfig("3b", 2560, 7168, 32, 32),
        LlamaConfig("8b", 4096, 14336, 32, 32),
        LlamaConfig("13b", 5120, 13824, 40, 40),
    )
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight


class Rotary(nn.Module):
    """RoPE cos/sin tables; recomputed (non-persistent) at materialisation."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float, device=None):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, head_dim // 2, device=device), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, head_dim // 2, device=device), persistent=False)
        if self.cos.device.type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        dev = self.cos.device
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=dev, dtype=torch.float32)
                                    / self.head_dim))
        ang = torch.outer(torch.arange(self.max_seq_len, device=dev, dtype=torch.float32), inv)
        self.cos.copy_(ang.cos())
        self.sin.copy_(ang.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, L, D) -> rotated, pairs (even, odd) rotated together."""
        seq = x.shape[-2]
        cos = self.cos[:seq].to(x.dtype)
        sin = self.sin[:seq].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, device=None, dtype=None):
        super().__init__()
        f = {"device": device, "dtype": dtype, "bias": False}
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.hidden // cfg.n_heads
        self.q_proj = nn.Linear(cfg.hidden, cfg.hidden, **f)
        self.k_proj = nn.Linear(cfg.hidden, cfg.hidden, **f)
        self.v_proj = nn.Linear(cfg.hidden, cfg.hidden, **f)
        self.o_proj = nn.Linear(cfg.hidden, cfg.hidden, **f)
        self.rotary = Rotary(self.head_dim, cfg.max_seq_len, cfg.rope_theta, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, seq, _ = x.shape

        def heads(t):
            return t.view(b, seq, self.n_heads, self.head_dim).transpose(1, 2)

        q = self.rotary(heads(self.q_proj(x)))
        k = self.rotary(heads(self.k_proj(x)))
        v = heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, seq, -1))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig, device=None, dtype=None):
        super().__init__()
        f = {"device": device, "dtype": dtype, "bias": False}
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, **f)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, **f)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, **f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, device=None, dtype=None):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden, cfg.norm_eps, device, dtype)
        self.attn = Attention(cfg, device, dtype)
        self.mlp_norm = RMSNorm(cfg.hidden, cfg.norm_eps, device, dtype)
        self.mlp = MLP(cfg, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig, device=None, dtype=None):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden, device=device, dtype=dtype)
        self.layers = nn.ModuleList(Block(cfg, device, dtype) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps, device, dtype)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False, device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


@torch.no_grad()
def init_weights(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise every module in place (after `to_empty`): Linear/Embedding N(0, std), norms 1,
    POET layers their own reset (paper W0 init, zero skew, fresh permutations)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model


def materialize(model: nn.Module, device, seed: int | None = None) -> nn.Module:
    """Allocate a meta-device model on `device` (no copy) and initialise it."""
    if seed is not None:
        torch.manual_seed(seed)
    model.to_empty(device=device)
    return init_weights(model)


def build_model(name: str, dtype: torch.dtype = torch.float32, device="cpu", seed: int | None = None,
                meta: bool = False, **overrides) -> Llama:
    """Build a Llama from MODEL_CONFIGS on `device` in `dtype` (or leave it on meta with meta=True).

    `overrides` replace config fields (e.g. vocab_size, max_seq_len).
    """
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_CONFIGS)}")
    cfg = MODEL_CONFIGS[name]
    if overrides:
        cfg = LlamaConfig(**{**cfg.as_dict(), **overrides})
    with torch.device("meta"):
        model = Llama(cfg, dtype=dtype)
    return model if meta else materialize(model, device, seed)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
