"""The training loop (open_clip's conventions: AdamW + cosine, logit-scale clamp, AMP, DDP, feature-cached
accumulation) with exact resume, atomic checkpoints, signal handling and gap diagnostics in the progress bar.
Longer than our usual files: the loop, the state it checkpoints and the checks a resume must pass belong together."""
from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (STATE_KEYS, clean_debris, latest_checkpoint, load_trainer_state, load_weights,
                         nonfinite_weights, resolve_resume, rng_state, save_training_checkpoint, set_rng_state)
from .config import TrainConfig, changed_settings, from_dict, save_config
from .data import batches_per_epoch, build_train_dataset, epoch_loader
from .distributed import (DistInfo, DistributedTimeout, all_reduce, barrier, broadcast_object, cleanup_distributed,
                          env_info, first_line, init_distributed, is_timeout, resolve_device)
from .init_model import build_model
from .metrics import MetricsLogger, format_postfix, new_run_dir
from .optim import CosineSchedule, build_optimizer
from .semantic_features import CaptionFeatures
from .step import StepRunner

MIN_SAMPLES_FOR_SKIP_CHECK = 256  # judge the unreadable fraction only once it means something


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN/inf: training stops, the last good checkpoint is kept, none is written."""


@dataclass
class TrainResult:
    run_dir: str
    checkpoint: str | None  # the checkpoint written last (the final one unless stopped by a signal)
    steps: int  # optimizer steps done in total (including those before a resume)
    samples: int  # samples trained on in total
    elapsed_seconds: float  # wall time of this invocation
    samples_per_second: float  # over this invocation
    skipped_samples: int  # unreadable samples dropped (all ranks)
    final_loss: float | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended the run early
    semantic_encoded: int = 0  # captions that ran through the sentence model in this invocation (rank 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: fp32 on CPU (bf16 there is slow and lossy unless asked for), bf16 AMP on GPUs that have it, else fp16."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("runtime.precision=fp16 needs a CUDA device (use fp32 or bf16 on CPU)")
    return precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


class _SignalCatcher:
    """SIGTERM/SIGINT set a flag checked at the next step boundary; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalCatcher":
        if threading.current_thread() is threading.main_thread():  # signal handlers only install there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.received = name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, config: TrainConfig, info: DistInfo, device: torch.device,
                 dataset: torch.utils.data.Dataset | None = None) -> None:
        self.config, self.info, self.device = config, info, device
        self.precision = resolve_precision(config.runtime.precision, device)
        self.main = info.is_main
        self.step = self.epoch = self.batch_in_epoch = 0
        self.samples = self.skipped = self.attempted = 0
        self.last_checkpoint: Path | None = None
        self.collapse_warned = False
        self.last_record: dict[str, Any] = {}
        c = config

        resume_from = resolve_resume(c.resume, c.logging.out, c.logging.name) if c.resume else None
        state = self._resume_state(resume_from) if resume_from is not None else None  # fail before any work
        seed_everything(c.runtime.seed)
        self.model = build_model(c, resume_from).to(device)  # before the run folder: a bad init_from leaves none

        from alignclip.tokenizer import get_tokenizer
        self.loss_fn = self._build_loss()
        self.optimizer = build_optimizer(self.model, c.optim.lr, c.optim.weight_decay, c.optim.betas, c.optim.eps)
        self.dataset = dataset if dataset is not None else build_train_dataset(c, self.model.image_size, info)
        from alignclip.data.collate import Collate
        self.collate = Collate(get_tokenizer(self.model.context_length), image_size=self.model.image_size)
        self.epoch_batches = batches_per_epoch(self.dataset, c)
        if c.optim.steps is None and self.epoch_batches is None:
            raise ValueError(f"data {c.data.train!r} has no known length: set optim.steps, or data.num_samples "
                             "(the samples per epoch)")
        self.total_steps = c.optim.steps if c.optim.steps is not None else c.optim.epochs * self.epoch_batches
        self.schedule = CosineSchedule(self.optimizer, c.optim.lr, c.optim.warmup_steps, self.total_steps,
                                       c.optim.schedule)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

        if state is not None:
            load_weights(self.model, resume_from)  # type: ignore[arg-type]
            if nonfinite_weights(self.model):  # written by a version that did not check
                raise ValueError(f"cannot resume from {resume_from}: its weights are not finite (NaN/inf); resume "
                                 "from an earlier checkpoint of the run")
            self._load_state(state)
            self.last_checkpoint = resume_from

        model: nn.Module = self.model
        if info.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if c.runtime.compile:
            model = torch.compile(model)
        self.runner = StepRunner(model, self.loss_fn, self.optimizer, self.scaler, self.precision, device,
                                 c.optim.accum_freq, c.optim.grad_clip)
        self.semantic = CaptionFeatures.for_config(c, self.dataset, device, info, self.epoch, self.batch_in_epoch,
                                                   self.total_steps - self.step) if c.method == "alignclip" else None
        # The run folder comes last, once everything that can reject the settings has run: a failed start leaves none.
        self.new_run = resume_from is None
        self.run_dir = self._open_run_dir() if self.new_run else resume_from.parent.parent  # type: ignore[union-attr]
        try:
            if self.main:
                save_config(c, self.run_dir / "config.yaml")
            self.logger = MetricsLogger(self.run_dir, self.main, c.logging.tensorboard,
                                        resume_step=self.step if resume_from is not None else None)
        except BaseException:
            self.discard_failed_start()
            raise
        if state is not None:
            set_rng_state(state["rng"])  # last: nothing above may draw from the restored generators

    def _resume_state(self, checkpoint: Path) -> dict[str, Any]:
        """The checkpoint's trainer state, after checking that this run may continue it (same batch size, and
        the same method, model and data unless resume_allow_changes); rank 0 clears what killed saves left."""
        state = load_trainer_state(checkpoint, STATE_KEYS)
        c = self.config
        if state["batch_size"] != c.optim.batch_size:
            raise ValueError(f"cannot resume: the checkpoint was trained with optim.batch_size={state['batch_size']}"
                             f", this run asks for {c.optim.batch_size} (the data position would not match)")
        changes = changed_settings(state["config"], c)
        if changes and not c.resume_allow_changes:
            raise ValueError(f"cannot resume {checkpoint} with other settings of what is trained: "
                             f"{'; '.join(changes)} (start a new run, or allow it with --set "
                             "resume_allow_changes=true)")
        if self.main:
            clean_debris(checkpoint.parent)
        return state

    def _open_run_dir(self) -> Path:
        """A new run folder, made by rank 0 and shared with the others (every rank fails alike)."""
        c, made, error = self.config, None, None
        if self.main:
            try:
                made = str(new_run_dir(c.logging.out, c.logging.name, c.method, c.model_name))
            except ValueError as e:
                error = str(e)
            except OSError as e:  # PermissionError, a read-only or full disk
                error = f"cannot create a run folder under {c.logging.out}: {e.strerror or e} ({e.filename})"
        made, error = broadcast_object((made, error))  # type: ignore[misc]
        if error:
            raise ValueError(error)
        return Path(made)  # type: ignore[arg-type]

    def discard_failed_start(self) -> None:
        """Remove the run folder this invocation made if nothing worth keeping (a checkpoint, a logged step) is in
        it yet: a start that fails leaves no empty run folder behind."""
        from .metrics import METRICS_FILE

        if not (self.main and getattr(self, "new_run", False)):
            return
        logged = self.run_dir / METRICS_FILE
        if latest_checkpoint(self.run_dir / "checkpoints") is None and not (
                logged.is_file() and logged.stat().st_size > 0):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _build_loss(self) -> nn.Module:
        from alignclip.losses import AlignCLIPLoss, ClipLoss
        ls = self.config.loss
        if self.config.method == "alignclip":
            return AlignCLIPLoss(alpha=ls.alpha, beta=ls.beta, separate_text=ls.separate_text,
                                 separate_image=ls.separate_image, weighting=ls.weighting, local_loss=ls.local_loss)
        return ClipLoss(local_loss=ls.local_loss)

    # ------------------------------------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "samples": self.samples, "skipped": self.skipped, "attempted": self.attempted,
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "rng": rng_state(), "world_size": self.info.world_size, "batch_size": self.config.optim.batch_size,
                "config": self.config.to_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.samples, self.skipped, self.attempted = state["samples"], state["skipped"], state["attempted"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])

    def save(self) -> Path | None:
        """Checkpoint the current step (rank 0 writes, every rank waits), unless it is already on disk."""
        if self.last_checkpoint is not None and self.last_checkpoint.name == f"step_{self.step:06d}":
            return self.last_checkpoint
        bad = nonfinite_weights(unwrap(self.runner.model))  # every rank: DDP keeps the weights identical
        if bad:
            keep = latest_checkpoint(self.run_dir / "checkpoints")
            raise NonFiniteLossError(
                f"step {self.step}: {len(bad)} weight tensors are not finite (first: {bad[0]}), so no checkpoint is "
                f"written; the last good one is {keep if keep else '(none written yet)'} (lower optim.lr, set "
                "optim.grad_clip, or use fp32)")
        path = None
        if self.semantic is not None:
            self.semantic.flush()  # every rank: lazily encoded captions persist (the cache is multi-process safe)
        if self.main:
            path = save_training_checkpoint(self.run_dir, self.step, unwrap(self.runner.model), self._state(),
                                            self.config.logging.keep_last)
        barrier()
        self.last_checkpoint = path or self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        return self.last_checkpoint

    # ------------------------------------------------------------------------------------------------ loop

    def _beta(self) -> float:
        ls = self.config.loss
        if ls.separation_warmup_steps <= 0:
            return ls.beta
        return ls.beta * min(1.0, (self.step + 1) / ls.separation_warmup_steps)

    def run(self) -> TrainResult:
        c, start_step, start_samples = self.config, self.step, self.samples
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.main and c.logging.progress), desc=f"{c.method} {c.model_name}")
        if self.main:
            where = f"resumed at step {self.step} from {self.last_checkpoint}" if self.step else "started"
            tqdm.write(f"run {self.run_dir}: {where}; {self.total_steps} steps of {c.optim.batch_size} samples on "
                       f"{self.info.world_size} x {self.device.type} ({self.precision})")
            if c.optim.warmup_steps >= self.total_steps:
                tqdm.write(f"warning: optim.warmup_steps={c.optim.warmup_steps} >= the {self.total_steps} steps of "
                           "this run: the learning rate never reaches optim.lr")
        t0 = window_t0 = time.perf_counter()
        window_samples, stopped_by = 0, None
        try:
            with _SignalCatcher() as signals:
                while self.step < self.total_steps and stopped_by is None:
                    got_any, finished = False, True
                    for batch in epoch_loader(self.dataset, c, self.info, self.collate, self.epoch,
                                              self.batch_in_epoch, self.device.type == "cuda"):
                        got_any = True
                        stopped_by, batch = self._sync(signals.received, batch)
                        if stopped_by is not None:
                            finished = False
                            break
                        n = self._train_step(batch)  # 0: the batch had no usable samples, no step taken
                        window_samples += n
                        self.batch_in_epoch += 1
                        epoch_done = self.epoch_batches is not None and self.batch_in_epoch >= self.epoch_batches
                        if epoch_done:
                            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        if n:
                            bar.update(1)
                            if self.step % c.logging.log_every == 0 or self.step == self.total_steps:
                                self._log(bar, window_samples, time.perf_counter() - window_t0)
                                window_samples, window_t0 = 0, time.perf_counter()
                            if c.logging.checkpoint_every and self.step % c.logging.checkpoint_every == 0:
                                self._check_finite(sync=True)
                                self.save()
                        if epoch_done or self.step >= self.total_steps:
                            finished = epoch_done
                            break
                    if finished and self.batch_in_epoch:  # an iterable dataset ran dry: that was the epoch
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if not got_any and self.batch_in_epoch == 0 and stopped_by is None:
                        raise ValueError(f"the training data yielded no batch in epoch {self.epoch}")
                self._check_finite(sync=True)
                checkpoint = self.save()
        finally:
            bar.close()
            self.logger.close()
        elapsed = time.perf_counter() - t0
        trained = self.samples - start_samples
        result = TrainResult(
            run_dir=str(self.run_dir), checkpoint=str(checkpoint) if checkpoint else None, steps=self.step,
            samples=self.samples, elapsed_seconds=elapsed, samples_per_second=trained / max(elapsed, 1e-9),
            skipped_samples=self.skipped, final_loss=self.last_record.get("loss"),
            final_metrics={k: v for k, v in self.last_record.items() if isinstance(v, float)},
            stopped_by=stopped_by, semantic_encoded=self.semantic.num_encoded if self.semantic else 0)
        if self.main:
            self._print_summary(result, start_step)
        return result

    def _sync(self, signal_name: str | None, batch: dict) -> tuple[str | None, dict]:
        """Agree across ranks on stopping, and trim every rank to the smallest local batch (after dropped
        samples) so the all-gathers see equal shapes. One tiny collective per step, only when distributed."""
        n = batch["images"].shape[0]
        codes = {None: 0, "SIGINT": 1, "SIGTERM": 2}
        stop, neg_min = all_reduce([codes[signal_name], -n], self.device, op="max")
        n_min = int(-neg_min)
        if n_min < n:
            batch = {**batch, "images": batch["images"][:n_min], "tokens": batch["tokens"][:n_min],
                     "captions": batch["captions"][:n_min], "trimmed": n - n_min}
        return {0: None, 1: "SIGINT", 2: "SIGTERM"}[int(stop)], batch

    def _record_bad_samples(self, bad: list[tuple[str, str]]) -> None:
        """Name every skipped sample (source, reason) in <run>/bad_samples.tsv, one file per rank beyond 0, so a
        user can find and fix them; appended as they come, so a killed run keeps what it saw."""
        name = "bad_samples.tsv" if self.info.rank == 0 else f"bad_samples.rank{self.info.rank}.tsv"
        with open(self.run_dir / name, "a", encoding="utf-8") as f:
            for source, reason in bad:
                f.write(f"{self.step}\t{source}\t{' '.join(str(reason).split())}\n")

    def _train_step(self, batch: dict) -> int:
        """One optimizer step on this rank's batch; returns the global number of samples trained on."""
        n_local = batch["images"].shape[0]
        self.skipped += batch["num_skipped"]
        self.attempted += n_local + batch["num_skipped"] + batch.get("trimmed", 0)
        if batch.get("bad_samples"):
            self._record_bad_samples(batch["bad_samples"])
        if n_local < 2:  # every rank agrees on this (trimmed to the minimum)
            if self.main:
                tqdm.write(f"warning: step {self.step}: fewer than 2 readable samples in the batch, skipped")
            return 0
        lr = self.schedule.step(self.step)
        if hasattr(self.loss_fn, "beta"):
            self.loss_fn.beta = self._beta()
        semantic = self.semantic(batch["captions"]) if self.semantic is not None else None
        # On CPU a per-step finiteness check is free (no device sync) and stops before the bad update.
        self.runner.step(batch, semantic, self.step, check_finite=self.device.type == "cpu")
        self.runner.lr, self.runner.beta = lr, getattr(self.loss_fn, "beta", None)
        self._check_finite()
        self.step += 1
        n_global = n_local * self.info.world_size
        self.samples += n_global
        return n_global

    def _check_finite(self, sync: bool = False) -> None:
        if sync:
            self.runner.sync_nonfinite()
        where = self.runner.first_nonfinite_step()
        if where is not None:
            keep = latest_checkpoint(self.run_dir / "checkpoints")
            raise NonFiniteLossError(
                f"non-finite loss at {where}: stopping; the last good checkpoint is "
                f"{keep if keep else '(none written yet)'} (lower optim.lr, set optim.grad_clip, or use fp32)")

    def _log(self, bar: tqdm, window_samples: int, window_seconds: float) -> None:
        c = self.config
        means = self.runner.reduce_window()
        skipped, attempted = all_reduce([float(self.skipped), float(self.attempted)], self.device)  # all ranks
        self._check_finite()
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch + self.batch_in_epoch / max(
            1, self.epoch_batches or 1), "samples": self.samples, "lr": self.runner.lr}
        if self.runner.beta is not None:
            record["beta"] = self.runner.beta
        record.update(means)
        record["samples_per_second"] = window_samples / max(window_seconds, 1e-9)
        record["skipped_samples"] = int(skipped)
        self.last_record = record
        self.logger.log(record)
        bar.set_postfix(format_postfix(record), refresh=False)
        if attempted >= MIN_SAMPLES_FOR_SKIP_CHECK and skipped / attempted > c.data.max_skip_fraction:
            raise ValueError(f"{int(skipped)} of {int(attempted)} samples ({skipped / attempted:.1%}) were unreadable"
                             f", above data.max_skip_fraction={c.data.max_skip_fraction}: check the dataset "
                             "(paths, corrupt files, empty captions) or raise the limit")
        cosines = [means.get("image_cosine", 0.0), means.get("text_cosine", 0.0)]
        if (self.main and not self.collapse_warned and self.step > c.optim.warmup_steps
                and max(cosines) > c.logging.collapse_threshold):
            self.collapse_warned = True
            tqdm.write(f"warning: step {self.step}: mean intra-modal cosine image {cosines[0]:.3f} / text "
                       f"{cosines[1]:.3f} > {c.logging.collapse_threshold}: the embedding is collapsing "
                       "(try a lower lr or a longer warm-up)")

    def _print_summary(self, result: TrainResult, start_step: int) -> None:
        lines = [f"{'stopped by ' + result.stopped_by if result.stopped_by else 'done'}: "
                 f"{result.steps - start_step} steps in {result.elapsed_seconds:.1f}s "
                 f"({result.samples_per_second:.1f} samples/s), step {result.steps}/{self.total_steps}",
                 f"  final loss {result.final_loss:.4f}" if result.final_loss is not None else "  no loss logged",
                 f"  skipped samples: {result.skipped_samples}" + (
                     f" (named in {self.run_dir / 'bad_samples.tsv'})" if result.skipped_samples else ""),
                 f"  checkpoint: {result.checkpoint}"]
        if result.stopped_by:
            lines.append(f"  resume with: alignclip train --resume {result.run_dir}")
        tqdm.write("\n".join(lines))


