"""`Sam2Trainer`: promptable video segmentation training of SAM2 on the synthetic set's masklets.

    trainer = Sam2Trainer(load_sam2_train_config("sam2_tiny_synthetic", ["steps=20"]))
    summary = trainer.run()     # {'step', 'loss', 'history', 'model_dir'}

Step i's batch is a pure function of (seed, i) (clips, object subsets and prompts drawn from
`np.random.default_rng([seed, i])`), so a resumed run sees the batches an uninterrupted one would. Parameters
are split into trainable / frozen by group (`group_of`: image_encoder / decoder / memory); frozen ones get no
gradient and no optimizer state. The batch is split over every mesh axis (data parallel), parameters are
replicated. Orbax checkpoints `{checkpoint_dir}/{step}` hold params, frozen params and optimizer state; the
final weights are written as a SAM2 checkpoint (`models.sam2.loading.save_model`) in `{out_dir}/model`, which
`stvl segment` and `stvl eval vos` load. The loop, optimizer and checkpoints are `flat_trainer.FlatTrainer`'s.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import CheckpointError, InputError
from stvl_jax.models.sam2.prompt_encoder import FOURIER_MATRICES
from stvl_jax.sharding import make_mesh
from stvl_jax.train.flat_trainer import FlatTrainer, group_by_rules
from stvl_jax.train.sam2_config import Sam2TrainConfig, resolve_model_config
from stvl_jax.train.sam2_step import clip_batch, clip_loss

_RULES = (("fixed", re.compile("^" + FOURIER_MATRICES)),  # never trained (buffers in the references)
          ("image_encoder", re.compile(r"^image/vision_encoder/")),
          ("decoder", re.compile(r"^image/")),
          ("memory", re.compile(r"^memory_(attention|encoder|embeddings)/")))


def group_of(path: str) -> str:
    """The SAM2 group of a parameter path, e.g. 'memory_attention/layers/...' -> 'memory'; the Fourier
    matrices -> 'fixed', a group no config trains."""
    return group_by_rules(path, _RULES, "SAM2")


def _check_data(cfg: Sam2TrainConfig) -> None:
    d = cfg.data.dir
    if not os.path.isfile(os.path.join(d, "manifest.json")):
        raise InputError(f"data.dir {d!r} holds no synthetic set (no manifest.json); make one with "
                         f"`stvl data synth --preset vos --out {d}`")


class Sam2Trainer(FlatTrainer):
    def __init__(self, cfg: Sam2TrainConfig, *, mesh=None):
        from data_pipelines.vos import PromptConfig, VosClipConfig, VosReader
        from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig

        _check_data(cfg)
        self.cfg = cfg
        model = self._initial_model()
        self.model_config = model.config
        self.preprocessing = getattr(model, "preprocessing", None) or Sam2PreprocessConfig(
            image_size=model.config.image_size)
        p = cfg.data.prompts
        self.prompt_cfg = PromptConfig(prob_points=p.prob_points, prob_box=p.prob_box,
                                       max_cond_frames=p.max_cond_frames, random_cond_frames=p.random_cond_frames)
        self.reader = VosReader(cfg.data.dir, cfg.data.split, VosClipConfig(
            num_frames=cfg.data.frames, frame_stride=cfg.data.frame_stride, max_objects=cfg.data.max_objects),
            decode=True)
        p = cfg.data.prompts
        self.static = dict(cond_capacity=cfg.cond_capacity, clicks=p.prob_points > 0 and p.prob_box < 1,
                           mask_prompts=p.prob_points < 1, video=cfg.data.video_frames)
        self.setup(cfg, model, mesh if mesh is not None else make_mesh(cfg.mesh.shape()))

    def group_of(self, path: str) -> str:
        return group_of(path)

    def trainable_groups(self) -> tuple[str, ...]:
        # image-only training (data.video_frames false) gives the memory no gradient: keep it as it is
        groups = self.cfg.optim.groups.trainable()
        return groups if self.cfg.data.video_frames else tuple(g for g in groups if g != "memory")

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

    # ------------------------------------------------------------------------------------------ step
    def step_key(self) -> tuple:
        return (self.cfg.loss.model_dump_json(), tuple(sorted(self.static.items())))

    def loss_fn(self, model, batch):
        return clip_loss(model, batch, self.cfg.loss, **self.static)

    def batch(self, i: int) -> dict:
        """The host batch of optimizer step i (0-based): a pure function of (seed, i)."""
        from data_pipelines.vos import clip_arrays, simulate_prompts

        rng = np.random.default_rng([self.cfg.seed, i])
        samples = []
        for _ in range(self.cfg.data.batch_size):
            clip = self.reader.sample(rng)
            samples.append(clip_arrays(clip, simulate_prompts(clip, rng, self.prompt_cfg),
                                       max_objects=self.cfg.data.max_objects))
        return clip_batch(samples, self.preprocessing, image_rng=rng if self.cfg.data.image_frames else None)

    def save_model(self, path: str | Path) -> Path:
        from stvl_jax.models.sam2.loading import save_model

        return save_model(self.flat_params(), self.model_config, path, family="sam2_video",
                          preprocessing=self.preprocessing, overwrite=True,
                          source={"kind": "stvl-jax", "trained": self.cfg.name})
