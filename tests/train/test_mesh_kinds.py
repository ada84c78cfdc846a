"""The trainer on a plain `jax.make_mesh` mesh (Explicit axes) and on `stvl_jax.make_mesh`'s Auto mesh: same
losses; and the block it prints at start naming the parameters the mesh does not divide."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from stvl_jax.sharding import make_mesh
from stvl_jax.train.trainer import Trainer

from .conftest import tiny_config

NAMES = ("data", "fsdp", "tensor")

MESHES = {
    "explicit": lambda: jax.make_mesh((1, 2, 4), NAMES),  # what a JAX user writes: Explicit axes
    "auto": lambda: make_mesh({"data": 1, "fsdp": 2, "tensor": 4}),
}

# The tiny preset on tensor=4: kv_heads (2) and the vision tower's heads (2) do not divide, heads (4) does.
EXPECTED_FALLBACKS = {
    "language_model/layers/self_attn/k_proj/kernel", "language_model/layers/self_attn/v_proj/kernel",
    "visual/blocks/attn/q_proj/kernel", "visual/blocks/attn/k_proj/kernel", "visual/blocks/attn/v_proj/kernel",
    "visual/blocks/attn/q_proj/bias", "visual/blocks/attn/k_proj/bias", "visual/blocks/attn/v_proj/bias",
    "visual/blocks/attn/proj/kernel",
}


@pytest.mark.slow  # two trainers, ~30 s: in .ci/run's slow tests/train run, out of the default suite
def test_train_step_on_both_mesh_kinds_and_the_sharding_report(tmp_path, capsys):
    losses = {}
    assert set(MESHES["explicit"]().axis_types) == {AxisType.Explicit}
    for kind in ("explicit", "auto"):
        cfg = tiny_config(tmp_path / kind, "steps=2", "checkpoint.save_final=false", "optim.warmup_steps=0")
        capsys.readouterr()
        summary = Trainer(cfg, mesh=MESHES[kind]()).run()
        losses[kind] = [r["loss"] for r in summary["history"]]
        out = capsys.readouterr().out
        head, *rest = out[out.index("sharding on mesh"):].splitlines()
        assert head.startswith("sharding on mesh {'data': 1, 'fsdp': 2, 'tensor': 4}: 9 parameter dimension(s)")
        listed = {line.split()[0] for line in rest[:9]}
        assert listed == EXPECTED_FALLBACKS, out
        assert all("not divisible by tensor (4) -> replicated" in line for line in rest[:9])
    assert len(losses["auto"]) == 2 and np.isfinite(losses["auto"]).all()
    np.testing.assert_allclose(losses["explicit"], losses["auto"], rtol=1e-6, atol=0)
