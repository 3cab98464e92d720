"""bench/kernel_bench.py must at least run end to end on CPU (--cpu-smoke: interpreter, tiny shapes).

Run in a subprocess so the script's TRITON_INTERPRET=1 never leaks into this pytest process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_bench_cpu_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kernel_bench.py"), "--out", str(tmp_path),
                           "--cpu-smoke", "--sweep", "--rep-ms", "1",
                           "--sections", "correctness,layer,rows,kernel,bgemm"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "kernels.jsonl").read_text().splitlines()]
    sections = {r["section"] for r in rows}
    assert {"env", "correctness", "layer", "kernel", "sweep", "bgemm"} <= sections
    errors = [r for r in rows if "error" in r]
    assert not errors, errors[:3]
    assert all(r["ok"] for r in rows if r["section"] == "correctness")
    assert "== layer ==" in proc.stdout
