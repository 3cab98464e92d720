"""LoRA (peft 0.21.2) at rank 160 and 320, the POET-X paper's LoRA rows: adapters on every hidden linear
layer (q, k, v, o, gate, up, down), the whole base model frozen (embeddings, norms and lm_head included),
AdamW on the adapters. The adapters stay in the model dtype: get_peft_model's default upcasts them to
float32 (autocast_adapter_dtype), which is turned off here so a bf16 run measures bf16 adapters.
lora_alpha 32 and no dropout (the GaLore paper's LoRA baseline settings, dropout left at peft's default)."""

from __future__ import annotations

from torch import nn

from .base import BETAS, HParam, MergeHook, MethodSpec, Prepared, adamw, materialize_on, needs_package
from .flops import dense_train_flops

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

HPARAMS = {
    "lr": HParam(float, 1e-3, "AdamW learning rate of the adapters"),
    "lora_alpha": HParam(float, 32.0, "LoRA alpha (the update is scaled by alpha / r)"),
    "lora_dropout": HParam(float, 0.0, "dropout on the adapters' input"),
    "weight_decay": HParam(float, 0.0, "AdamW decoupled weight decay"),
    "betas": BETAS,
    "eps": HParam(float, 1e-8, "Adam epsilon"),
}


def _build(rank: int):
    def build(model, block_size, hp, ctx) -> Prepared:
        from peft import LoraConfig, get_peft_model

        device_type = materialize_on(model, ctx.device, ctx.seed)
        config = LoraConfig(r=rank, lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
                            target_modules=TARGETS, bias="none")
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=False)
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        opt = adamw(trainable, device_type, lr=hp["lr"], betas=tuple(hp["betas"]),
                    weight_decay=hp["weight_decay"], eps=hp["eps"])
        return Prepared(peft_model, opt, MergeHook(peft_model, opt, ctx.merge_every))
    return build


def adapter_params(rank: int, model: nn.Module) -> int:
    """Parameters LoRA adds: r * (in + out) per adapted linear."""
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS)


SPECS = [
    MethodSpec(f"lora-r{r}", f"LoRA (r={r})", color,
               f"LoRA rank {r} (peft) on the hidden linears, base frozen, adapters in the model dtype",
               build=_build(r), train_flops=dense_train_flops, hparams=HPARAMS,
               skip_reason=needs_package("peft", "peft"))
    for r, color in ((160, "#b2df8a"), (320, "#33a02c"))
]
