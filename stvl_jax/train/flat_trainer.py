"""`FlatTrainer`: the loop the SAM2 and VIRST trainers share: a model split into flat {path: array} trainable /
frozen dicts by parameter group, AdamW per group, data parallel over every mesh axis (parameters replicated),
Orbax checkpoints with exact resume, metrics.jsonl + loss curve, the final weights written by the subclass.

A subclass provides:
    group_of(path) -> group name          batch(i) -> host batch of optimizer step i (0-based)
    trainable_groups(), extra_groups()    (optional: which groups train, beyond-`optim.groups` settings)
    loss_fn(model, batch) -> (loss, {metric: scalar})   (traced; `model` is the nnx model of the parameters)
    save_model(path) -> Path              data_state() / set_data_state(state) (optional: a data iterator's
                                          state, saved as JSON beside the arrays; None = batches are a pure
                                          function of (seed, i))
    extra_metrics() -> dict (optional: e.g. the pipeline's skip counts, logged with each record)

Checkpoints `{checkpoint_dir}/{step}` hold params, frozen params and optimizer state (+ `data` JSON when the
subclass has a data state), and `model/`: that step's weights written by `save_model`. Frozen parameters get no
gradient and no optimizer state.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import yaml
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from stvl_jax.errors import CheckpointError, InputError
from stvl_jax.train.checkpoint import from_string_tree, to_string_tree
from stvl_jax.train.metrics import MetricsLogger, plot_loss_curve, read_metrics
from stvl_jax.train.optim import make_schedule
from stvl_jax.train.param_groups import decays

_STEP_CACHE: dict = {}


def group_by_rules(path: str, rules, what: str) -> str:
    """The first (name, compiled regex) of `rules` whose regex matches `path`; ValueError naming `what`."""
    for name, rule in rules:
        if rule.match(path):
            return name
    raise ValueError(f"{what} parameter {path!r} belongs to no group {tuple(n for n, _ in rules)}")


def make_group_optimizer(optim, total_steps: int, trainable_paths, group_of,
                         extra=None) -> optax.GradientTransformation:
    """AdamW per group (peak lr `optim.groups.<g>.lr` or `optim.lr`; schedules from `optim.make_schedule`; no
    decay on biases / norms) after global-norm clipping. optim: lr, schedule, warmup_steps, min_lr_ratio,
    weight_decay, max_grad_norm, groups. extra: {group: settings with lr, weight_decay (None: optim's)} of groups
    beyond `optim.groups` (e.g. LoRA adapters)."""
    labels = {p: group_of(p) for p in trainable_paths}
    mask = {p: decays(p) for p in trainable_paths}
    per_group = {}
    for g in set(labels.values()):
        e = (extra or {}).get(g)
        peak = (getattr(optim.groups, g).lr or optim.lr) if e is None else (optim.lr if e.lr is None else e.lr)
        wd = optim.weight_decay if e is None or e.weight_decay is None else e.weight_decay
        parts = [optax.scale_by_adam()]
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=mask))
        parts.append(optax.scale_by_learning_rate(make_schedule(peak, total_steps, optim.warmup_steps,
                                                                optim.schedule, optim.min_lr_ratio)))
        per_group[g] = optax.chain(*parts)
    chain = [optax.clip_by_global_norm(optim.max_grad_norm)] if optim.max_grad_norm else []
    return optax.chain(*chain, optax.multi_transform(per_group, labels))


class FlatTrainer:
    """cfg: a train config with name, out_dir, steps, seed, optim, checkpoint (+ checkpoint_dir), log_every,
    time_limit_min, data.batch_size."""

    def setup(self, cfg, model, mesh) -> None:
        """Split `model`, build the optimizer and the checkpoint manager, restore or initialise the state."""
        self.cfg = cfg
        self.mesh = mesh
        n_dev = self.mesh.devices.size
        if cfg.data.batch_size % n_dev:
            raise InputError(f"data.batch_size={cfg.data.batch_size} is not divisible by the {n_dev} devices of the "
                             f"mesh {dict(self.mesh.shape)}")
        self.graphdef, state = nnx.split(model)
        self.abstract = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(state)}
        groups = set(self.trainable_groups())
        flat = {k: v.get_value() for k, v in self.abstract.items()}
        self.trainable_paths = sorted(k for k in flat if self.group_of(k) in groups)
        self.tx = make_group_optimizer(cfg.optim, cfg.steps, self.trainable_paths, self.group_of,
                                       self.extra_groups())
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))
        self.manager = ocp.CheckpointManager(os.path.abspath(cfg.checkpoint_dir), options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.checkpoint.keep, enable_async_checkpointing=cfg.checkpoint.async_save))
        self._step_fn = self._make_step()
        self.step, self.params, self.frozen, self.opt_state = self._initial_state(flat)

    # ------------------------------------------------------------------------------------------ hooks
    def group_of(self, path: str) -> str:
        raise NotImplementedError

    def trainable_groups(self) -> tuple[str, ...]:
        """The groups that get gradients and optimizer state (default: `optim.groups`' trainable ones)."""
        return self.cfg.optim.groups.trainable()

    def extra_groups(self) -> dict:
        """Optimizer settings (lr, weight_decay) of trainable groups beyond `optim.groups` (e.g. LoRA adapters)."""
        return {}

    def loss_fn(self, model, batch):
        raise NotImplementedError

    def step_key(self) -> tuple:
        """What besides the model, groups and optimizer decides the compiled step (loss config, static flags)."""
        return ()

    def batch(self, i: int) -> dict:
        raise NotImplementedError

    def save_model(self, path: str | Path) -> Path:
        raise NotImplementedError

    def data_state(self) -> dict | None:
        return None

    def set_data_state(self, state: dict) -> None:
        pass

    def extra_metrics(self) -> dict:
        return {}

    def end_messages(self) -> list[str]:
        return []

    # ------------------------------------------------------------------------------------------ state
    def _place(self, tree):
        return jax.device_put(tree, self.replicated)

    def _initial_state(self, flat):
        cfg, have = self.cfg, self.manager.all_steps()
        mode = cfg.checkpoint.resume
        if mode == "required" and not have:
            raise CheckpointError(f"--resume: no checkpoint in {cfg.checkpoint_dir!r}")
        if mode == "never" and have:
            raise CheckpointError(f"{cfg.checkpoint_dir!r} already holds checkpoints (steps {have}); resume with "
                                  f"--resume (checkpoint.resume=auto|required) or choose another out_dir")
        params = {k: v for k, v in flat.items() if k in set(self.trainable_paths)}
        frozen = {k: v for k, v in flat.items() if k not in params}
        opt_state = self.tx.init(params)
        if have and mode != "never":
            step = max(have)
            like = {"params": params, "frozen": frozen, "opt_state": to_string_tree(opt_state)}
            target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype,
                                                                 sharding=self.replicated), like)
            if self.data_state() is None:
                got = self.manager.restore(step, args=ocp.args.StandardRestore(target))
            else:
                both = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
                got = both["state"]
                self.set_data_state(both["data"])
            self.resumed_from = step
            return step, got["params"], got["frozen"], from_string_tree(got["opt_state"], opt_state)
        self.resumed_from = None
        return 0, self._place(params), self._place(frozen), self._place(opt_state)

    def merge(self, params: dict, frozen: dict):
        """The nnx model of the given flat parameters (traceable)."""
        flat = {**params, **frozen}
        state = nnx.from_flat_state([(tuple(k.split("/")), v.replace(flat[k])) for k, v in self.abstract.items()])
        return nnx.merge(self.graphdef, state)

    def model(self):
        return self.merge(self.params, self.frozen)

    def flat_params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in {**self.params, **self.frozen}.items()}

    # ------------------------------------------------------------------------------------------ step
    def _make_step(self):
        cfg = self.cfg
        # trainers of the same model, groups, optimizer and loss share one jitted step (tests, resume)
        key = (type(self), self.graphdef, tuple(self.trainable_paths), cfg.steps, cfg.optim.model_dump_json(),
               self.step_key())
        if key in _STEP_CACHE:
            return _STEP_CACHE[key]
        tx, merge, loss_fn = self.tx, self.merge, type(self).loss_fn
        owner = self

        def step(params, frozen, opt_state, batch):
            def objective(ps):
                return loss_fn(owner, merge(ps, frozen), batch)

            (loss, parts), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **parts}

        _STEP_CACHE[key] = jax.jit(step, donate_argnums=(0, 2))
        return _STEP_CACHE[key]

    def _lr(self) -> float:
        o = self.cfg.optim
        return float(make_schedule(o.lr, self.cfg.steps, o.warmup_steps, o.schedule, o.min_lr_ratio)(self.step - 1))

    def _save(self, step: int) -> None:
        state = ocp.args.StandardSave({"params": self.params, "frozen": self.frozen,
                                       "opt_state": to_string_tree(self.opt_state)})
        data = self.data_state()
        args = state if data is None else ocp.args.Composite(state=state, data=ocp.args.JsonSave(data))
        self.manager.save(step, args=args)
        # the step's weights as a model checkpoint too (what `stvl eval` and `stvl segment` load), inside the step
        # directory so that keep-last-K removes it with the step; it waits for an async save to finish
        self.manager.wait_until_finished()
        self.save_model(Path(self.cfg.checkpoint_dir) / str(step) / "model")

    def run(self, until: int | None = None) -> dict:
        cfg = self.cfg
        last = cfg.steps if until is None else min(until, cfg.steps)
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        logger = MetricsLogger(out, total_steps=cfg.steps, start_step=self.step, progress=False, tensorboard=False)
        if self.resumed_from is not None:
            logger.message(f"resumed from step {self.resumed_from} ({cfg.checkpoint_dir})")
        try:
            t_last = t_start = time.perf_counter()
            while self.step < last:
                if cfg.time_limit_min is not None and time.perf_counter() - t_start > 60 * cfg.time_limit_min:
                    logger.message(f"time limit {cfg.time_limit_min} min reached after step {self.step}")
                    until = self.step
                    break
                batch = jax.device_put(self.batch(self.step), self.batch_sharding)
                with jax.set_mesh(self.mesh):
                    self.params, self.opt_state, metrics = self._step_fn(self.params, self.frozen, self.opt_state,
                                                                         batch)
                self.step += 1
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not np.isfinite(metrics["loss"]):
                    raise InputError(f"step {self.step}: loss {metrics['loss']} is not finite; training stopped")
                now = time.perf_counter()
                if self.step % cfg.log_every == 0 or self.step == last:
                    logger.log({"step": self.step, **metrics, "step_time_s": now - t_last, "lr": self._lr(),
                                "tokens_per_s": cfg.data.batch_size / (now - t_last),  # samples/s
                                **self.extra_metrics()})
                t_last = now
                logger.advance()
                if self.step % cfg.checkpoint.every == 0:
                    self._save(self.step)
            if self.step > 0 and (cfg.checkpoint.save_final or until is not None) \
                    and self.step not in self.manager.all_steps():
                self._save(self.step)
            self.manager.wait_until_finished()
            for line in self.end_messages():
                logger.message(line)
        finally:
            logger.close()
        model_dir = self.save_model(out / "model")
        history = read_metrics(out)
        plot_loss_curve(history, out / "loss_curve.png", title=cfg.name)
        return {"step": self.step, "loss": history[-1]["loss"] if history else None, "history": history,
                "model_dir": str(model_dir), "checkpoint_dir": cfg.checkpoint_dir}

    def close(self) -> None:
        self.manager.close()
