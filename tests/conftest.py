"""Session-wide check: every row the tests make the harness write is strict JSON.

Rows at the current schema version under pytest's temporary folders come from the writer (fixtures and
hand-made lines are older versions or not rows), so each must parse with NaN/Infinity refused.
"""

from __future__ import annotations

import pytest
from strict_json import strict_rows


@pytest.fixture(scope="session", autouse=True)
def rows_are_strict_json(tmp_path_factory):
    yield
    checked, failures = strict_rows(tmp_path_factory.getbasetemp())
    assert not failures, f"{len(failures)} of {checked} rows are not strict JSON:\n" + "\n".join(failures[:20])


@pytest.fixture
def triton_interpret(monkeypatch):
    """TRITON_INTERPRET=1 for one test (restored by monkeypatch), and exact ("ieee") fp32 dots on a GPU."""
    import torch

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old
