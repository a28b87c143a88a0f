"""A run's config from its layers, in one order (later wins): defaults < the resumed run's saved config.yaml <
--recipe < --config file < flags < --set. The schema and its checks are config.py; the generic dotted-key engine is
overrides.py; this module only layers them, and reads and writes config files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from alignclip.rundir import RunDir

from .config import TrainConfig
from .overrides import parse_override, read_config_file, set_value, update
from .recipes import RECIPES


def resolve_config(file: str | Path | None = None, recipe: str | None = None, flags: Mapping[str, Any] | None = None,
                   overrides: Sequence[str] = (), resume: str | None = None) -> TrainConfig:
    """A run's config, in one order (later wins): defaults < the resumed run's saved config.yaml < RECIPES[recipe]
    < file < flags (a {"a.b": value} mapping) < overrides ("a.b=value" strings).

    `resume` (or a `resume` set by the layers): "latest", a run or a checkpoint folder. A first pass over the layers
    gives the logging.out/name that checkpoint.resolve_resume needs; the result's `resume` is the checkpoint folder.
    The saved config is checked alone first, so its errors name the file; its resume_allow_changes is dropped (a
    permission for one resume, not for every later one)."""
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (known: {', '.join(sorted(RECIPES))})")
    layers = [(f"recipe {recipe}", RECIPES[recipe] if recipe else {}),
              (str(file), read_config_file(file) if file is not None else {}), (None, dict(flags or {}))]

    def layered(config: TrainConfig) -> TrainConfig:
        for source, data in layers:
            update(config, data, source)
        for item in overrides:
            set_value(config, *parse_override(item), from_text=True)
        return config

    config = layered(TrainConfig())
    resume = resume or config.resume
    if not resume:
        return config.validate()
    from .checkpoint import resolve_resume  # torch: imported only when resuming, to keep `--help` fast
    checkpoint = resolve_resume(resume, config.logging.out, config.logging.name)
    saved = RunDir.of_checkpoint(checkpoint).config_path  # type: ignore[union-attr]
    if saved.is_file():  # the resumed run's own settings, then whatever was given explicitly now
        settings = read_config_file(saved)
        if not settings:
            raise ValueError(f"{saved}: empty config of the resumed run (expected its settings, as written)")
        settings.pop("resume_allow_changes", None)
        try:
            base = from_dict(settings)
        except ValueError as e:
            raise ValueError(f"{saved}: {e}") from None
        config = layered(base)
    config.resume = str(checkpoint)
    return config.validate()


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = (),
                base: TrainConfig | Mapping[str, Any] | None = None) -> TrainConfig:
    """defaults (or `base`) <- YAML/TOML file <- overrides ("a.b=value" strings or a {"a.b": value} mapping); what
    resolve_config (the CLI's) adds: recipes, flags and the resumed run's settings."""
    config = from_dict(base) if isinstance(base, Mapping) else (base or TrainConfig())
    if path is not None:
        update(config, read_config_file(path), source=str(path))
    if isinstance(overrides, Mapping):
        update(config, dict(overrides))
    else:
        for item in overrides:
            set_value(config, *parse_override(item), from_text=True)
    return config.validate()


def from_dict(data: Mapping[str, Any], source: str | None = None) -> TrainConfig:
    config = TrainConfig()
    update(config, data, source)
    return config.validate()


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
