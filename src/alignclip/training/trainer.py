"""The training loop (open_clip's conventions: AdamW + cosine, logit-scale clamp, AMP, DDP, feature-cached
accumulation) with exact resume, atomic checkpoints, signal handling and gap diagnostics in the progress bar.
The parts are built by plain functions of the config (objective.py, init_model.py, data.py, optim.py, precision.py,
run_folder.py); this class keeps the loop, the state it checkpoints, and its checks. `train()`, the entry point
that sets up and tears down the process group around a Trainer, is in launch.py."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from alignclip.data.collate import Batch
from alignclip.models.adapt import adapter_state, parameter_line
from alignclip.models.base import unwrap
from alignclip.rundir import RunDir

from .checkpoint import checked_resume_state, nonfinite_weights, resolve_resume, save_training_checkpoint
from .config import TrainConfig
from .data import TrainLoader, batches_per_epoch, check_skip_fraction, create_collate, create_train_dataset
from .distributed import DistInfo, all_reduce, barrier
from .health import CollapseWatch, fitted_warmup, run_length_notes
from .heldout import HeldoutGuard
from .init_model import create_run_model, wrap_model
from .metrics import MetricsLogger, MetricsWindow, append_bad_samples, format_postfix
from .objective import beta_at, create_loss
from .optim import CosineSchedule, create_optimizer, total_steps_of
from .precision import create_scaler, resolve_precision
from .resolve import save_config
from .result import NonFiniteLossError, TrainResult, summary_lines
from .rng import rng_state, seed_everything, set_rng_state
from .run_folder import discard_if_unused, open_run_dir
from .semantic_features import CaptionFeatures
from .signals import SignalCatcher
from .step import StepRunner


class Trainer:
    def __init__(self, config: TrainConfig, info: DistInfo, device: torch.device,
                 dataset: torch.utils.data.Dataset | None = None) -> None:
        self.config, self.info, self.device, c = config, info, device, config
        self.precision = resolve_precision(c.runtime.precision, device)
        self.main = info.is_main
        self.step = self.epoch = self.batch_in_epoch = 0
        self.samples = self.skipped = self.attempted = 0
        self.last_checkpoint: Path | None = None
        self.last_record, self.warnings = {}, []  # the last metrics.jsonl record; the warnings printed

        resume_from = resolve_resume(c.resume, c.logging.out, c.logging.name) if c.resume else None
        state = checked_resume_state(c, resume_from, self.main) if resume_from is not None else None  # fail early
        seed_everything(c.runtime.seed)
        # Before the run folder: a bad init_from leaves none. The teacher: HyCD's frozen init_from, or None.
        self.model, self.teacher = create_run_model(c, device, resume_from, state)
        self.loss_fn = create_loss(c, self.model.embed_dim, self.teacher, self.model)
        self.optimizer = create_optimizer(self.model, c.optim.lr, c.optim.weight_decay, c.optim.betas, c.optim.eps)
        self.dataset = dataset if dataset is not None else create_train_dataset(c, self.model.image_size, info)
        self.collate = create_collate(self.model)
        self.epoch_batches = batches_per_epoch(self.dataset, c)
        self.total_steps = total_steps_of(c, self.epoch_batches)
        self.warmup_steps = fitted_warmup(c.optim.warmup_steps, self.total_steps)
        self.schedule = CosineSchedule(self.optimizer, c.optim.lr, self.warmup_steps, self.total_steps,
                                       c.optim.schedule)
        self.scaler = create_scaler(self.precision)
        if state is not None:
            self._load_state(state)
            self.last_checkpoint = resume_from
        self.runner = StepRunner(wrap_model(self.model, c, info, device), self.loss_fn, self.optimizer, self.scaler,
                                 self.precision, device, c.optim.accum_freq, c.optim.grad_clip)
        self.window = MetricsWindow(device)
        self.collapse = CollapseWatch.for_run(c, self.warmup_steps)
        self.heldout = HeldoutGuard.for_config(c, self.main)  # before the state: it holds the best so far
        self.semantic = CaptionFeatures.for_config(c, self.dataset, device, info, self.epoch, self.batch_in_epoch,
                                                   self.total_steps - self.step) if c.method == "alignclip" else None
        # The run folder comes last, once everything that can reject the settings has run: a failed start leaves none.
        self.new_run = resume_from is None
        self.run_dir = (open_run_dir(c, self.main) if self.new_run
                        else RunDir.of_checkpoint(resume_from).root)  # type: ignore[union-attr]
        try:
            if self.main:
                save_config(c, self.run_dir / "config.yaml")
            self.logger = MetricsLogger(self.run_dir, self.main, c.logging.tensorboard,
                                        resume_step=self.step if resume_from is not None else None)
        except BaseException:
            self.discard_failed_start()
            raise
        if state is not None:
            if self.heldout is not None and state.get("heldout"):
                self.heldout.load_state_dict(state["heldout"])
            set_rng_state(state["rng"])  # last: nothing above may draw from the restored generators

    def discard_failed_start(self) -> None:
        """A start that fails leaves no run folder behind (unless something worth keeping is in it already)."""
        if self.main and getattr(self, "new_run", False):
            discard_if_unused(self.run_dir)

    # ------------------------------------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "samples": self.samples, "skipped": self.skipped, "attempted": self.attempted,
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "rng": rng_state(), "world_size": self.info.world_size, "batch_size": self.config.optim.batch_size,
                "config": self.config.to_dict(), "heldout": self.heldout.state_dict() if self.heldout else {},
                "adapter": adapter_state(self.model), "teacher_sha256": getattr(self.teacher, "sha256", None)}

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
            raise NonFiniteLossError(f"step {self.step}: {len(bad)} weight tensors are not finite (first: {bad[0]}),"
                                     f" so no checkpoint is written; the last good one is {self._last_good()}"
                                     " (lower optim.lr, set optim.grad_clip, or use fp32)")
        path = None
        if self.semantic is not None:
            self.semantic.flush()  # every rank: lazily encoded captions persist (the cache is multi-process safe)
        if self.main:
            path = save_training_checkpoint(self.run_dir, self.step, unwrap(self.runner.model), self._state(),
                                            self.config.logging.keep_last)
        barrier()
        self.last_checkpoint = path or self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        return self.last_checkpoint

    def _last_good(self) -> str:
        return str(RunDir(self.run_dir).latest or "(none written yet)")

    def _stop_nonfinite(self, first: int, last: int) -> None:
        where = f"step {first}" if first == last else f"a step in {first}..{last}"
        raise NonFiniteLossError(f"non-finite loss at {where}: stopping; the last good checkpoint is "
                                 f"{self._last_good()} (lower optim.lr, set optim.grad_clip, or use fp32)", first)

    # ------------------------------------------------------------------------------------------------ loop

    def _warn(self, line: str) -> None:
        self.warnings.append(line)
        tqdm.write(line)

    def run(self) -> TrainResult:
        c, start_step, start_samples = self.config, self.step, self.samples
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.main and c.logging.progress), desc=f"{c.method} {c.model_name}")
        if self.main:
            where = f"resumed at step {self.step} from {self.last_checkpoint}" if self.step else "started"
            tqdm.write(f"run {self.run_dir}: {where}; {self.total_steps} steps of {c.optim.batch_size} samples on "
                       f"{self.info.world_size} x {self.device.type} ({self.precision}); {parameter_line(self.model)}")
            for line in run_length_notes(c.optim.warmup_steps, self.total_steps, c.optim.batch_size,
                                         from_scratch=c.model.init_from is None):
                self._warn(line)
        t0 = window_t0 = time.perf_counter()
        window_samples, stopped_by = 0, None
        loader = TrainLoader(self.dataset, c, self.info, self.collate, self.device.type == "cuda")
        try:
            if self.heldout is not None and self.step == 0:
                self._evaluate_heldout()  # the start point the end-of-run summary compares with
            with SignalCatcher() as signals:
                while self.step < self.total_steps and stopped_by is None:
                    got_any, finished = False, True
                    for batch in loader.epoch(self.epoch, self.batch_in_epoch):
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
                            if self.heldout is not None and self.heldout.due(self.step, self.total_steps):
                                self._evaluate_heldout()
                            if c.logging.checkpoint_every and self.step % c.logging.checkpoint_every == 0:
                                self._check_window_finite()
                                self.save()
                        if epoch_done or self.step >= self.total_steps:
                            finished = epoch_done
                            break
                    if finished and self.batch_in_epoch:  # an iterable dataset ran dry: that was the epoch
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if not got_any and self.batch_in_epoch == 0 and stopped_by is None:
                        raise ValueError(f"the training data yielded no batch in epoch {self.epoch}")
                self._check_window_finite()
                checkpoint = self.save()
        finally:
            loader.close()
            bar.close()
            self.logger.close()
        elapsed = time.perf_counter() - t0
        result = TrainResult(
            run_dir=str(self.run_dir), checkpoint=str(checkpoint) if checkpoint else None, steps=self.step,
            samples=self.samples, elapsed_seconds=elapsed,
            samples_per_second=(self.samples - start_samples) / max(elapsed, 1e-9), skipped_samples=self.skipped,
            final_loss=self.last_record.get("loss"),
            final_metrics={k: v for k, v in self.last_record.items() if isinstance(v, float)},
            stopped_by=stopped_by, semantic_encoded=self.semantic.num_encoded if self.semantic else 0,
            total_steps=self.total_steps, warmup_steps=self.warmup_steps, warnings=list(self.warnings))
        if self.main:
            tqdm.write("\n".join(summary_lines(result, start_step)))
            if self.heldout is not None:
                result.warnings += self.heldout.report(self.last_record, tqdm.write)
        return result

    def _sync(self, signal_name: str | None, batch: Batch) -> tuple[str | None, Batch]:
        """Agree across ranks on stopping, and trim every rank to the smallest local batch (after dropped
        samples) so the all-gathers see equal shapes. One tiny collective per step, only when distributed."""
        n = len(batch)
        codes = {None: 0, "SIGINT": 1, "SIGTERM": 2}
        stop, neg_min = all_reduce([codes[signal_name], -n], self.device, op="max")
        if int(-neg_min) < n:
            batch = batch.trim(int(-neg_min))
        return {0: None, 1: "SIGINT", 2: "SIGTERM"}[int(stop)], batch

    def _train_step(self, batch: Batch) -> int:
        """One optimizer step on this rank's batch; returns the global number of samples trained on."""
        n_local = len(batch)
        self.skipped += batch.num_skipped
        self.attempted += n_local + batch.num_skipped + batch.trimmed
        if batch.bad_samples:
            append_bad_samples(self.run_dir, self.info.rank, self.step, batch.bad_samples)
        if n_local < 2:  # every rank agrees on this (trimmed to the minimum)
            if self.main:
                tqdm.write(f"warning: step {self.step}: fewer than 2 readable samples in the batch, skipped")
            # no step means no log line: judge the unreadable share here, or data that is all unreadable loops
            check_skip_fraction(*(int(v) for v in all_reduce([float(self.skipped), float(self.attempted)],
                                                             self.device)), self.config.data.max_skip_fraction)
            return 0
        self.schedule.step(self.step)
        semantic = self.semantic(batch.captions) if self.semantic is not None else None
        # On CPU a per-step finiteness check is free (no device sync) and stops before the bad update.
        result = self.runner.step(batch, semantic, beta_at(self.config, self.step),
                                  check_finite=self.device.type == "cpu")
        if not result.finite:
            self._stop_nonfinite(self.step, self.step)
        self.window.add(self.step, result.values, result.nonfinite)
        if self.heldout is not None and self.step == 0:
            self.heldout.note_first_step(result.values)
        self.step += 1
        self.samples += n_local * self.info.world_size
        return n_local * self.info.world_size

    def _check_window_finite(self) -> None:
        """GPU: the steps since the last log line were not synced; check them before a checkpoint (all ranks)."""
        if self.window.nonfinite_seen():
            self._stop_nonfinite(self.window.first_step, self.window.last_step)

    def _log(self, bar: tqdm, window_samples: int, window_seconds: float) -> None:
        c, last = self.config, self.step - 1  # the window's last step: lr and beta are its values, not means
        means, nonfinite = self.window.reduce()
        skipped, attempted = all_reduce([float(self.skipped), float(self.attempted)], self.device)  # all ranks
        if nonfinite:
            self._stop_nonfinite(self.window.first_step, self.window.last_step)
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch + self.batch_in_epoch / max(
            1, self.epoch_batches or 1), "samples": self.samples, "lr": self.schedule.lr_at(last)}
        if (beta := beta_at(c, last)) is not None:
            record["beta"] = beta
        record.update(means)
        record["samples_per_second"] = window_samples / max(window_seconds, 1e-9)
        record["skipped_samples"] = int(skipped)
        self.last_record = record
        self.logger.log(record)
        bar.set_postfix(format_postfix(record), refresh=False)
        check_skip_fraction(int(skipped), int(attempted), c.data.max_skip_fraction, self.run_dir / "bad_samples.tsv")
        warning = self.collapse.update(record)
        if warning and self.main:
            self._warn(warning)

    def _evaluate_heldout(self) -> None:
        """training/heldout.py: rank 0 evaluates, logs heldout/... and keeps checkpoints/best; the others wait."""
        self.heldout.evaluate(unwrap(self.runner.model), self.step, self.device, self.run_dir, self.logger.log)
        barrier()
