"""`VirstTrainer`: VIRST training (`stvl train virst_tiny`) on a referring-segmentation set.

    trainer = VirstTrainer(load_virst_train_config("virst_tiny", ["data.dir=data/synth", "steps=20"]))
    summary = trainer.run()     # {'step', 'loss', 'history', 'model_dir'}

The model: a fresh `VirstModel` of `model.config` (or a VIRST checkpoint, `model.checkpoint`), its SAM2 optionally
replaced by a trained SAM2 video checkpoint (`model.sam2_checkpoint`: VIRST starts from SAM2.1; e.g. the
`{out_dir}/model` of `stvl train sam2_tiny_synthetic`). The [SEG] token: the tokenizer (`model.tokenizer`, or the
project's tiny one, written to `{out_dir}/tokenizer`) gets it added when missing; its id must be the config's
`seg.token_id`.

Batches: the Grain rvos pipeline with VIRST's prompt (`virst_data`), repeated over the split; its iterator state
is saved with every checkpoint, so a resumed run sees the batches an uninterrupted one would; skipped samples
are counted (`data/skipped/<reason>` in metrics.jsonl, a line at the end; more than `data.max_skip_fraction`
stops the run). Groups (`group_of`): llm / image_encoder (SAM2 Hiera + FPN) / decoder (SAM2 prompt encoder, mask
decoder and memory) / prompter (SegPrompter, initial fusion); frozen ones get no gradient and no optimizer state.
Loop, optimizer, mesh (data parallel, parameters replicated) and checkpoints: `flat_trainer.FlatTrainer`. The
final weights are a VIRST checkpoint (`models.virst.checkpoint`, "stvl-jax/virst") in `{out_dir}/model`, with
the tokenizer in `{out_dir}/model/tokenizer`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import CheckpointError, ConfigError, InputError
from stvl_jax.sharding import make_mesh
from stvl_jax.train.flat_trainer import FlatTrainer, group_by_rules
from stvl_jax.train.skips import check_fraction
from stvl_jax.train.virst_config import VirstTrainConfig, resolve_virst_model

_RULES = (("llm", re.compile(r"^llm/")),
          ("image_encoder", re.compile(r"^sam2/image/vision_encoder/")),
          ("decoder", re.compile(r"^sam2/")),
          ("prompter", re.compile(r"^(seg_prompter|initial_fusion)/")))


def group_of(path: str) -> str:
    """The VIRST group of a parameter path, e.g. 'seg_prompter/layers/...' -> 'prompter'."""
    return group_by_rules(path, _RULES, "VIRST")


def _check_data(cfg: VirstTrainConfig) -> None:
    from data_pipelines.formats.rvos import layout

    meta = layout(cfg.data.dir, cfg.data.format, cfg.data.split)["meta"]
    if not os.path.isfile(meta):
        hint = f"; make one with `stvl data synth --out {cfg.data.dir} --export rvos`" \
            if cfg.data.format == "synthetic" else ""
        raise InputError(f"data.dir {cfg.data.dir!r} holds no {cfg.data.format} split {cfg.data.split!r} (no "
                         f"{meta}){hint}")


def seg_tokenizer(cfg: VirstTrainConfig, seg_text: str, seg_id: int) -> str:
    """The tokenizer directory the prompts are encoded with, holding `seg_text` at `seg_id`."""
    from transformers import AutoTokenizer

    from data_pipelines.tokenizer import build_tiny_tokenizer

    src = cfg.model.tokenizer or build_tiny_tokenizer(str(Path(cfg.out_dir) / "tokenizer"))
    tok = AutoTokenizer.from_pretrained(src)
    if seg_text not in tok.get_vocab():
        tok.add_tokens([seg_text])  # upstream `tokenizer.add_tokens("[SEG]")`
        src = str(Path(cfg.out_dir) / "tokenizer")
        tok.save_pretrained(src)
    got = tok.convert_tokens_to_ids(seg_text)
    if got != seg_id:
        raise ConfigError(f"tokenizer {src!r} has {seg_text} at id {got} but the model config's seg.token_id is "
                          f"{seg_id}")
    return src


class VirstTrainer(FlatTrainer):
    def __init__(self, cfg: VirstTrainConfig, *, mesh=None):
        from data_pipelines.grain.rvos import RvosPipelineConfig
        from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
        from stvl_jax.train.virst_data import RvosSource, VirstPrompt
        from stvl_jax.train.virst_step import vision_template

        _check_data(cfg)
        self.cfg = cfg
        model = self._initial_model()
        mc = self.model_config = model.config
        d = cfg.data
        if d.seg_frames > mc.anchors.max_seg_frames:
            raise ConfigError(f"data.seg_frames {d.seg_frames} > the model's anchors.max_seg_frames "
                              f"{mc.anchors.max_seg_frames}")
        self.tokenizer_dir = seg_tokenizer(cfg, mc.seg.text, mc.seg.token_id)
        pre = model.llm.preprocessing
        self.sam2_preprocessing = Sam2PreprocessConfig(image_size=mc.sam2.image.image_size)
        prompt = VirstPrompt(self.tokenizer_dir, mc.seg.token_id, model.seg_count(d.seg_frames), d.max_len,
                             pre.family, pre.merge_size, pre.temporal_patch_size, d.fps)
        self.source = RvosSource(RvosPipelineConfig(
            root=d.dir, format=d.format, split=d.split, vlm_frames=d.vlm_frames, seg_frames=d.seg_frames,
            vlm_size=tuple(d.vlm_size), preprocess=pre, sam2=self.sam2_preprocessing, batch_size=d.batch_size,
            shuffle=True, seed=cfg.seed, num_epochs=None, sample_fn=prompt))
        f = pre.temporal_patch_size
        grid = np.array([[-(-d.vlm_frames // f), d.vlm_size[0] // pre.patch_size, d.vlm_size[1] // pre.patch_size]])
        self.template = vision_template(mc.llm, grid)
        self.setup(cfg, model, mesh if mesh is not None else make_mesh(cfg.mesh.shape()))

    def group_of(self, path: str) -> str:
        return group_of(path)

    def _initial_model(self):
        m = self.cfg.model
        if m.checkpoint is not None:
            from stvl_jax.models.virst.checkpoint import load_model

            model = load_model(m.checkpoint, param_dtype=jnp.float32)
        else:
            from flax import nnx

            from stvl_jax.models.virst.model import VirstModel

            # eager: the tiny models initialise in seconds, a jitted init compiles for minutes on CPU; the
            # parameters are replicated over the mesh afterwards (data parallel)
            model = VirstModel(resolve_virst_model(m), rngs=nnx.Rngs(self.cfg.seed))
        if m.sam2_checkpoint is not None:
            load_sam2_into(model, m.sam2_checkpoint)
        # TODO(lora): apply the Qwen-VL trainer's generic `lora:` section to model.llm here (see virst_config)
        return model

    # ------------------------------------------------------------------------------------------ step
    def step_key(self) -> tuple:
        d = self.cfg.data
        return (self.cfg.loss.model_dump_json(), d.vlm_frames, tuple(d.vlm_size), d.seg_anchors)

    def loss_fn(self, model, batch):
        from stvl_jax.train.virst_step import batch_loss

        return batch_loss(model, batch, self.template, self.cfg.loss, self.cfg.data.seg_anchors)

    def batch(self, i: int) -> dict:
        """The next batch of the pipeline + per-row dropout keys (a function of (seed, i))."""
        out = self.source.next_batch()
        check_fraction(self.source.skips(), self.cfg.data.max_skip_fraction)
        rng = np.random.default_rng([self.cfg.seed, i])
        out["dropout_key"] = rng.integers(0, 2**32, size=(len(out["input_ids"]), 2), dtype=np.uint32)
        return out

    def data_state(self) -> dict:
        return self.source.state()

    def set_data_state(self, state: dict) -> None:
        self.source.set_state(state)

    def extra_metrics(self) -> dict:
        return self.source.skips().metrics()

    def end_messages(self) -> list[str]:
        return [self.source.skips().summary()]

    def save_model(self, path: str | Path) -> Path:
        from stvl_jax.models.virst.checkpoint import save_model

        model = self.model()
        model.sam2_preprocessing = self.sam2_preprocessing
        out = save_model(model, path, source={"kind": "stvl-jax", "trained": self.cfg.name}, overwrite=True)
        # the tokenizer with its [SEG] travels with the checkpoint (CKPT/tokenizer, where inference looks)
        shutil.copytree(self.tokenizer_dir, Path(out) / "tokenizer", dirs_exist_ok=True)
        return out


def load_sam2_into(model, path: str) -> None:
    """Replace `model.sam2`'s weights by those of a SAM2 video checkpoint (shapes must agree)."""
    from stvl_jax.models.sam2.loading import load_model
    from stvl_jax.nn.params import flat_params

    sam2 = load_model(path, param_dtype=jnp.float32)
    if getattr(sam2, "family", None) != "sam2_video":
        raise CheckpointError(f"model.sam2_checkpoint {path!r} is not a SAM2 video model")
    src, dst = flat_params(sam2), flat_params(model.sam2)
    if set(src) != set(dst):
        missing, extra = sorted(set(dst) - set(src)), sorted(set(src) - set(dst))
        raise CheckpointError(f"model.sam2_checkpoint {path!r} does not fit the VIRST config's SAM2: missing "
                              f"{missing[:3]}, unexpected {extra[:3]}")
    for k, var in dst.items():
        value = src[k].get_value()
        if tuple(value.shape) != tuple(var.get_value().shape):
            raise CheckpointError(f"model.sam2_checkpoint {path!r}: {k} has shape {tuple(value.shape)}, the VIRST "
                                  f"config's SAM2 needs {tuple(var.get_value().shape)}")
        var.set_value(jnp.asarray(value, var.get_value().dtype))
