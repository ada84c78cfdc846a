"""Host batch preparation (targets, patch-bucket trimming, padding to the mesh, clear errors), the synthetic
source, and the multi-process mode detection."""

import jax
import numpy as np
import pytest

from stvl_jax.errors import ConfigError, InputError
from stvl_jax.sharding import ShardingError, make_mesh
from stvl_jax.train.batches import place_host_batch, prepare_host_batch, split_targets
from stvl_jax.train.config import DataConfig, DistributedConfig, ModelSection
from stvl_jax.train.data import SyntheticSource
from stvl_jax.train.distributed import detect_mode, explicit_args


@pytest.fixture
def model_config():
    return ModelSection(config="qwen3vl_tiny").resolve_arch()


def source(model_config, batch_size=6, **synthetic):
    cfg = DataConfig.from_dict({"batch_size": batch_size, "synthetic": {"seq_len": 24, **synthetic}})
    return SyntheticSource(cfg, model_config, seed=1)


def test_split_targets_and_patch_bucket_trimming(model_config):
    batch = source(model_config).make(0)
    real = len(batch["pixel_values"])
    batch["pixel_values"] = np.concatenate([batch["pixel_values"], np.zeros((10, 1536), np.float32)])
    batch["num_valid_patches"] = np.int32(real)
    batch["activation_labels"] = np.full(batch["input_ids"].shape, -100, np.int32)
    model, targets = split_targets(batch)
    assert set(targets) == {"labels", "loss_weights", "activation_labels"}
    assert len(model["pixel_values"]) == real and "num_valid_patches" not in model
    with pytest.raises(InputError, match="no 'labels'"):
        split_targets({"input_ids": batch["input_ids"]})


def test_indivisible_batch_is_a_clear_error_or_padded(model_config):
    mesh = make_mesh({"data": 2, "fsdp": 4})
    batch = source(model_config).make(0)  # 6 rows on a data-parallel size of 8
    with pytest.raises(ShardingError, match="6 rows is not divisible by the data-parallel mesh size 8"):
        prepare_host_batch(model_config, batch, mesh)
    host = prepare_host_batch(model_config, batch, mesh, pad_batch_to_mesh=True)
    assert host.global_rows == 8 and host.inputs.input_ids.shape == (8, 24)
    assert (host.inputs.attention_mask[6:] == 0).all() and (host.targets["labels"][6:] == -100).all()
    assert (host.targets["loss_weights"][6:] == 0).all() and host.inputs.position_ids.shape == (3, 8, 24)
    np.testing.assert_array_equal(host.targets["labels"][:6], batch["labels"])
    inputs, targets = place_host_batch(host, mesh)
    assert inputs.input_ids.sharding.spec[0] == ("data", "fsdp") and targets["labels"].shape == (8, 24)
    assert inputs.vision.pixel_values.sharding.is_fully_replicated


def test_target_shape_mismatch_is_named(model_config):
    batch = source(model_config).make(0)
    batch["loss_weights"] = batch["loss_weights"][:, :-1]
    with pytest.raises(InputError, match="'loss_weights' has shape"):
        prepare_host_batch(model_config, batch, make_mesh({"fsdp": 2}, devices=jax.devices()[:2]))


def test_synthetic_source_is_deterministic_and_independent_of_process_count(model_config):
    whole = source(model_config, batch_size=8).make(3)
    halves = [SyntheticSource(DataConfig.from_dict({"batch_size": 8, "synthetic": {"seq_len": 24}}), model_config,
                              seed=1, process_index=p, process_count=2).make(3) for p in (0, 1)]
    for key in ("input_ids", "labels", "attention_mask", "pixel_values"):
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
    assert not np.array_equal(source(model_config, batch_size=8).make(4)["input_ids"], whole["input_ids"])
    src = source(model_config)
    next(src), next(src)
    state = src.get_state()
    third = next(src)
    src.set_state(state)
    np.testing.assert_array_equal(next(src)["input_ids"], third["input_ids"])
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        SyntheticSource(DataConfig(batch_size=8), model_config, seed=0, process_count=3)


def test_labels_are_the_second_copy_and_text_avoids_vision_ids(model_config):
    b = source(model_config, batch_size=3, image_grid=None, vocab_limit=10).make(0)
    ids, labels = b["input_ids"][0], b["labels"][0]
    n = 12
    np.testing.assert_array_equal(ids[:n], ids[n:])
    assert (labels[:n] == -100).all() and (labels[n:] == ids[n:]).all()
    vision = {model_config.image_token_id, model_config.video_token_id, model_config.vision_start_token_id,
              model_config.vision_end_token_id}
    allowed = [i for i in range(14) if i not in vision][:10]
    assert set(b["input_ids"][b["attention_mask"] == 1].tolist()) <= set(allowed)


def test_distributed_mode_detection():
    cfg = DistributedConfig()
    assert detect_mode(cfg, {}) == "none"
    assert detect_mode(cfg, {"JAX_COORDINATOR_ADDRESS": "h:1"}) == "explicit"
    assert detect_mode(cfg, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == "slurm"
    assert detect_mode(cfg, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) == "none"
    assert detect_mode(cfg, {"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == "tpu"
    assert detect_mode(cfg, {"TPU_WORKER_HOSTNAMES": "a"}) == "none"
    assert detect_mode(DistributedConfig(mode="none"), {"JAX_COORDINATOR_ADDRESS": "h:1"}) == "none"
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert explicit_args(cfg, env) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
    with pytest.raises(ConfigError, match="needs \\['num_processes', 'process_id'\\]"):
        explicit_args(cfg, {"JAX_COORDINATOR_ADDRESS": "h:1"})
    with pytest.raises(ConfigError, match="outside"):
        explicit_args(DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=2), {})


@pytest.mark.parametrize("preset", ["qwen3vl_tiny", "qwen25vl_tiny"])
def test_synthetic_video_rows_prepare_for_both_families(preset):
    config = ModelSection(config=preset).resolve_arch()
    src = SyntheticSource(DataConfig.from_dict({"batch_size": 2, "synthetic": {
        "seq_len": 64, "image_grid": [1, 4, 4], "video_grid": [3, 4, 4]}}), config, seed=0)
    batch = src.make(0)
    assert batch["pixel_values_videos"].shape == (2 * 48, config.vision.patch_dim)
    host = prepare_host_batch(config, batch, make_mesh({"fsdp": 2}, devices=jax.devices()[:2]))
    assert host.grids.tolist() == [[1, 4, 4]] * 2 + [[3, 4, 4]] * 2
    n_video_tokens = int((batch["input_ids"] == config.video_token_id).sum())
    assert n_video_tokens == 2 * 48 // config.vision.merge_unit


def test_vision_buckets_pad_the_packed_sequence(model_config):
    batch = source(model_config, batch_size=2, image_grid=[1, 6, 6], seq_len=64).make(0)  # 72 patches
    mesh = make_mesh({"fsdp": 2}, devices=jax.devices()[:2])
    plain = prepare_host_batch(model_config, batch, mesh)
    bucketed = prepare_host_batch(model_config, batch, mesh, vision_buckets=True)
    assert plain.inputs.vision.pixel_values.shape[0] == 72
    assert bucketed.inputs.vision.pixel_values.shape[0] == 80  # stvl_jax.nn.shapes.bucket(72)
    np.testing.assert_array_equal(bucketed.inputs.vision.pixel_values[:72], plain.inputs.vision.pixel_values)
