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
stops the run). Each row also gets its training anchors (`data.anchors=random`, VIRST's rule
`tdau.train_anchor_frames`: 3 distinct random frames, a function of (seed, step); `uniform`: the evaluation rule).
Groups (`group_of`): llm / image_encoder (SAM2 Hiera + FPN) / decoder (SAM2 prompt encoder, mask decoder and
memory) / prompter (SegPrompter, initial fusion); frozen ones get no gradient and no optimizer state. With
`lora:` (`lora_config.LoRAConfig`, the Qwen-VL trainer's section) adapters are attached to `model.llm`
(`nn.lora.add_lora`) and train as group `lora`; the LLM's base weights are frozen (group `llm_base`) except the
Qwen-VL groups of `lora.train_groups`, which train as group `llm`.
Loop, optimizer, mesh (data parallel, parameters replicated) and checkpoints (adapters included):
`flat_trainer.FlatTrainer`. The final weights are a VIRST checkpoint (`models.virst.checkpoint`, "stvl-jax/virst")
in `{out_dir}/model`, adapters merged into their kernels, with the tokenizer in `{out_dir}/model/tokenizer`;
with `lora.modules=llm` the adapters are also written as a PEFT adapter directory `{out_dir}/lora_adapter`
(transformers' Qwen-VL module names) for the base LLM.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import CheckpointError, ConfigError, InputError
from stvl_jax.models.sam2.prompt_encoder import FOURIER_MATRICES
from stvl_jax.nn.lora import is_adapter
from stvl_jax.sharding import make_mesh
from stvl_jax.train.flat_trainer import FlatTrainer, group_by_rules
from stvl_jax.train.param_groups import LORA_GROUP
from stvl_jax.train.param_groups import group_of as qwen_group_of
from stvl_jax.train.skips import check_fraction
from stvl_jax.train.virst_config import VirstTrainConfig, resolve_virst_model

_RULES = (("llm", re.compile(r"^llm/")),
          ("fixed", re.compile("^sam2/" + FOURIER_MATRICES)),  # never trained (buffers in the references)
          ("image_encoder", re.compile(r"^sam2/image/vision_encoder/")),
          ("decoder", re.compile(r"^sam2/")),
          ("prompter", re.compile(r"^(seg_prompter|initial_fusion)/")))
LLM_BASE = "llm_base"  # with LoRA: the LLM's base weights outside lora.train_groups (never trained)
PEFT_DIR = "lora_adapter"  # {out_dir}/lora_adapter: the LLM's adapters as a PEFT directory (lora.modules=llm)


def group_of(path: str, lora=None) -> str:
    """The VIRST group of a parameter path, e.g. 'seg_prompter/layers/...' -> 'prompter'. With `lora` (a
    LoRAConfig): the LLM's adapters -> 'lora'; its base weights -> 'llm' when their Qwen-VL group is in
    `lora.train_groups` (PEFT's modules_to_save), else 'llm_base' (never trained). SAM2's Fourier matrices ->
    'fixed' (never trained)."""
    if lora is not None and path.startswith("llm/"):
        if is_adapter(path):
            return LORA_GROUP
        return "llm" if qwen_group_of(path[len("llm/"):]) in lora.train_groups else LLM_BASE
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
        return group_of(path, self.cfg.lora)

    def trainable_groups(self) -> tuple[str, ...]:
        groups = self.cfg.optim.groups.trainable()
        lora = self.cfg.lora
        if lora is None:
            return groups
        return (LORA_GROUP, *(("llm",) if lora.train_groups else ()), *(g for g in groups if g != "llm"))

    def extra_groups(self) -> dict:
        from stvl_jax.train.config import GroupConfig

        lora = self.cfg.lora
        return {} if lora is None else {LORA_GROUP: GroupConfig(lr=lora.lr, weight_decay=lora.weight_decay)}

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
        if self.cfg.lora is not None:
            from flax import nnx

            from stvl_jax.nn.lora import add_lora

            # fresh adapters (B = 0: step 0 is the base model) from their own stream of the run's seed
            key = jax.random.fold_in(jax.random.key(self.cfg.seed), 1)
            add_lora(model.llm, self.cfg.lora.spec(), nnx.Rngs(key))
        return model

    # ------------------------------------------------------------------------------------------ step
    def step_key(self) -> tuple:
        d = self.cfg.data
        lora = None if self.cfg.lora is None else self.cfg.lora.model_dump_json()  # adapters' lr, dropout
        return (self.cfg.loss.model_dump_json(), d.vlm_frames, tuple(d.vlm_size), d.anchors, lora)

    def loss_fn(self, model, batch):
        from stvl_jax.train.virst_step import batch_loss

        lora = self.cfg.lora
        if lora is not None and lora.dropout > 0:
            from stvl_jax.nn.lora import set_dropout_keys

            # each row's key, folded apart from the SegPrompter's use of it: every expression draws its own masks
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(batch["dropout_key"])
            set_dropout_keys(model.llm, keys, rows=True)
        return batch_loss(model, batch, self.template, self.cfg.loss, self.cfg.data.anchors)

    def batch(self, i: int) -> dict:
        """The next batch of the pipeline + per-row dropout keys and, with data.anchors=random, per-row training
        anchors (`tdau.train_anchor_frames`), both a function of (seed, i)."""
        out = self.source.next_batch()
        check_fraction(self.source.skips(), self.cfg.data.max_skip_fraction)
        rng = np.random.default_rng([self.cfg.seed, i])
        rows = len(out["input_ids"])
        out["dropout_key"] = rng.integers(0, 2**32, size=(rows, 2), dtype=np.uint32)
        if self.cfg.data.anchors == "random":
            from stvl_jax.models.virst.tdau import train_anchor_frames

            t = out["masks"].shape[1]
            out["anchor_frames"] = np.array([train_anchor_frames(t, rng, self.cfg.data.num_anchors)
                                             for _ in range(rows)], np.int32)
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

        model = self.model() if self.cfg.lora is None else self.merged_model()
        model.sam2_preprocessing = self.sam2_preprocessing
        out = save_model(model, path, source={"kind": "stvl-jax", "trained": self.cfg.name}, overwrite=True)
        # the tokenizer with its [SEG] travels with the checkpoint (CKPT/tokenizer, where inference looks)
        shutil.copytree(self.tokenizer_dir, Path(out) / "tokenizer", dirs_exist_ok=True)
        if self.cfg.lora is not None and self.cfg.lora.modules == "llm":  # the ViT's fused qkv has no PEFT form
            self.write_peft_adapter(Path(out).parent / PEFT_DIR)
        return out

    def merged_model(self):
        """The trained VirstModel with every adapter folded into its kernel (W + alpha / r * A B,
        `nn.lora.merge_flat`): the plain architecture, what `load_model`, `stvl eval rvos` and `stvl segment` read."""
        from stvl_jax.models.virst.model import abstract_virst_model
        from stvl_jax.nn.lora import merge_flat
        from stvl_jax.nn.params import flat_params

        merged = merge_flat(self.flat_params(), self.cfg.lora.spec().scale)
        model = abstract_virst_model(self.model_config, preprocessing=self.model().llm.preprocessing)
        for k, var in flat_params(model).items():
            var.set_value(jnp.asarray(merged[k]))
        return model

    def write_peft_adapter(self, out_dir: Path) -> list[str]:
        """The LLM's adapters as a PEFT adapter directory (`converters.write_peft_adapter`, transformers' Qwen-VL
        module names), for the base LLM the run started from (its weights are frozen unless lora.train_groups)."""
        from converters import write_peft_adapter

        flat = self.flat_params()
        llm = {k[len("llm/"):]: v for k, v in flat.items() if k.startswith("llm/")}
        return write_peft_adapter(out_dir, self.model_config.llm, self.cfg.lora.spec(),
                                  {k: (np.shape(v),) for k, v in llm.items()}, llm.__getitem__, base_model=None,
                                  overwrite=True)


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
