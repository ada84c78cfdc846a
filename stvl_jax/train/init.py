"""Where the initial weights come from: fresh (the model's initialisers), an stvl-jax checkpoint or a Hugging Face
directory (read in place, `stvl_jax.models.qwen_vl.checkpoints`), optionally with the vocabulary grown for added
tokens.

Checkpoint weights are restored straight into their sharded arrays on the current mesh, cast to the master
dtype. Growing the vocabulary (`model.vocab_size` larger than the checkpoint's) appends rows to
`language_model/embed_tokens/embedding` (V, D) and `lm_head/kernel` (D, V) initialised to the mean of the
existing rows (`stvl_jax.models.qwen_vl.vocab.resize_vocab`, as transformers' `resize_token_embeddings`),
and records the new size in the model config, so checkpoints written by the run (and their HF export) carry
the grown vocabulary.
A recipe that adds tokens (e.g. Streamo's three state tokens) sets `model.vocab_size` to the tokenizer's
new length (rounded up as it likes) and trains the `embed` group.
"""

from __future__ import annotations

import jax

from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.qwen_vl.checkpoints import open_checkpoint
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.models.qwen_vl.loading import check_params, read_preprocessing
from stvl_jax.models.qwen_vl.vocab import resize_vocab
from stvl_jax.nn.params import flat_params
from stvl_jax.train.config import ModelSection
from stvl_jax.train.state import ModelSpec


def with_vocab_size(config: QwenVLConfig, vocab_size: int | None) -> QwenVLConfig:
    """`config` with text.vocab_size grown to `vocab_size` (None: unchanged; shrinking is refused)."""
    if vocab_size is None or vocab_size == config.text.vocab_size:
        return config
    if vocab_size < config.text.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab_size} is smaller than the model's {config.text.vocab_size}; "
                          f"only growing the vocabulary is supported")
    data = config.to_dict()
    data["text"]["vocab_size"] = vocab_size
    return QwenVLConfig.from_dict(data, source="model config with grown vocabulary")


def model_config(section: ModelSection) -> QwenVLConfig:
    """The architecture this run trains (checkpoint/config/arch, then vocabulary growth)."""
    return with_vocab_size(section.resolve_arch(), section.vocab_size)


def initial_preprocessing(section: ModelSection, config: QwenVLConfig) -> PreprocessConfig:
    """The preprocessing the initial weights were made for: the checkpoint's, else the family default (for
    `config`'s patch sizes). The data section may change it (`data.pipeline.preprocess`)."""
    if section.checkpoint is not None:
        return read_preprocessing(section.checkpoint)
    return config.default_preprocessing()


def restore_initial_params(spec: ModelSpec, path: str, mesh) -> dict[str, jax.Array]:
    """Parameters of checkpoint `path`, sharded on `mesh` by the rules table, in the spec's master dtype, with
    vocabulary rows appended (`stvl_jax.models.qwen_vl.vocab.resize_vocab`) when `spec.config` has more."""
    with open_checkpoint(path) as source:
        stored_config = source.config
        check_params(stored_config, source.param_specs(), f"checkpoint {str(path)!r}")
        if with_vocab_size(stored_config, spec.config.text.vocab_size) != spec.config:
            raise CheckpointError(f"checkpoint {str(path)!r} has a different architecture than this run's model")
        stored_spec = spec if stored_config == spec.config else ModelSpec.create(
            stored_config, trainable_groups=spec.trainable_groups, **spec.build_options(),
            preprocessing=spec.preprocessing)
        targets = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh)
                   for (k, s), sh in zip(stored_spec.shapes().items(), stored_spec.param_shardings(mesh).values())}
        params = source.restore(targets)
    if stored_spec is spec:
        return params
    model = stored_spec.merge(params)
    model.mesh = mesh
    grown = resize_vocab(model, spec.config.text.vocab_size)  # re-placed on `mesh` by the rules table
    return {k: v.get_value() for k, v in flat_params(grown).items()}
