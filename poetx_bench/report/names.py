"""One place for names and units: paper names -> poetx-bench names, display order, GB convention.

GB convention: every "GB" in this package (the paper's numbers and ours) is a GiB, 2**30 bytes.
The paper's memory numbers come from torch.cuda and match GiB: Llama-8B's bf16 weights
(about 8.05e9 parameters = 16.1e9 bytes) are 15.0 "GB" in its memory breakdown = 15.0 GiB.
Our byte counts are divided by 2**30 before they are set beside the paper's.
"""

from __future__ import annotations

import re

from ..flops import LINEAR
from ..methods import BASELINE_METHOD, METHODS
from ..results.point import number

GB_BYTES = 2**30
GB_NOTE = "GB here means GiB (2^30 bytes), for both measured and paper values."

PAPER_CITATION = "POET-X paper (arXiv:2603.05500)"

# Paper method/variant names -> ours.
PAPER_METHODS: dict[str, str] = {
    "AdamW": "adamw",
    "POET": "poet",
    "POET-X": "poetx",
    "POET-X-fast": "poetx-fast",
    "POET-X-mem": "poetx-mem",
    "POET-XQ": "poetxq",
    "nn.Linear": "linear",
    "Muon": "muon",
    "APOLLO": "apollo",
    "GaLore": "galore",
    "LoRA-r160": "lora-r160",
    "LoRA-r320": "lora-r320",
    "Q-GaLore-8bit": "q-galore-8bit",
    "Q-APOLLO-8bit": "q-apollo-8bit",
}

# Paper model names -> ours.
PAPER_MODELS: dict[str, str] = {"3B": "3b", "8B": "8b", "13B": "13b"}

# Paper memory-breakdown component names -> ours (metrics.memory_breakdown_bytes keys).
PAPER_COMPONENTS: dict[str, str] = {
    "frozen_params": "frozen_params",
    "trainable_params": "trainable_params",
    "gradients": "gradients",
    "optimizer_state": "optimizer_state",
    "activations_and_other": "activations_other",
}

COMPONENTS = ["frozen_params", "trainable_params", "gradients", "optimizer_state", "activations_other"]
LATENCY_OPS = ["cayley", "permutation", "matmul", "other"]
PHASES = ["forward", "backward"]

# the layer suites' nn.Linear, then the methods in registry order (poetx_bench/methods)
METHOD_ORDER = [LINEAR, *METHODS]
BASELINE = BASELINE_METHOD  # what "relative to AdamW" divides by
MODEL_ORDER = ["tiny", "60m", "130m", "350m", "1b", "3b", "8b", "13b"]
STATUS_ORDER = ["ok", "oom", "error", "timeout", "diverged", "skipped"]


def paper_method(name: str) -> str:
    """Map a paper method name to ours; unknown names are lower-cased with spaces -> '-'."""
    name = str(name).strip()
    if name in PAPER_METHODS:
        return PAPER_METHODS[name]
    return re.sub(r"\s+", "-", name.lower())


def display_name(method) -> str:
    """A method's display name from the registry ('POET-X (fast)'); other names as given."""
    spec = METHODS.get(str(method))
    return spec.display_name if spec else str(method)


def uses_blocks(method) -> bool:
    """Whether the method has a block size (its MethodSpec says so)."""
    spec = METHODS.get(str(method))
    return bool(spec and spec.uses_blocks)


def paper_model(name: str) -> str:
    name = str(name).strip()
    return PAPER_MODELS.get(name, name.lower())


def to_gb(nbytes) -> float | None:
    """Bytes -> GiB, None for missing / non-numeric."""
    value = number(nbytes)
    return None if value is None else value / GB_BYTES


def order_key(order: list[str], value) -> tuple:
    """Sort key putting known names first in the given order, then the rest alphabetically."""
    text = "" if value is None else str(value)
    return (order.index(text) if text in order else len(order), text)


def method_key(method) -> tuple:
    return order_key(METHOD_ORDER, method)


def model_key(model) -> tuple:
    return order_key(MODEL_ORDER, model)
