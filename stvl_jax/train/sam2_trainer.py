"""`Sam2Trainer`: promptable video segmentation training of SAM2 on the synthetic set's masklets.

    trainer = Sam2Trainer(load_sam2_train_config("sam2_tiny_synthetic", ["steps=20"]))
    summary = trainer.run()     # {'step', 'loss', 'history', 'model_dir'}

Step i's batch is a pure function of (seed, i) (clips, object subsets and prompts drawn from
`np.random.default_rng([seed, i])`), so a resumed run sees the batches an uninterrupted one would. Parameters
are split into trainable / frozen by group (`group_of`: image_encoder / decoder / memory); frozen ones get no
gradient and no optimizer state. The batch is split over every mesh axis (data parallel), parameters are
replicated. Orbax checkpoints `{checkpoint_dir}/{step}` hold params, frozen params and optimizer state; the
final weights are written as a SAM2 checkpoint (`models.sam2.loading.save_model`) in `{out_dir}/model`, which
`stvl segment` and `stvl eval vos` load.
"""

from __future__ import annotations

import os
import re
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
from stvl_jax.sharding import make_mesh
from stvl_jax.train.checkpoint import from_string_tree, to_string_tree
from stvl_jax.train.metrics import MetricsLogger, plot_loss_curve, read_metrics
from stvl_jax.train.optim import make_schedule
from stvl_jax.train.param_groups import decays
from stvl_jax.train.sam2_config import SAM2_GROUPS, Sam2TrainConfig, resolve_model_config
from stvl_jax.train.sam2_step import clip_batch, clip_loss

_STEP_CACHE: dict = {}
_RULES = (("image_encoder", re.compile(r"^image/vision_encoder/")),
          ("decoder", re.compile(r"^image/")),
          ("memory", re.compile(r"^memory_(attention|encoder|embeddings)/")))


def group_of(path: str) -> str:
    """The SAM2 group of a parameter path, e.g. 'memory_attention/layers/...' -> 'memory'."""
    for name, rule in _RULES:
        if rule.match(path):
            return name
    raise ValueError(f"SAM2 parameter {path!r} belongs to no group {SAM2_GROUPS}")


def make_sam2_optimizer(cfg: Sam2TrainConfig, trainable_paths) -> optax.GradientTransformation:
    """AdamW per group (schedules from `optim.make_schedule`, no decay on biases / norms) after global clipping."""
    o = cfg.optim
    labels = {p: group_of(p) for p in trainable_paths}
    mask = {p: decays(p) for p in trainable_paths}
    per_group = {}
    for g in set(labels.values()):
        peak = getattr(o.groups, g).lr or o.lr
        parts = [optax.scale_by_adam()]
        if o.weight_decay:
            parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
        parts.append(optax.scale_by_learning_rate(make_schedule(peak, cfg.steps, o.warmup_steps, o.schedule,
                                                                o.min_lr_ratio)))
        per_group[g] = optax.chain(*parts)
    chain = [optax.clip_by_global_norm(o.max_grad_norm)] if o.max_grad_norm else []
    return optax.chain(*chain, optax.multi_transform(per_group, labels))


def _check_data(cfg: Sam2TrainConfig) -> None:
    d = cfg.data.dir
    if not os.path.isfile(os.path.join(d, "manifest.json")):
        raise InputError(f"data.dir {d!r} holds no synthetic set (no manifest.json); make one with "
                         f"`stvl data synth --preset vos --out {d}`")


