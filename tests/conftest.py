"""Test-session isolation: caption-embedding caches go to a temporary folder, never the user's ~/.cache."""
from __future__ import annotations

import os
import tempfile

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("ALIGNCLIP_CACHE", tempfile.mkdtemp(prefix="alignclip-test-cache-"))
