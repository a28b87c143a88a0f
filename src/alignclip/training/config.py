"""One typed training config (nested dataclasses), loadable from YAML/TOML and overridable with ``a.b=value``.

Why dataclasses and not argparse flags (open_clip's way): the same object is built by the CLI, by a YAML/TOML file
and by Python callers (the demo), every value is type-checked against its field, and the resolved config is written
next to the checkpoints so that ``--resume`` continues with exactly what was trained. The generic dotted-key engine
is training/overrides.py; this file holds the schema and its checks. The one layering order is resolve.py, the
recipes are recipes.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from .adapt_config import AdaptSection, adapt_checks
from .heldout_config import EvalSection, eval_checks
from .overrides import lookup, markdown_table, plain, setting, values
from .recipes import recipes_table

METHODS = ("clip", "sharedclip", "alignclip")
MAX_SEED = 2**32 - 1  # seeds feed numpy (32 bit) and derived torch seeds (seed * 100_003 + epoch must fit 64 bits)
# What a run trains: resuming with any of these changed is an error unless resume_allow_changes is set.
RESUME_FIXED = ("method", "model.preset", "model.architecture", "model.init_from", "model.init_config", "data.train",
                "data.num_samples", "data.synthetic_seed", "data.csv_image_key", "data.csv_caption_key",
                "adapt.lora_rank", "adapt.lora_targets")
# The architectures each method trains, its default first. IMSep is a loss on the two embeddings, so it fits the
# two-tower model too (post-training a CLIP someone already has); SharedCLIP *is* the shared architecture.
METHOD_ARCHITECTURES = {"clip": ("clip",), "sharedclip": ("shared",), "alignclip": ("shared", "clip")}
METHOD_ARCHITECTURE = {method: archs[0] for method, archs in METHOD_ARCHITECTURES.items()}


@dataclass
class ModelSection:
    preset: str = setting("tiny", "preset name (tiny, small, ViT-B-16, ...) or a path to a JSON model config")
    architecture: Literal["clip", "shared"] | None = setting(None, "None: derived from `method` (or from `init_from`)")
    # Post-training: weights only (fresh optimizer and schedule); the checkpoint fixes architecture and model config.
    init_from: str | None = setting(None, "start from these weights: any checkpoint alignclip.load_checkpoint reads")
    init_config: str | None = setting(
        None, "how to read init_from: preset, JSON, open_clip JSON or open_clip model name")


@dataclass
class DataSection:
    train: str = setting(
        "synthetic", '"synthetic", "csv:PATH", "tsv:PATH", "captions:DIR" or "wds:PATTERN" (pipe:, http://)')
    csv_image_key: str = setting("filepath", "open_clip's --csv-img-key")
    csv_caption_key: str = setting("title", "open_clip's --csv-caption-key")
    csv_separator: str | None = setting(None, "null: tsv: reads tabs, csv: detects the delimiter from the header "
                                              "line (, TAB ; |); set it to force one (open_clip's --csv-separator)")
    # wds: open_clip's --train-num-samples; null counts local shards' samples and is an error for remote ones.
    # csv/captions: only the first N rows/files (null: all).
    num_samples: int | None = setting(
        None, "synthetic: dataset size (null: 8192); wds: samples per epoch (null: counted)")
    synthetic_seed: int = setting(0, "which synthetic dataset (its content), independent of the training seed")
    workers: int = setting(2, "DataLoader worker processes per rank")
    max_skip_fraction: float = setting(0.05, "stop when more than this fraction of samples was unreadable")


@dataclass
class LossSection:
    # What the image-text term is. auto follows the model: one with a learned logit bias (a SigLIP) was trained with
    # the sigmoid loss, so post-training it keeps that loss; a fresh model with "sigmoid" gets SigLIP's bias and
    # temperature (b = -10, t = 10). IMSep (method alignclip) adds to either term.
    contrastive: Literal["auto", "infonce", "sigmoid"] = setting(
        "auto", "infonce: CLIP's softmax; sigmoid: SigLIP's pairwise loss; auto: sigmoid for a model with a logit "
                "bias, else infonce")
    alpha: float = setting(1.0, "weight of the contrastive term (InfoNCE or sigmoid), for every method")
    beta: float = setting(0.5, "weight of the intra-modality separation term (IMSep)")
    separate_text: bool = setting(True, "IMSep between captions")
    separate_image: bool = setting(True, "IMSep between images (weights still from the captions)")
    weighting: Literal["logits", "negatives"] = setting(
        "logits", "logits: the paper; negatives: weights in the softmax denominator")
    # A ramp lets contrastive learning start first: at constant beta the paper's IMSep collapses short runs on
    # near-synonymous captions (the synthetic data). 0 is the paper's constant beta.
    separation_warmup_steps: int = setting(
        100, "beta ramps linearly from 0 to `beta` over these steps (0: constant beta)")
    # HyCD and RaFA (CLIP-Refine), terms of losses/composite.py; the teacher is the frozen model.init_from.
    distill_weight: float = setting(0.0, "weight of HyCD distillation from the frozen model.init_from (0: off)")
    distill_alpha: float = setting(0.5, "HyCD target: alpha x one-hot + (1 - alpha) x the teacher's softmax")
    distill_temperature: float = setting(1.0, "HyCD's temperature T (logits / T, the KL times T^2)")
    rafa_weight: float = setting(0.0, "weight of RaFA: unnormalised features to a shared N(0, I) vector (0: off)")
    local_loss: bool = setting(False, "open_clip's --local-loss: logits of local rows against the global batch only")
    semantic_model: str | None = setting(None, "sentence-transformers name/path; None: the bundled all-MiniLM-L6-v2")
    semantic_cache_dir: str | None = setting(None, "caption-embedding disk cache; None: the encoder's default")


@dataclass
class OptimSection:
    lr: float = setting(5e-4, "peak learning rate (AdamW)")
    weight_decay: float = setting(0.2, "not applied to gains, biases, embeddings, class token, logit_scale")
    betas: tuple[float, float] = setting((0.9, 0.98), "AdamW betas (CLIP's)")
    eps: float = setting(1e-6, "AdamW epsilon")
    warmup_steps: int = setting(50, "linear warm-up, then cosine decay to 0 (per optimizer step)")
    schedule: Literal["cosine", "constant"] = setting("cosine", "after the warm-up")
    grad_clip: float | None = setting(None, "max global grad norm (open_clip's --grad-clip-norm)")
    batch_size: int = setting(64, "GLOBAL samples per optimizer step (all ranks, all accumulation micro-batches)")
    accum_freq: int = setting(1, "micro-batches per optimizer step (gradient accumulation)")
    epochs: int = setting(2, "passes over the data (when `steps` is null)")
    steps: int | None = setting(None, "when set, train exactly this many optimizer steps (epochs is then ignored)")


@dataclass
class RuntimeSection:
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto: cuda when available")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto", "auto: fp32 on CPU, bf16 AMP (else fp16) on GPU")
    compile: bool = setting(False, "torch.compile the model")
    threads: int | None = setting(None, "torch CPU threads per process; None: torch's default (one per core)")
    seed: int = setting(0, "weights, data order (with the epoch) and every RNG; 0 to 2**32 - 1")
    dist_timeout_s: float = setting(600.0, "DDP: seconds a rank waits for the others (joining, or any collective)")


@dataclass
class LoggingSection:
    out: str = setting("runs", "root folder of run directories")
    name: str | None = setting(None, "run directory name; None: a new timestamped folder (never reuses one)")
    log_every: int = setting(10, "optimizer steps between metric log lines")
    progress: bool = setting(True, "tqdm progress bar (rank 0)")
    tensorboard: bool = setting(True, "TensorBoard event files in <run>/tensorboard")
    checkpoint_every: int = setting(100, "optimizer steps between checkpoints (0: only at the end)")
    keep_last: int = setting(3, "checkpoints kept on disk (0: keep all)")
    collapse_threshold: float = setting(
        0.9, "collapse warning: an intra-modal cosine above this for 5 logs after warm-up, not falling")


@dataclass
class TrainConfig:
    method: Literal["clip", "sharedclip", "alignclip"] = setting("alignclip", "clip | sharedclip | alignclip")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    adapt: AdaptSection = field(default_factory=AdaptSection)
    resume: str | None = setting(None, '"latest", a run directory or a checkpoint directory')
    resume_allow_changes: bool = setting(
        False, "let a resume change what is trained (method, model, data): see RESUME_FIXED")

    @property
    def architecture(self) -> str:
        """The architecture of a fresh model; with model.init_from the checkpoint's wins (init_model.create_initial_model)."""
        return self.model.architecture or METHOD_ARCHITECTURE[self.method]

    @property
    def model_name(self) -> str:
        """What run folders and the progress bar call the model: the preset, or the checkpoint it starts from."""
        return Path(self.model.init_from or self.model.preset).stem

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    def validate(self) -> "TrainConfig":
        """Cross-field checks that a single field's type cannot express."""
        o, d, lg, ls, r = self.optim, self.data, self.logging, self.loss, self.runtime
        checks = [(all(math.isfinite(v) for v in _floats(value)), key, value, "must be finite")
                  for key, value in values(self)]  # first: nan fails every comparison with a vaguer reason
        checks += [
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
            (r.threads is None or r.threads >= 1, "runtime.threads", r.threads, "must be >= 1 or null"),
            (0 <= r.seed <= MAX_SEED, "runtime.seed", r.seed, "must be in [0, 2**32 - 1]"),
            (0 <= d.synthetic_seed <= MAX_SEED, "data.synthetic_seed", d.synthetic_seed, "must be in [0, 2**32 - 1]"),
            (r.dist_timeout_s > 0, "runtime.dist_timeout_s", r.dist_timeout_s, "must be > 0"),
        ]
        checks += eval_checks(self.eval) + adapt_checks(self.adapt)
        checks += [(ls.distill_weight >= 0, "loss.distill_weight", ls.distill_weight, "must be >= 0"),
                   (0 <= ls.distill_alpha <= 1, "loss.distill_alpha", ls.distill_alpha, "must be in [0, 1]"),
                   (ls.distill_temperature > 0, "loss.distill_temperature", ls.distill_temperature, "must be > 0"),
                   (ls.rafa_weight >= 0, "loss.rafa_weight", ls.rafa_weight, "must be >= 0"),
                   (ls.distill_weight == 0 or bool(self.model.init_from), "loss.distill_weight", ls.distill_weight,
                    "distillation needs model.init_from (--init-from): the teacher is the model it starts from")]
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


def _floats(value: Any) -> list[float]:  # ints and bools are always finite; tuples (optim.betas) hold floats
    return [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, float)]


def changed_settings(saved: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """'key: old -> new' for each RESUME_FIXED setting that differs between a checkpoint's saved config (a dict, as
    TrainConfig.to_dict wrote it) and `config`; the architecture is compared as resolved from the method, and a
    key that an older version did not write has its default."""
    new, defaults = config.to_dict(), TrainConfig().to_dict()
    old_arch = lookup(saved, "model.architecture") or METHOD_ARCHITECTURE.get(saved.get("method"), None)
    changes = []
    for key in RESUME_FIXED:
        before = lookup(saved, key)
        before, after = (old_arch, config.architecture) if key == "model.architecture" else \
            (lookup(defaults, key) if before is None else before, lookup(new, key))
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


def reference_table() -> str:
    """The README's config reference, from each field's default and help text; a test keeps the two identical."""
    return markdown_table(TrainConfig) + "\n\n" + recipes_table()
