"""The training step's gradients equal PyTorch's: one jitted `train_step` with SGD(lr=1) on the tiny configs of
both families (images, videos, left padding, text-only rows) moves every parameter by exactly the gradient that
`loss.backward()` of the transformers model gives for HF's own masked LM loss (mean over labelled tokens).
The forward parity tests cannot catch a wrong backward (a stray stop_gradient, a custom VJP, a frozen path)."""

import numpy as np
import pytest

from qwen_vl_helpers import build_batch, tiny_hf_config, torch_model

pytestmark = pytest.mark.torch

ROWS = [
    [("text", 4), ("image", (1, 4, 6)), ("text", 3), ("video", (2, 4, 4)), ("text", 3)],
    [("text", 3), ("video", (3, 6, 4)), ("text", 4)],
    [("text", 9)],
    [("text", 2), ("image", (1, 4, 4)), ("text", 6)],
]


def _labels(batch, seed: int = 1) -> np.ndarray:
    """Text tokens of the rows as labels, a random third of them ignored (-100), padding and vision ignored.
    A row's first token is never a label: it would be predicted from a padding position, whose fully masked
    attention row has no meaningful gradient (PyTorch's additive mask passes one through, a masked select
    does not), and no pipeline labels it."""
    rng = np.random.default_rng(seed)
    real = batch["attention_mask"] == 1
    first = np.zeros_like(real)
    first[np.arange(len(real)), real.argmax(axis=1)] = True
    keep = real & ~first & (batch["mm_token_type_ids"] == 0) & (rng.random(real.shape) > 0.3)
    return np.where(keep, batch["input_ids"], -100)


def _torch_loss_and_grads(tm, batch, labels):
    import torch

    tb = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    tm.zero_grad()
    loss = tm(**tb, labels=torch.from_numpy(labels)).loss
    loss.backward()
    loss = loss.item()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy().copy()
             for n, p in tm.named_parameters(remove_duplicate=False)}
    return loss, grads


# tied embeddings through qwen3_vl, untied through qwen2_5_vl; qwen2_5_vl tied is slow (suite time budget)
@pytest.mark.parametrize("family,tie", [("qwen3_vl", True), pytest.param("qwen2_5_vl", True, marks=pytest.mark.slow),
                                      ("qwen2_5_vl", False)])
def test_train_step_gradients_equal_torch(family, tie):
    import jax
    import jax.numpy as jnp
    import optax

    from converters.qwen_vl_config import from_hf_dict
    from converters.qwen_vl_convert import params_from_hf
    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.batches import place_host_batch, prepare_host_batch
    from stvl_jax.train.config import GROUP_NAMES, LossConfig
    from stvl_jax.train.losses import get_loss
    from stvl_jax.train.state import ModelSpec, abstract_train_state, init_train_state, train_state_shardings
    from stvl_jax.train.step import make_step_fns

    hf_cfg = tiny_hf_config(family, tie=tie)
    tm = torch_model(hf_cfg)
    batch = build_batch(hf_cfg, ROWS, pad_side="left")
    labels = _labels(batch)
    torch_loss, torch_grads = _torch_loss_and_grads(tm, batch, labels)

    config = from_hf_dict(tm.config.to_dict())
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    start = params_from_hf(config, sd.keys(), sd.__getitem__)
    expected = params_from_hf(config, torch_grads.keys(), torch_grads.__getitem__)

    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    spec = ModelSpec.create(config, trainable_groups=GROUP_NAMES)
    tx = optax.sgd(1.0)
    shardings = train_state_shardings(abstract_train_state(spec, tx), spec, mesh)
    param_shardings = {**shardings.params, **shardings.frozen}
    placed = {k: jax.device_put(jnp.asarray(v), param_shardings[k]) for k, v in start.items()}
    state = init_train_state(spec, tx, mesh, 0, params=placed)
    assert not state.frozen
    loss_cfg = LossConfig(kind="lm")
    steps = make_step_fns(spec, tx, get_loss(loss_cfg), loss_cfg, shardings)
    inputs, targets = place_host_batch(prepare_host_batch(config, {**batch, "labels": labels}, mesh), mesh)
    with jax.set_mesh(mesh):
        new, metrics = steps.train_step(state, inputs, targets)

    assert abs(float(metrics["loss"]) - torch_loss) < 1e-5 * max(1.0, abs(torch_loss))
    assert set(new.params) == set(expected)
    worst = []
    for key, g in expected.items():
        ours = start[key] - np.asarray(new.params[key])  # SGD(1): the step subtracts the gradient
        scale = np.abs(g).max()
        assert scale > 0, f"{key}: torch gives no gradient, the batch does not reach it"
        err = np.abs(ours - g).max() / scale
        worst.append((err, key))
    worst.sort(reverse=True)
    assert worst[0][0] < 1e-4, f"largest relative gradient differences: {worst[:5]}"