class Sam2Trainer:
    def __init__(self, cfg: Sam2TrainConfig, *, mesh=None):
        from data_pipelines.vos import PromptConfig, VosClipConfig, VosReader
        from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig

        _check_data(cfg)
        self.cfg = cfg
        self.mesh = mesh if mesh is not None else make_mesh(cfg.mesh.shape())
        n_dev = self.mesh.devices.size
        if cfg.data.batch_size % n_dev:
            raise InputError(f"data.batch_size={cfg.data.batch_size} is not divisible by the {n_dev} devices of the "
                             f"mesh {dict(self.mesh.shape)}")
        model = self._initial_model()
        self.model_config = model.config
        self.preprocessing = getattr(model, "preprocessing", None) or Sam2PreprocessConfig(
            image_size=model.config.image_size)
        self.graphdef, state = nnx.split(model)
        self.abstract = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(state)}
        groups = set(cfg.optim.groups.trainable())
        flat = {k: v.get_value() for k, v in self.abstract.items()}
        self.trainable_paths = sorted(k for k in flat if group_of(k) in groups)
        self.tx = make_sam2_optimizer(cfg, self.trainable_paths)
        p = cfg.data.prompts
        self.prompt_cfg = PromptConfig(prob_points=p.prob_points, prob_box=p.prob_box,
                                       max_cond_frames=p.max_cond_frames, random_cond_frames=p.random_cond_frames)
        self.reader = VosReader(cfg.data.dir, cfg.data.split, VosClipConfig(
            num_frames=cfg.data.frames, frame_stride=cfg.data.frame_stride, max_objects=cfg.data.max_objects),
            decode=True)
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))
        self.manager = ocp.CheckpointManager(os.path.abspath(cfg.checkpoint_dir), options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.checkpoint.keep, enable_async_checkpointing=cfg.checkpoint.async_save))
        self._step_fn = self._make_step()
        self.step, self.params, self.frozen, self.opt_state = self._initial_state(flat)

    # ------------------------------------------------------------------------------------------ state
    def _initial_model(self):
        m = self.cfg.model
        if m.checkpoint is not None:
            from stvl_jax.models.sam2.loading import load_model

            model = load_model(m.checkpoint, param_dtype=jnp.float32)
            if model.family != "sam2_video":
                raise CheckpointError(f"model.checkpoint {m.checkpoint!r} is a SAM2 image model; training needs "
                                      "a sam2_video one")
            return model
        from stvl_jax.models.sam2.video_model import init_video_model

        return init_video_model(resolve_model_config(m), seed=self.cfg.seed)

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
            got = self.manager.restore(step, args=ocp.args.StandardRestore(target))
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

    # ------------------------------------------------------------------------------------------ step
    def _make_step(self):
        cfg = self.cfg
        p = cfg.data.prompts
        static = dict(cond_capacity=cfg.cond_capacity, clicks=p.prob_points > 0 and p.prob_box < 1,
                      mask_prompts=p.prob_points < 1)
        # trainers of the same model, groups, optimizer and loss share one jitted step (tests, resume)
        key = (self.graphdef, tuple(self.trainable_paths), cfg.steps, cfg.optim.model_dump_json(),
               cfg.loss.model_dump_json(), tuple(sorted(static.items())))
        if key in _STEP_CACHE:
            return _STEP_CACHE[key]
        tx, merge, loss_cfg = self.tx, self.merge, cfg.loss

        def step(params, frozen, opt_state, batch):
            def loss_fn(ps):
                return clip_loss(merge(ps, frozen), batch, loss_cfg, **static)

            (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **parts}

        _STEP_CACHE[key] = jax.jit(step, donate_argnums=(0, 2))
        return _STEP_CACHE[key]

    def batch(self, i: int) -> dict:
        """The host batch of optimizer step i (0-based): a pure function of (seed, i)."""
        from data_pipelines.vos import clip_arrays, simulate_prompts

        rng = np.random.default_rng([self.cfg.seed, i])
        samples = []
        for _ in range(self.cfg.data.batch_size):
            clip = self.reader.sample(rng)
            samples.append(clip_arrays(clip, simulate_prompts(clip, rng, self.prompt_cfg),
                                       max_objects=self.cfg.data.max_objects))
        return clip_batch(samples, self.preprocessing)

    def _lr(self) -> float:
        o = self.cfg.optim
        return float(make_schedule(o.lr, self.cfg.steps, o.warmup_steps, o.schedule, o.min_lr_ratio)(self.step - 1))

    def _save(self, step: int) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(
            {"params": self.params, "frozen": self.frozen, "opt_state": to_string_tree(self.opt_state)}))

    def save_model(self, path: str | Path) -> Path:
        from stvl_jax.models.sam2.loading import save_model

        flat = {k: np.asarray(v) for k, v in {**self.params, **self.frozen}.items()}
        return save_model(flat, self.model_config, path, family="sam2_video", preprocessing=self.preprocessing,
                          overwrite=True, source={"kind": "stvl-jax", "trained": self.cfg.name})

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
                                "tokens_per_s": cfg.data.batch_size / (now - t_last)})  # clips/s
                t_last = now
                logger.advance()
                if self.step % cfg.checkpoint.every == 0:
                    self._save(self.step)
            if self.step > 0 and (cfg.checkpoint.save_final or until is not None) \
                    and self.step not in self.manager.all_steps():
                self._save(self.step)
            self.manager.wait_until_finished()
        finally:
            logger.close()
        model_dir = self.save_model(out / "model")
        history = read_metrics(out)
        plot_loss_curve(history, out / "loss_curve.png", title=cfg.name)
        return {"step": self.step, "loss": history[-1]["loss"] if history else None, "history": history,
                "model_dir": str(model_dir), "checkpoint_dir": cfg.checkpoint_dir}

    def close(self) -> None:
        self.manager.close()
