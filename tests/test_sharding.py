"""The logical-axis rules table, mesh construction, and sharded execution on a simulated 2x2x2 CPU mesh."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from stvl_jax.sharding import (
    LOGICAL_AXIS_RULES, ShardingError, describe_shardings, logical_to_spec, make_mesh, place_on_mesh,
)


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) == 8, "tests/conftest.py must give 8 fake CPU devices"
    return make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def test_rules_map_logical_names(mesh):
    assert logical_to_spec(("embed", "mlp"), (8, 8), mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("act_batch", "act_len", "act_embed"), (8, 3, 5), mesh) == P(("data", "fsdp"), None, None)
    assert logical_to_spec((None, "vocab"), (3, 8), mesh) == P(None, "tensor")


def test_indivisible_dimension_is_replicated(mesh):
    # 3 heads on a 2-way tensor axis: replicate instead of failing deep inside XLA
    assert logical_to_spec(("embed", "heads", "head_dim"), (8, 3, 16), mesh) == P("fsdp", None, None)
    # batch 2 over data x fsdp = 4: keep the 'data' part only
    assert logical_to_spec(("act_batch",), (2,), mesh) == P("data")


def test_two_logical_axes_on_one_mesh_axis_is_an_error(mesh):
    with pytest.raises(ShardingError, match="both map to mesh axis 'tensor'"):
        logical_to_spec(("mlp", "heads"), (8, 8), mesh)


def test_unknown_logical_axis_is_an_error():
    with pytest.raises(ShardingError, match="no rule"):
        logical_to_spec(("embedd",))


def test_make_mesh_shapes():
    assert dict(make_mesh().shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert dict(make_mesh({"tensor": 2, "data": -1}).shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    with pytest.raises(ShardingError, match="needs 16 devices"):
        make_mesh({"data": 4, "fsdp": 4})
    with pytest.raises(ShardingError, match="unknown mesh axes"):
        make_mesh({"model": 8})


def test_every_rule_targets_known_mesh_axes():
    for name, axes in LOGICAL_AXIS_RULES.items():
        assert set(axes) <= {"data", "fsdp", "tensor"}, name


@pytest.mark.torch
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_same_logits_on_2x2x2_mesh_as_one_device(family, mesh):
    pytest.importorskip("torch")
    from qwen_vl_helpers import build_batch, our_model_from_torch, tiny_hf_config, torch_model

    cfg = tiny_hf_config(family)
    ours = our_model_from_torch(torch_model(cfg))
    rows = [[("text", 5), ("image", (1, 4, 6)), ("text", 4)], [("text", 3), ("video", (2, 4, 4)), ("text", 2)],
            [("text", 6)], [("image", (1, 2, 4)), ("text", 3)]]
    batch = build_batch(cfg, rows)
    single = np.asarray(ours(**batch).logits)
    place_on_mesh(ours, mesh)
    report = describe_shardings(nnx.state(ours), mesh)
    assert report.replicated_fraction < 0.05, report
    kernel = ours.language_model.layers.mlp.gate_proj.kernel.get_value()
    assert kernel.sharding.spec == P(None, "fsdp", "tensor")  # (layers, embed, mlp)
    out = ours(**batch).logits
    assert len(out.sharding.device_set) == 8
    # the project's fp32 logits tolerance; sharded reductions sum in a different order
    np.testing.assert_allclose(np.asarray(out), single, atol=1e-4)
