"""Whether two result rows were measured under comparable conditions (same machine model, same memory cap).

A ratio between two rows (the gate's baseline/current, the report's method/AdamW) only means something when
both ran on the same device model: `env.device_name` (the GPU's name, e.g. "NVIDIA H100 80GB HBM3", or the
CPU model on CPU runs), not just `config.device == "cuda"`, and under the same memory cap (`--max-memory-gb`
or the suite's `max_memory_gb`). A row without an env record has device name None, which matches only None.
"""

from __future__ import annotations


def device_name(p) -> str | None:
    """The env's device name of a row (a Point), or None when the row has no env record."""
    name = p.env.get("device_name")
    return None if name in (None, "") else str(name)


def memory_cap_bytes(p) -> int | None:
    """The memory cap a row ran under: metrics.memory_cap_bytes, else config.max_memory_gb; None if uncapped."""
    cap = p.metrics.get("memory_cap_bytes")
    if cap is None and p.config.get("max_memory_gb") is not None:
        cap = p.config["max_memory_gb"] * 1024**3
    try:
        return None if cap is None else int(cap)
    except (TypeError, ValueError):
        return None


def _cap_text(cap: int | None) -> str:
    return "no cap" if cap is None else f"cap {cap / 1024**3:g} GiB"


def mismatch(a, b) -> str | None:
    """None when rows a and b ran on the same device model under the same memory cap, else the reason
    (e.g. "device NVIDIA H200 vs NVIDIA H100 80GB HBM3")."""
    da, db = device_name(a), device_name(b)
    if da != db:
        return f"device {da or 'unknown'} vs {db or 'unknown'}"
    ca, cb = memory_cap_bytes(a), memory_cap_bytes(b)
    if ca != cb:
        return f"memory {_cap_text(ca)} vs {_cap_text(cb)}"
    return None
