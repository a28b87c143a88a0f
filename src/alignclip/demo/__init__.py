"""`alignclip demo`: CLIP vs SharedCLIP vs AlignCLIP on the built-in dataset, trained and measured alike."""
from .run import DEMO_METHODS, DemoSettings, run_demo

__all__ = ["DEMO_METHODS", "DemoSettings", "run_demo"]
