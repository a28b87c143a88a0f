"""Shared test setup: caption-embedding caches go to a temporary folder (never the user's ~/.cache), and the micro
model config that the training tests share."""
from __future__ import annotations

import json
import os
import tempfile

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("ALIGNCLIP_CACHE", tempfile.mkdtemp(prefix="alignclip-test-cache-"))

# The smallest model config that still has every part (two heads, one layer per tower): training tests take seconds.
MICRO = {"embed_dim": 32,
         "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 1, "heads": 2},
         "text_cfg": {"context_length": 16, "width": 32, "layers": 1, "heads": 2}}


@pytest.fixture(scope="session")
def micro_preset(tmp_path_factory) -> str:
    """MICRO as a JSON model-config file, for `model.preset` / `--preset`."""
    path = tmp_path_factory.mktemp("model") / "micro.json"
    path.write_text(json.dumps(MICRO))
    return str(path)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """An untrained tiny `clip` checkpoint in our format, for the evaluation and CLI tests."""
    import alignclip

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    alignclip.save_checkpoint(alignclip.create_model("tiny", seed=0), path)
    return path
