"""bench/loss_parity.py: the same curve with fresh noise agrees, a curve shifted by many noise standard
errors does not, and a file with nothing to compare is a one-line error (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("loss_parity", ROOT / "bench" / "loss_parity.py")
lp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lp)


def _curve(seed, shift=0.0, n=200):
    rnd = random.Random(seed)
    return [10.0 * 0.99 ** i + 3 + shift * (i >= 100) + rnd.gauss(0, 0.05) for i in range(n)]


def _row(method, backend, compile_, losses):
    return {"status": "ok", "point_id": f"{method}{backend}{compile_}",
            "config": {"method": method, "backend": backend, "compile": compile_},
            "metrics": {"losses": losses}}


def _write(tmp_path, rows):
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def test_agreeing_and_disagreeing_curves(tmp_path, capsys):
    rows = [_row("poetx-fast", "triton", "none", _curve(1)), _row("poetx-fast", "triton", "cudagraph", _curve(2))]
    assert lp.main([_write(tmp_path, rows)]) == 0
    rows.append(_row("poetx-fast", "official", "none", _curve(3, shift=0.2)))  # 0.2 >> 4 SE (~0.06)
    assert lp.main([_write(tmp_path, rows)]) == 1
    out = capsys.readouterr().out
    assert "backend=official compile=none" in out and "NO" in out


def test_nothing_to_compare_is_a_usage_error(tmp_path, capsys):
    assert lp.main([_write(tmp_path, [_row("adamw", "triton", "cudagraph", _curve(1))])]) == 2
    assert "no method has an eager reference" in capsys.readouterr().err


def test_seed_spread_widens_the_tolerance(tmp_path):
    """A difference larger than 4 SE but no larger than the method's own seed-to-seed spread agrees."""
    ref = _row("poetx-fast", "triton", "none", _curve(1))
    other = _row("poetx-fast", "official", "none", _curve(3, shift=0.2))
    reseeded = _row("poetx-fast", "triton", "none", _curve(4, shift=0.25))
    reseeded["config"]["seed"] = 1
    assert lp.main([_write(tmp_path, [ref, other])]) == 1
    second = tmp_path / "seed1.jsonl"
    second.write_text(json.dumps(reseeded) + "\n")
    assert lp.main([_write(tmp_path, [ref, other]), str(second)]) == 0


def test_runs_of_other_setups_are_not_compared(tmp_path):
    """A run at another model (any config key beyond backend/compile/seed) is its own group: never set
    beside a reference of another setup."""
    ref = _row("poetx-fast", "triton", "none", _curve(1))
    other_model = _row("poetx-fast", "official", "none", _curve(3, shift=0.5))
    other_model["config"]["model"] = "350m"
    assert lp.main([_write(tmp_path, [ref, other_model])]) == 2  # nothing comparable
