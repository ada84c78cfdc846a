"""`Trainer`: config -> mesh, sharded state (fresh, from a checkpoint, or resumed), data, the step loop with
metrics and checkpoints.

    trainer = Trainer(load_train_config("configs/train/qwen3vl_tiny_synthetic.yaml", ["steps=20"]))
    summary = trainer.run()       # {'step', 'loss', 'history', ...}

The loop overlaps host work with the device: step k is dispatched, then the batch of step k+1 is read and
prepared on the host, then step k's metrics are fetched. step_time_s is the wall time between consecutive
metric fetches (host + device, so tokens/s and MFU are end to end).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from stvl_jax.errors import CheckpointError, ConfigError, TrainingError
from stvl_jax.sharding import ShardingError, auto_mesh, describe_shardings, make_mesh
from stvl_jax.train import distributed, lora_train
from stvl_jax.train.batches import (allgather, allgather_ragged, data_parallel_size, place_host_batch,
                                   prepare_host_batch)
from stvl_jax.train.checkpoint import TrainCheckpointer
from stvl_jax.train.config import TrainConfig
from stvl_jax.train.data import checkpoint_sections, make_source, training_preprocessing
from stvl_jax.train.flops import (KernelSizes, forward_flops, peak_flops_per_device, train_multipliers,
                                  train_step_flops)
from stvl_jax.train.init import initial_preprocessing, model_config, restore_initial_params
from stvl_jax.train.losses import get_loss
from stvl_jax.train.metrics import MetricsLogger, plot_loss_curve, read_metrics
from stvl_jax.train.optim import group_schedules, learning_rates, make_optimizer
from stvl_jax.train.skips import check_fraction, gather, no_first_step
from stvl_jax.train.state import ModelSpec, abstract_train_state, init_train_state, train_state_shardings
from stvl_jax.train.step import make_step_fns

DTYPES = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16}


def row_digests(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """(B, 8) uint8 fingerprint of each row's real tokens: the same rows give the same digests whatever the
    padding or the number of processes (the step's `data_hash` hashes all global rows in order)."""
    out = np.zeros((len(input_ids), 8), np.uint8)
    for i, (ids, m) in enumerate(zip(input_ids, attention_mask)):
        out[i] = np.frombuffer(hashlib.sha1(np.ascontiguousarray(ids[m != 0], np.int64).tobytes()).digest()[:8],
                               np.uint8)
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, *, mesh=None):
        distributed.initialize(cfg.distributed)
        self.cfg = cfg
        self.is_main = jax.process_index() == 0
        self.mesh = auto_mesh(mesh) if mesh is not None else make_mesh(cfg.mesh.shape())
        dp = data_parallel_size(self.mesh)
        if cfg.data.batch_size % dp and not cfg.data.pad_batch_to_mesh:  # fail before compiling anything
            raise ShardingError(f"data.batch_size={cfg.data.batch_size} is not divisible by the data-parallel mesh "
                                f"size {dp} (mesh {dict(self.mesh.shape)}: data x fsdp); change data.batch_size or "
                                f"mesh.*, or set data.pad_batch_to_mesh=true")
        self.model_config = model_config(cfg.model)
        # what the model is trained at; written into every checkpoint, so eval prepares inputs the same way
        self.preprocessing = training_preprocessing(cfg.data, self.model_config,
                                                    initial_preprocessing(cfg.model, self.model_config))
        groups = lora_train.trainable_groups(cfg)
        self.spec = ModelSpec.create(self.model_config, trainable_groups=groups, dtype=DTYPES[cfg.model.dtype],
                                     param_dtype=DTYPES[cfg.model.param_dtype], remat=cfg.model.remat,
                                     scan_layers=cfg.model.scan_layers,
                                     preprocessing=self.preprocessing,
                                     lora=None if cfg.lora is None else cfg.lora.spec())
        trainable_paths = self.spec.split(self.spec.abstract)[0]
        if not trainable_paths:
            raise ConfigError(f"the trainable groups {groups} hold no parameters of this model")
        extra = lora_train.extra_groups(cfg)
        self.tx = make_optimizer(cfg.optim, trainable_paths, cfg.steps, cfg.warmup_steps, extra)
        self.schedules = {g: s for g, s in group_schedules(cfg.optim, cfg.steps, cfg.warmup_steps, extra).items()
                          if g in groups}
        self.loss_fn = get_loss(cfg.loss)
        self.abstract = abstract_train_state(self.spec, self.tx)
        self.shardings = train_state_shardings(self.abstract, self.spec, self.mesh)
        self.fns = make_step_fns(self.spec, self.tx, self.loss_fn, cfg.loss, self.shardings)
        self.checkpointer = TrainCheckpointer(cfg.checkpoint_dir, cfg.checkpoint)
        self.source = make_source(cfg.data, self.model_config, seed=cfg.seed, process_index=jax.process_index(),
                                  process_count=jax.process_count(), preprocessing=self.preprocessing)
        self.kernels = KernelSizes.from_config(self.model_config)
        self.multipliers = lora_train.multipliers(train_multipliers(groups), cfg)
        self.peak = peak_flops_per_device(jax.devices()[0].device_kind, cfg.logging.peak_flops_per_device)
        self.notes: list[str] = [lora_train.summary(self.spec)] if self.spec.lora else []  # shown at start
        sharding = describe_shardings(self.spec.abstract, self.mesh).summary()
        if sharding:
            self.notes.append(sharding)
        self.non_finite_skipped = 0  # steps whose update was dropped (optim.non_finite=skip), over the whole run
        self.state = self._initial_state()

    # ------------------------------------------------------------------------------------------ state
    def _initial_state(self):
        cfg, ck = self.cfg, self.checkpointer
        have = ck.all_steps()
        mode = cfg.checkpoint.resume
        if mode == "required" and not have:
            raise CheckpointError(f"--resume: no checkpoint in {cfg.checkpoint_dir!r}")
        if mode == "never" and have:
            raise CheckpointError(f"{cfg.checkpoint_dir!r} already holds checkpoints (steps {have}); resume with "
                                  f"--resume (checkpoint.resume=auto|required) or choose another out_dir")
        if have and mode != "never":
            # a damaged newest checkpoint is skipped (one line each) for the newest one that restores
            state, run = ck.restore_newest_valid(self.abstract, self.shardings, say=self._say)
            saved_procs = run["meta"].get("process_count")
            self.non_finite_skipped = int(run["meta"].get("non_finite_skipped", 0))
            if run["data_state"] is not None:
                self.source.set_state(run["data_state"])
            else:
                self.notes.append(f"warning: the checkpoint's data-iterator state was written by {saved_procs} "
                                  f"process(es) and this run has {jax.process_count()}: the data starts over")
            self.resumed_from = int(jax.device_get(state.step))
            return state
        self.resumed_from = None
        params = None
        if cfg.model.checkpoint is not None:
            lora_train.refuse_adapter_checkpoint(cfg.model.checkpoint)
            if self.spec.lora is None:
                params = restore_initial_params(self.spec, cfg.model.checkpoint, self.mesh)
            else:  # the checkpoint holds the base weights; the adapters start fresh
                params = {**restore_initial_params(lora_train.base_spec(self.spec), cfg.model.checkpoint,
                                                   self.mesh), **lora_train.init_adapters(self.spec, self.mesh,
                                                                                          cfg.seed)}
        return init_train_state(self.spec, self.tx, self.mesh, cfg.seed, params=params)

    def _say(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    def model(self):
        """The current weights as an nnx model on the trainer's mesh (`model(**batch)`, generation, eval)."""
        model = self.spec.merge(self.state.all_params())
        model.mesh = self.mesh
        return model

    # ------------------------------------------------------------------------------------------ data
    def _read_step_batches(self):
        """The host batches of one optimizer step -> (list of (inputs, targets) on device, stats), or None
        when the data is exhausted."""
        placed, rows, grids, digests = [], [], [], []
        for _ in range(self.cfg.optim.grad_accum_steps):
            try:
                batch = next(self.source)
            except StopIteration:
                return None
            host = prepare_host_batch(self.model_config, batch, self.mesh,
                                      pad_batch_to_mesh=self.cfg.data.pad_batch_to_mesh,
                                      pad_patches_to_multiple=self.cfg.data.pad_patches_to_multiple,
                                      vision_buckets=self.cfg.data.vision_buckets)
            digests.append(row_digests(host.inputs.input_ids, host.inputs.attention_mask))
            rows.append(host.row_lengths)
            grids.append(host.grids)
            placed.append(place_host_batch(host, self.mesh))
        digests = np.concatenate(digests)
        if jax.process_count() > 1:
            digests = np.concatenate(allgather_ragged(digests))
        return placed, self._flop_stats(rows, grids), hashlib.sha1(digests.tobytes()).hexdigest()[:16]

    def _flop_stats(self, rows, grids) -> dict:
        fwd = {k: 0.0 for k in self.multipliers}
        tokens = 0.0
        for r, g in zip(rows, grids):
            for k, v in forward_flops(self.model_config, self.kernels, r, g).items():
                fwd[k] += v
            tokens += float(np.sum(r))
        # text rows are this process's; the vision grids are already global
        local = np.asarray([tokens, fwd["llm"], fwd["head"]], np.float64)
        if jax.process_count() > 1:
            local = allgather(local).sum(axis=0)
        fwd["llm"], fwd["head"] = float(local[1]), float(local[2])
        return {"tokens": float(local[0]), "flops": train_step_flops(fwd, self.multipliers)}

    # ------------------------------------------------------------------------------------------ loop
    def _dispatch(self, state, placed):
        with jax.set_mesh(self.mesh):
            if len(placed) == 1:
                return self.fns.train_step(state, *placed[0])
            acc = self.fns.zero_acc(state)
            for inputs, targets in placed:
                acc = self.fns.accumulate(acc, state, inputs, targets)
            return self.fns.apply(state, acc)

    def _save(self, state, data_state, force=False) -> None:
        meta = {"config": self.cfg.to_dict(), "time": time.time(), "non_finite_skipped": self.non_finite_skipped}
        self.checkpointer.save(state, config=self.model_config, meta=meta, data_state=data_state, force=force,
                               preprocessing=self.preprocessing,
                               sections={**checkpoint_sections(self.source), **lora_train.sections(self.spec)})

    def run(self, until: int | None = None) -> dict:
        """Train to `cfg.steps` (or stop after step `until`, saving a checkpoint there) -> summary."""
        cfg = self.cfg
        last = cfg.steps if until is None else min(until, cfg.steps)
        out = Path(cfg.out_dir)
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        step = int(jax.device_get(self.state.step))
        logger = MetricsLogger(out, total_steps=cfg.steps, start_step=step, progress=cfg.logging.progress,
                               tensorboard=cfg.logging.tensorboard, enabled=self.is_main)
        if self.resumed_from is not None:
            logger.message(f"resumed from step {self.resumed_from} ({cfg.checkpoint_dir})")
        for note in self.notes:
            logger.message(note)
        n_dev = self.mesh.devices.size
        state = self.state
        data_state = self.source.get_state()
        max_skip = cfg.data.max_skip_fraction
        try:
            pending = self._read_step_batches() if step < last else None
            t_last = time.perf_counter()
            stopped_early = False
            while step < last:
                if pending is None:
                    stopped_early = True
                    skips = gather(self.source)
                    if self.resumed_from is None and step == 0 and skips is not None:
                        raise no_first_step(skips, cfg.data.batch_size)
                    logger.message(f"data exhausted after step {step}")
                    break
                placed, stats, data_hash = pending
                state, metrics = self._dispatch(state, placed)
                step += 1
                data_state = self.source.get_state()  # after this step's batches, before the next step's are read
                skips = gather(self.source)  # the same point: what this step's batches skipped, resumes alike
                pending = self._read_step_batches() if step < last else None
                metrics = jax.device_get(metrics)
                self._check_finite(step, metrics, logger)
                now = time.perf_counter()
                dt, t_last = now - t_last, now
                if step % cfg.logging.every == 0 or step == last:
                    logger.log({**self._record(step, metrics, stats, data_hash, dt, n_dev),
                                **(skips.metrics() if skips is not None else {})})
                logger.advance()
                self._check_skips(skips, max_skip)
                if step % cfg.checkpoint.every == 0:
                    self._save(state, data_state)
                    t_last = time.perf_counter()  # step times exclude the (blocking part of the) save
            if step > 0 and (cfg.checkpoint.save_final or stopped_early or until is not None):
                self._save(state, data_state)
            self.checkpointer.wait()
            skips = gather(self.source)  # also what was read after the last step (trailing skips)
            if skips is not None:
                logger.message(skips.summary())
                if until is None:  # a run stopped on purpose is judged when it goes on
                    self._check_skips(skips, max_skip, final=True)
        finally:
            logger.close()
        self.state = state
        history = read_metrics(out) if self.is_main else []
        if self.is_main and cfg.logging.plot:
            plot_loss_curve(history, out / "loss_curve.png", title=cfg.name)
        self.checkpointer.close()
        return {"step": step, "loss": history[-1]["loss"] if history else None, "history": history,
                "data": self.source.stats, "skips": skips, "checkpoint_dir": cfg.checkpoint_dir,
                "non_finite_skipped": self.non_finite_skipped}

    def _check_skips(self, skips, max_fraction: float, final: bool = False) -> None:
        """More unusable records than `data.max_skip_fraction`: stop (one line, the counts per reason)."""
        try:
            check_fraction(skips, max_fraction, final=final)
        except TrainingError:
            self.checkpointer.close()  # an in-flight save finishes
            raise

    def _check_finite(self, step: int, metrics: dict, logger) -> None:
        """A NaN/inf loss or gradient norm (the step left the state unchanged): stop, or count the skip."""
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if np.isfinite(loss) and np.isfinite(grad_norm):
            return
        if self.cfg.optim.non_finite == "stop":
            self.checkpointer.close()  # an in-flight save holds an earlier, finite state: let it finish
            saved = self.checkpointer.latest_step()
            raise TrainingError(f"step {step}: loss {loss} grad_norm {grad_norm} is not finite; training stopped "
                                f"({'last checkpoint: step ' + str(saved) if saved is not None else 'nothing saved'}"
                                f"); optim.non_finite=skip skips such steps instead")
        self.non_finite_skipped += 1
        logger.message(f"step {step}: loss {loss} grad_norm {grad_norm} is not finite: update skipped "
                       f"({self.non_finite_skipped} skipped so far)")

    def _record(self, step, metrics, stats, data_hash, dt, n_dev) -> dict:
        lrs = learning_rates(self.schedules, step - 1)  # the lr the update of this step used
        record = {"step": step, "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
                  "lr": next(iter(lrs.values())), **{f"lr/{g}": v for g, v in lrs.items()},
                  "tokens": stats["tokens"], "loss_tokens": float(metrics["tokens"]),
                  "tokens_per_s": stats["tokens"] / dt, "step_time_s": dt, "flops": stats["flops"],
                  "mfu": (stats["flops"] / dt / (n_dev * self.peak)) if self.peak else None,
                  "data_hash": data_hash, "non_finite_skipped": self.non_finite_skipped}
        for key, value in metrics.items():
            if key not in ("loss", "grad_norm", "tokens"):
                record[key] = float(value)
        return record
