"""benchmarks/distill_step.py imports and measures both arms on a micro model (the figures: benchmarks/README.md)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from conftest import MICRO

ROOT = Path(__file__).resolve().parents[1]


def test_distill_step_benchmark_runs_both_arms(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("distill_step", ROOT / "benchmarks" / "distill_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    preset = tmp_path / "micro.json"
    preset.write_text(json.dumps(MICRO))
    result = module.measure(str(preset), batch_size=8, steps=2, warmup=1, num_batches=2)
    assert result["plain_ms"] > 0 and result["distill_ms"] > 0
    assert math.isclose(result["ratio"], result["distill_ms"] / result["plain_ms"])
