"""One typed training config (nested dataclasses), loadable from YAML/TOML and overridable with ``a.b=value``.

Why dataclasses and not argparse flags (open_clip's way): the same object is built by the CLI, by a YAML/TOML file
and by Python callers (the demo), every value is type-checked against its field, and the resolved config is written
next to the checkpoints so that ``--resume`` continues with exactly what was trained.

Longer than our usual files because it still holds the generic dotted-key override engine (``update``,
``set_value``, ``_coerce``); moving that into its own module is open work (issue 10).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

METHODS = ("clip", "sharedclip", "alignclip")
MAX_SEED = 2**32 - 1  # seeds feed numpy (32 bit) and derived torch seeds (seed * 100_003 + epoch must fit 64 bits)
# What a run trains: resuming with any of these changed is an error unless resume_allow_changes is set.
RESUME_FIXED = ("method", "model.preset", "model.architecture", "model.init_from", "model.init_config", "data.train",
                "data.num_samples", "data.synthetic_seed", "data.csv_image_key", "data.csv_caption_key")
# The architectures each method trains, its default first. IMSep is a loss on the two embeddings, so it fits the
# two-tower model too (post-training a CLIP someone already has); SharedCLIP *is* the shared architecture.
METHOD_ARCHITECTURES = {"clip": ("clip",), "sharedclip": ("shared",), "alignclip": ("shared", "clip")}
METHOD_ARCHITECTURE = {method: archs[0] for method, archs in METHOD_ARCHITECTURES.items()}
# `alignclip train --recipe NAME`: overrides applied over the defaults, below --config, flags and --set.
RECIPES: dict[str, dict[str, Any]] = {
    # Post-training an already trained CLIP (model.init_from) with IMSep: a lower lr than from scratch so the
    # learned features are kept, a short warm-up, and full-strength separation from the start (the embeddings are
    # already aligned, so there is nothing for a beta ramp to wait for). README: "Close the gap of the CLIP you
    # already have".
    "posttrain": {"method": "alignclip", "loss.weighting": "negatives", "loss.beta": 0.5,
                  "loss.separation_warmup_steps": 0, "optim.lr": 2e-4, "optim.warmup_steps": 10},
}


@dataclass
class ModelSection:
    preset: str = "tiny"  # preset name (tiny, small, ViT-B-16, ...) or a path to a JSON model config
    architecture: Literal["clip", "shared"] | None = None  # None: derived from `method` (or from `init_from`)
    # Post-training: weights only (fresh optimizer and schedule); the checkpoint fixes architecture and model config.
    init_from: str | None = None  # start from these weights: any checkpoint alignclip.load_checkpoint reads
    init_config: str | None = None  # how to read init_from: preset, JSON, open_clip JSON or open_clip model name


@dataclass
class DataSection:
    train: str = "synthetic"  # "synthetic", "csv:PATH", "tsv:PATH", "captions:DIR" or "wds:PATTERN" (pipe:, http://)
    csv_image_key: str = "filepath"  # open_clip's --csv-img-key
    csv_caption_key: str = "title"  # open_clip's --csv-caption-key
    csv_separator: str = "\t"  # open_clip's --csv-separator
    # wds: open_clip's --train-num-samples; null counts local shards' samples and is an error for remote ones.
    # csv/folder: only the first N rows/files (null: all).
    num_samples: int | None = None  # synthetic: dataset size (null: 8192); wds: samples per epoch (null: counted)
    synthetic_seed: int = 0  # which synthetic dataset (its content), independent of the training seed
    workers: int = 2  # DataLoader worker processes per rank
    max_skip_fraction: float = 0.05  # stop when more than this fraction of samples was unreadable


@dataclass
class LossSection:
    alpha: float = 1.0  # weight of the contrastive (CLIP) term in AlignCLIPLoss
    beta: float = 0.5  # weight of the intra-modality separation term (IMSep)
    separate_text: bool = True  # IMSep between captions
    separate_image: bool = True  # IMSep between images (weights still from the captions)
    weighting: Literal["logits", "negatives"] = "logits"  # logits: the paper; negatives: weights in the softmax denominator
    # A ramp lets contrastive learning start first: at constant beta the paper's IMSep collapses short runs on
    # near-synonymous captions (the synthetic data). 0 is the paper's constant beta.
    separation_warmup_steps: int = 100  # beta ramps linearly from 0 to `beta` over these steps (0: constant beta)
    local_loss: bool = False  # open_clip's --local-loss: logits of local rows against the global batch only
    semantic_model: str | None = None  # sentence-transformers name/path; None: the bundled all-MiniLM-L6-v2
    semantic_cache_dir: str | None = None  # caption-embedding disk cache; None: the encoder's default


@dataclass
class OptimSection:
    lr: float = 5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.2  # not applied to gains, biases, embeddings, class token, logit_scale
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP's)
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 0 (per optimizer step)
    schedule: Literal["cosine", "constant"] = "cosine"  # after the warm-up
    grad_clip: float | None = None  # max global grad norm (open_clip's --grad-clip-norm)
    batch_size: int = 64  # GLOBAL samples per optimizer step (all ranks, all accumulation micro-batches)
    accum_freq: int = 1  # micro-batches per optimizer step (gradient accumulation)
    epochs: int = 2  # passes over the data (when `steps` is null)
    steps: int | None = None  # when set, train exactly this many optimizer steps (epochs is then ignored)


@dataclass
class RuntimeSection:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp32 on CPU, bf16 AMP (else fp16) on GPU
    compile: bool = False  # torch.compile the model
    threads: int | None = None  # torch CPU threads per process; None: torch's default (one per core)
    seed: int = 0  # weights, data order (with the epoch) and every RNG; 0 to 2**32 - 1
    dist_timeout_s: float = 600.0  # DDP: seconds a rank waits for the others (joining, or any collective)


@dataclass
class LoggingSection:
    out: str = "runs"  # root folder of run directories
    name: str | None = None  # run directory name; None: a new timestamped folder (never reuses one)
    log_every: int = 10  # optimizer steps between metric log lines
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True  # TensorBoard event files in <run>/tensorboard
    checkpoint_every: int = 100  # optimizer steps between checkpoints (0: only at the end)
    keep_last: int = 3  # checkpoints kept on disk (0: keep all)
    collapse_threshold: float = 0.9  # warn when the mean intra-modal cosine exceeds this (collapsing embedding)


@dataclass
class TrainConfig:
    method: Literal["clip", "sharedclip", "alignclip"] = "alignclip"  # clip | sharedclip | alignclip
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    resume: str | None = None  # "latest", a run directory or a checkpoint directory
    resume_allow_changes: bool = False  # let a resume change what is trained (method, model, data): see RESUME_FIXED

    @property
    def architecture(self) -> str:
        """The architecture of a fresh model; with model.init_from the checkpoint's wins (init_model.build_model)."""
        return self.model.architecture or METHOD_ARCHITECTURE[self.method]

    @property
    def model_name(self) -> str:
        """What run folders and the progress bar call the model: the preset, or the checkpoint it starts from."""
        return Path(self.model.init_from or self.model.preset).stem

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def validate(self) -> "TrainConfig":
        """Cross-field checks that a single field's type cannot express."""
        o, d, lg, ls = self.optim, self.data, self.logging, self.loss
        checks = [
            (o.lr > 0, "optim.lr", o.lr, "must be > 0"),
            (o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0"),
            (all(0 <= b < 1 for b in o.betas), "optim.betas", o.betas, "must be in [0, 1)"),
            (o.eps > 0, "optim.eps", o.eps, "must be > 0"),
            (o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "must be >= 0"),
            (o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", o.grad_clip, "must be > 0 or null"),
            (o.batch_size >= 2, "optim.batch_size", o.batch_size, "must be >= 2 (contrastive needs negatives)"),
            (o.accum_freq >= 1, "optim.accum_freq", o.accum_freq, "must be >= 1"),
            (o.batch_size % o.accum_freq == 0, "optim.batch_size", o.batch_size,
             f"must be divisible by optim.accum_freq={o.accum_freq}"),
            (o.epochs >= 1, "optim.epochs", o.epochs, "must be >= 1"),
            (o.steps is None or o.steps >= 1, "optim.steps", o.steps, "must be >= 1 or null"),
            (d.num_samples is None or d.num_samples >= 1, "data.num_samples", d.num_samples, "must be >= 1 or null"),
            (d.workers >= 0, "data.workers", d.workers, "must be >= 0"),
            (0 <= d.max_skip_fraction <= 1, "data.max_skip_fraction", d.max_skip_fraction, "must be in [0, 1]"),
            (ls.alpha >= 0, "loss.alpha", ls.alpha, "must be >= 0"),
            (ls.beta >= 0, "loss.beta", ls.beta, "must be >= 0"),
            (ls.separation_warmup_steps >= 0, "loss.separation_warmup_steps", ls.separation_warmup_steps,
             "must be >= 0"),
            (lg.log_every >= 1, "logging.log_every", lg.log_every, "must be >= 1"),
            (lg.checkpoint_every >= 0, "logging.checkpoint_every", lg.checkpoint_every, "must be >= 0"),
            (lg.keep_last >= 0, "logging.keep_last", lg.keep_last, "must be >= 0"),
            (bool(d.train.strip()), "data.train", d.train, "must not be empty"),
            (self.runtime.threads is None or self.runtime.threads >= 1, "runtime.threads", self.runtime.threads,
             "must be >= 1 or null"),
        ]
        checks[:0] = [(all(math.isfinite(v) for v in _numbers(value)), key, value, "must be finite")
                      for key, value in _values(self)]  # first: nan fails every comparison with a vaguer reason
        checks += [(0 <= seed <= MAX_SEED, key, seed, "must be in [0, 2**32 - 1]")
                   for key, seed in (("runtime.seed", self.runtime.seed), ("data.synthetic_seed", d.synthetic_seed))]
        checks.append((self.runtime.dist_timeout_s > 0, "runtime.dist_timeout_s", self.runtime.dist_timeout_s,
                       "must be > 0"))
        for ok, key, value, why in checks:
            if not ok:
                raise ValueError(f"bad value for '{key}': {value!r} ({why})")
        if self.model.architecture is not None:
            check_architecture(self.method, self.model.architecture, "bad value for 'model.architecture':")
        m = self.model
        if m.init_config is not None and not m.init_from:
            raise ValueError(f"bad value for 'model.init_config': {m.init_config!r} (only used with model.init_from)")
        if m.init_from and m.preset != ModelSection.preset:
            raise ValueError(f"bad value for 'model.preset': {m.preset!r} (with model.init_from the checkpoint "
                             "fixes the model; say how to read it with model.init_config)")
        return self


def changed_settings(saved: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """'key: old -> new' for each RESUME_FIXED setting that differs between a checkpoint's saved config (a dict, as
    TrainConfig.to_dict wrote it) and `config`; the architecture is compared as resolved from the method."""
    def lookup(data: Mapping[str, Any], key: str) -> Any:
        for part in key.split("."):
            data = data.get(part) if isinstance(data, Mapping) else None  # type: ignore[assignment]
        return data

    new = config.to_dict()
    old_arch = lookup(saved, "model.architecture") or METHOD_ARCHITECTURE.get(saved.get("method"), None)
    changes = []
    for key in RESUME_FIXED:
        before, after = (old_arch, config.architecture) if key == "model.architecture" else \
            (lookup(saved, key), lookup(new, key))
        if before != after:
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def check_architecture(method: str, architecture: str, what: str) -> None:
    """One-line error when `method` cannot train `architecture` (`what` names where the architecture came from)."""
    if architecture in METHOD_ARCHITECTURES[method]:
        return
    fits = " or ".join(m for m, archs in METHOD_ARCHITECTURES.items() if architecture in archs)
    why = {"clip": "method 'clip' is the two-tower model; the CLIP loss on the shared one is 'sharedclip'",
           "sharedclip": "method 'sharedclip' is the CLIP loss on one shared transformer, which a two-tower "
                         "model does not have"}[method]
    raise ValueError(f"{what} {architecture!r}, which method {method!r} cannot train ({why}; use method {fits})")


# ---------------------------------------------------------------------------------------------------- building


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = (),
                base: TrainConfig | Mapping[str, Any] | None = None) -> TrainConfig:
    """defaults (or `base`) <- YAML/TOML file <- overrides ("a.b=value" strings or a {"a.b": value} mapping)."""
    config = from_dict(base) if isinstance(base, Mapping) else (base or TrainConfig())
    if path is not None:
        update(config, read_config_file(path), source=str(path))
    if isinstance(overrides, Mapping):
        update(config, dict(overrides), source="overrides")
    else:
        for item in overrides:
            key, value = parse_override(item)
            set_value(config, key, value, from_text=True)
    return config.validate()


def from_dict(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    config = TrainConfig()
    update(config, data, source)
    return config.validate()


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML ({e})") from None
    elif path.suffix in (".yaml", ".yml", ".json"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    else:
        raise ValueError(f"{path}: config files must end in .yaml, .yml, .json or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def update(config: TrainConfig, data: Mapping[str, Any], source: str = "config", prefix: str = "") -> None:
    """Apply a nested (or dotted-key) mapping; sections recurse, leaves are type-checked."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and _is_section(dotted):
            update(config, value, source, prefix=dotted + ".")
        else:
            set_value(config, dotted, value)


def parse_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"bad override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
    return key.strip(), value


def set_value(config: TrainConfig, key: str, value: Any, from_text: bool = False) -> None:
    """Set one dotted key; `from_text` parses the value with yaml.safe_load (raw text kept for str fields)."""
    owner, name, hint = _resolve(config, key)
    if from_text:
        value = _parse_text(value, hint)
    setattr(owner, name, _coerce(key, value, hint))


def all_keys() -> list[str]:
    return [key for key, _ in _walk(TrainConfig)]


# ---------------------------------------------------------------------------------------------------- internals


def _walk(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out += _walk(hint, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", hint))
    return out


def _values(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a config object."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out += _values(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [(prefix + f.name, value)]
    return out


def _numbers(value: Any) -> list[float]:
    """The floats in a leaf value (tuples such as optim.betas included); ints and bools are always finite."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in items if isinstance(v, float)]


def _is_section(key: str) -> bool:
    return any(k.startswith(key + ".") for k in all_keys())


def _resolve(config: TrainConfig, key: str) -> tuple[Any, str, Any]:
    owner: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(type(owner))
        if part not in hints:
            close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6) or \
                [k for k in all_keys() if k.rsplit(".", 1)[-1] == parts[-1]][:1]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown config key '{key}'{hint}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(hints[part]):
                raise ValueError(f"config key '{key}' is a section; set one of its keys, e.g. '{key}."
                                 f"{dataclasses.fields(hints[part])[0].name}'")
            return owner, part, hints[part]
        if not dataclasses.is_dataclass(hints[part]):
            raise ValueError(f"unknown config key '{key}' ('{'.'.join(parts[:i + 1])}' is not a section)")
        owner = getattr(owner, part)
    raise AssertionError("unreachable")


def _is_optional(hint: Any) -> tuple[bool, Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return False, hint


def _parse_text(text: str, hint: Any) -> Any:
    optional, inner = _is_optional(hint)
    if optional and text.strip() in ("null", "None", "~", ""):
        return None
    if inner is str:
        return text  # keep paths and names verbatim ("2024", "on" or "1e3" stay strings)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _describe(hint: Any) -> str:
    optional, inner = _is_optional(hint)
    if typing.get_origin(inner) is Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(inner)))
    elif typing.get_origin(inner) is tuple:
        text = "a list of " + ", ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(inner))
    else:
        text = getattr(inner, "__name__", str(inner))
    return text + (" or null" if optional else "")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    optional, inner = _is_optional(hint)
    bad = ValueError(f"bad value for '{key}': {value!r} (expected {_describe(hint)})")
    if value is None:
        if optional:
            return None
        raise bad
    origin = typing.get_origin(inner)
    if origin is Literal:
        if value not in typing.get_args(inner):
            raise bad
        return value
    if origin is tuple:
        args = typing.get_args(inner)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if inner is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if inner is int:
        if isinstance(value, str):  # YAML 1.1 reads "1e4" as a string
            value = _number(value, bad)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():  # 1e4 from YAML is a float
                return int(value)
            raise bad
        return value
    if inner is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            value = _number(value, bad)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"config key '{key}' has an unsupported type {hint!r}")  # pragma: no cover


def _number(text: str, bad: ValueError) -> float:
    try:
        return float(text)
    except ValueError:
        raise bad from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def reference_table() -> str:
    """The Markdown config reference (key, default, meaning), read off the dataclasses and their comments; the
    README embeds it and a test keeps the two identical."""
    import inspect
    import re

    rows = ["| key | default | meaning |", "|---|---|---|"]

    def comments(cls: type) -> dict[str, str]:
        found = {}
        for line in inspect.getsource(cls).splitlines():
            match = re.match(r"\s+(\w+):[^#]*?(?:#\s*(.*))?$", line)
            if match and match.group(2):
                found[match.group(1)] = match.group(2).strip()
        return found

    def walk(cls: type, prefix: str) -> None:
        notes = comments(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
                continue
            shown = yaml.safe_dump(_plain(default), default_flow_style=True).strip().removesuffix("\n...")
            note = notes.get(f.name, "").replace("|", "\\|")
            rows.append(f"| `{prefix}{f.name}` | `{shown}` | {note} |")

    walk(TrainConfig, "")
    return "\n".join(rows)
