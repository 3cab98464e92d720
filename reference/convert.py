"""Replace a model's nn.Linear layers by POET / POET-X layers."""

from __future__ import annotations

from torch import nn

from .poet import POETLinear
from .poetx import POETXLinear


def make_poet_layer(linear: nn.Linear, method: str, block_size: int, poetx_cls=None, **options) -> nn.Module:
    """A POET-family layer with the shape, device and dtype of `linear`.

    W0 gets the paper's initialisation (Gaussian, unit-norm rows), not the linear's weights: POET trains
    from a random frozen W0. On the meta device the layer is left uninitialised (materialise later).
    `poetx_cls` builds the POET-X layers (a POETXLinear subclass of a faster backend; default the reference).
    """
    kw = {"bias": linear.bias is not None, "device": linear.weight.device, "dtype": linear.weight.dtype,
          **options}
    if method == "poet":
        return POETLinear(linear.in_features, linear.out_features, block_size, **kw)
    if method in ("poetx-fast", "poetx-mem"):
        return (poetx_cls or POETXLinear)(linear.in_features, linear.out_features, block_size,
                                          mode=method.split("-")[1], **kw)
    raise ValueError(f"not a POET method: {method!r}")


def convert_model(model: nn.Module, method: str, block_size: int, exclude=("lm_head",),
                  **options) -> nn.Module:
    """Replace every nn.Linear whose name (or last name component) is not in `exclude`, in place.
    `options` go to make_poet_layer (poetx_cls and the layers' own options)."""
    targets = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and child_name not in exclude and full not in exclude:
                targets.append((module, child_name, child))
    for parent, child_name, child in targets:
        setattr(parent, child_name, make_poet_layer(child, method, block_size, **options))
    return model