def train(config: TrainConfig | Mapping[str, Any] | None = None,
          dataset: torch.utils.data.Dataset | None = None) -> TrainResult:
    """Train per `config` (a TrainConfig, a nested dict, or None for the defaults); `dataset` replaces data.train.

    Under torchrun (or SLURM) every process calls this; the process group is set up and torn down here.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, Mapping):
        config = from_dict(config)
    config.validate()
    info = env_info()
    device = resolve_device(config.runtime.device, info)
    if config.runtime.threads is not None:
        torch.set_num_threads(config.runtime.threads)
    init_distributed(info, device, config.runtime.dist_timeout_s)
    ok, trainer = False, None
    try:
        trainer = Trainer(config, info, device, dataset)
        result = trainer.run()
        cleanup_distributed()  # its barrier may time out too
        ok = True
        return result
    except RuntimeError as e:
        if not is_timeout(e):
            raise
        raise DistributedTimeout(f"rank {info.rank}: another rank did not answer within runtime.dist_timeout_s="
                                 f"{config.runtime.dist_timeout_s:g}s (stalled, crashed or unreachable); stopping: "
                                 f"{first_line(e)}") from None
    finally:
        if trainer is not None and not ok:
            trainer.discard_failed_start()
        if not ok and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # no barrier: the other ranks may be gone already
