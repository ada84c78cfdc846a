"""The jitted step: 1 device vs a 2x2x2 mesh, real freezing, exact gradient accumulation, no gradients for
frozen groups."""

import jax
import numpy as np
import pytest

from stvl_jax.sharding import make_mesh
from stvl_jax.train.trainer import Trainer

from .conftest import tiny_config

STEPS = 4


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same 4 steps on 1 device and on data 2 x fsdp 2 x tensor 2; frozen params captured before training."""
    out = {}
    for name, shape, devices in (("one", {"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]),
                                 ("mesh", {"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])):
        d = tmp_path_factory.mktemp(name)
        cfg = tiny_config(d, f"steps={STEPS}", "checkpoint.save_final=false", "checkpoint.every=1000",
                          "optim.warmup_steps=0")
        trainer = Trainer(cfg, mesh=make_mesh(shape, devices=devices))
        before = {k: np.asarray(v) for k, v in trainer.state.all_params().items()}
        frozen_keys = set(trainer.state.frozen)
        summary = trainer.run()
        out[name] = dict(trainer=trainer, before=before, frozen_keys=frozen_keys, summary=summary)
    return out


def test_one_device_and_2x2x2_mesh_give_the_same_losses(two_runs):
    one = [r["loss"] for r in two_runs["one"]["summary"]["history"]]
    mesh = [r["loss"] for r in two_runs["mesh"]["summary"]["history"]]
    assert len(one) == STEPS and one[-1] < one[0]
    np.testing.assert_allclose(mesh, one, rtol=2e-6, atol=0)
    g1 = [r["grad_norm"] for r in two_runs["one"]["summary"]["history"]]
    g8 = [r["grad_norm"] for r in two_runs["mesh"]["summary"]["history"]]
    np.testing.assert_allclose(g8, g1, rtol=1e-5)
    # the state really was sharded: a decoder kernel split over fsdp and tensor
    sharding = two_runs["mesh"]["trainer"].state.params["language_model/layers/mlp/up_proj/kernel"].sharding
    assert len(sharding.device_set) == 8 and sharding.spec[1:] == ("fsdp", "tensor")


def test_frozen_parameters_are_bit_identical_after_training(two_runs):
    for run in two_runs.values():
        state = run["trainer"].state
        assert run["frozen_keys"] and all(k.startswith("visual/") and "merger" not in k for k in run["frozen_keys"])
        for key in run["frozen_keys"]:
            assert np.array_equal(np.asarray(state.frozen[key]), run["before"][key]), key
        changed = [k for k in state.params if not np.array_equal(np.asarray(state.params[k]), run["before"][k])]
        assert len(changed) == len(state.params)  # every trainable parameter moved
        # no optimizer state for frozen parameters
        keys = {getattr(p[-1], "key", None) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]}
        assert not keys & run["frozen_keys"] and set(state.params) <= keys


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    """Two micro-batches of 4 rows accumulate exactly the gradient sum and token count of the 8-row batch."""
    from stvl_jax.train.batches import place_host_batch, prepare_host_batch
    from stvl_jax.train.data import SyntheticSource

    cfg = tiny_config(tmp_path, "data.synthetic.image_grid=null", "optim.warmup_steps=0",
                      "optim.grad_accum_steps=2")
    trainer = Trainer(cfg, mesh=make_mesh({"fsdp": 2}, devices=jax.devices()[:2]))
    batch = SyntheticSource(cfg.data, trainer.model_config, seed=0).make(0)

    def place(b):
        return place_host_batch(prepare_host_batch(trainer.model_config, b, trainer.mesh), trainer.mesh)

    fns, state = trainer.fns, trainer.state
    with jax.set_mesh(trainer.mesh):
        full = fns.accumulate(fns.zero_acc(state), state, *place(batch))
        parts = fns.zero_acc(state)
        for i in range(2):
            parts = fns.accumulate(parts, state, *place({k: v[i::2] for k, v in batch.items()}))
    assert float(parts.loss.tokens) == float(full.loss.tokens) > 0
    np.testing.assert_allclose(float(parts.loss.total), float(full.loss.total), rtol=1e-6)
    for k in full.grads:  # fp32 sums of ~300 token gradients in a different order
        want = np.asarray(full.grads[k])
        np.testing.assert_allclose(np.asarray(parts.grads[k]), want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                   err_msg=k)
    # and the update divides by the tokens of the whole optimizer batch
    with jax.set_mesh(trainer.mesh):
        _, metrics = fns.apply(state, parts)
    np.testing.assert_allclose(float(metrics["loss"]), float(full.loss.total / full.loss.tokens), rtol=1e-6)


@pytest.mark.slow
def test_frozen_groups_are_not_differentiated(tmp_path):
    """Compiled FLOPs: freezing the vision tower removes its backward from the step. (XLA's cost analysis
    counts a scanned layer body once, so the removed amount is compared with 1x, not 2x, the forward.)"""
    from stvl_jax.train.batches import place_host_batch, prepare_host_batch
    from stvl_jax.train.data import SyntheticSource

    flops = {}
    for frozen in (True, False):
        cfg = tiny_config(tmp_path / str(frozen), f"optim.groups.vision.train={str(not frozen).lower()}",
                          "data.synthetic.image_grid=[2,8,8]")
        trainer = Trainer(cfg, mesh=make_mesh({"fsdp": 1}, devices=jax.devices()[:1]))
        batch = SyntheticSource(cfg.data, trainer.model_config, seed=0).make(0)
        inputs, targets = place_host_batch(prepare_host_batch(trainer.model_config, batch, trainer.mesh),
                                           trainer.mesh)
        with jax.set_mesh(trainer.mesh):
            compiled = trainer.fns.train_step.lower(trainer.state, inputs, targets).compile()
        flops[frozen] = compiled.cost_analysis()["flops"]
    from stvl_jax.train.flops import KernelSizes, forward_flops

    fwd = forward_flops(trainer.model_config, KernelSizes.from_config(trainer.model_config), [1],
                        np.asarray([[2, 8, 8]] * 8))["vision"]
    # training the tower adds its weight and activation gradients (2x its forward, less the pixel gradient)
    assert flops[False] - flops[True] > fwd
