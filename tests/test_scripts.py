"""Every script under benchmarks/ and scripts/ imports (loaded by path, main not run), so a rename in the library
cannot break one silently; the GPU benchmark's CPU fallback runs its shape check."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")])


def load(path: Path):  # type: ignore[no-untyped-def]
    name = f"_script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_there_are_scripts() -> None:
    assert {"train_throughput", "gpu_step", "semantic_store", "make_openclip_goldens"} <= {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports(path: Path) -> None:
    module = load(path)
    if '__name__ == "__main__"' in path.read_text():  # a runnable script, not a helper module another one imports
        assert callable(getattr(module, "main", None)), f"{path.name} has no main()"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback only runs without a GPU")
def test_gpu_step_says_no_gpu_and_checks_shapes(capsys: pytest.CaptureFixture) -> None:
    assert load(ROOT / "benchmarks" / "gpu_step.py").main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no GPU:") and "| alignclip |" in out and "MiniLM caption encoding:" in out
