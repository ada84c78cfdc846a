"""The jitted training step: forward, loss, gradients of the trainable parameters only, AdamW update.

    steps = make_step_fns(spec, tx, loss_fn, loss_cfg, state_shardings)
    state, metrics = steps.train_step(state, inputs, targets)          # grad_accum_steps == 1: one jit
    acc = steps.zero_acc(state); acc = steps.accumulate(acc, state, inputs, targets)  # per micro-batch
    state, metrics = steps.apply(state, acc)                           # then one update

Gradients are of the *sum* of token losses; the update divides by the number of loss tokens of the whole
optimizer batch, so accumulating k micro-batches equals one batch k times larger (same loss normalisation as
HF's `num_items_in_batch`). Micro-batches may differ in shape (video grids), so accumulation is a host loop over
one compiled `accumulate` per shape rather than a `lax.scan`.

metrics (device scalars): loss (weighted mean over loss tokens), grad_norm (before clipping), tokens
(loss tokens), plus the loss function's extra sums divided by tokens.

A step whose loss or gradient norm is NaN/inf leaves params and optimizer state unchanged (only the step
counter advances): the trainer then stops or counts the skip (`optim.non_finite`), and a non-finite update can
never reach the state or a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from stvl_jax.models.qwen_vl.inputs import ModelInputs
from stvl_jax.nn.lora import set_dropout_keys
from stvl_jax.train.config import LossConfig
from stvl_jax.train.losses import ForwardOutput, LossFn, LossOutput
from stvl_jax.train.state import ModelSpec, TrainState


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GradAccumulator:
    grads: dict[str, jax.Array]  # sum over micro-batches of d(sum of token losses)/d params
    loss: LossOutput  # summed totals
    micro: jax.Array | int = 0  # () int32: micro-batches accumulated (each draws its own LoRA dropout masks)


def _loss_and_grads(spec: ModelSpec, loss_fn: LossFn, loss_cfg: LossConfig, state: TrainState,
                    inputs: ModelInputs, targets: Mapping[str, jax.Array], micro=0):
    frozen = jax.lax.stop_gradient(state.frozen)

    def objective(trainable):
        model = spec.merge({**trainable, **frozen})
        if spec.lora is not None and spec.lora.dropout > 0:  # masks: a function of (run rng, step, micro-batch)
            set_dropout_keys(model, jax.random.fold_in(jax.random.fold_in(state.rng, state.step), micro))
        _, hidden, _ = model.forward(inputs, return_hidden=True, compute_logits=False)
        out = loss_fn(ForwardOutput(hidden, model.logits, model.token_logits), targets, loss_cfg)
        return out.total, out

    (_, out), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return grads, out


def _apply(tx: optax.GradientTransformation, state: TrainState, grads, loss: LossOutput):
    tokens = jnp.maximum(loss.tokens, 1.0)
    grads = jax.tree.map(lambda g: g / tokens, grads)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss.total) & jnp.isfinite(grad_norm)
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), (params, opt_state),
                                     (state.params, state.opt_state))
    new_state = dataclasses.replace(state, step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss.total / tokens, "grad_norm": grad_norm, "tokens": loss.tokens}
    metrics.update({k: v / tokens for k, v in loss.metrics.items()})
    return new_state, metrics


@dataclasses.dataclass(frozen=True)
class StepFns:
    train_step: Callable  # (state, inputs, targets) -> (state, metrics); donates state
    zero_acc: Callable  # state -> GradAccumulator of zeros
    accumulate: Callable  # (acc, state, inputs, targets) -> acc; donates acc
    apply: Callable  # (state, acc) -> (state, metrics); donates state


def make_step_fns(spec: ModelSpec, tx: optax.GradientTransformation, loss_fn: LossFn, loss_cfg: LossConfig,
                  shardings: TrainState) -> StepFns:
    """Jitted step functions; state in/out shardings are pinned to `shardings` (from the rules table)."""
    grad_shardings = shardings.params

    def train_step(state, inputs, targets):
        grads, out = _loss_and_grads(spec, loss_fn, loss_cfg, state, inputs, targets)
        grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
        return _apply(tx, state, grads, out)

    def zero_acc(state):
        zeros = jax.tree.map(jnp.zeros_like, state.params)
        return GradAccumulator(jax.lax.with_sharding_constraint(zeros, grad_shardings),
                               loss_fn_zero_metrics(spec, loss_fn, loss_cfg), jnp.zeros((), jnp.int32))

    def accumulate(acc, state, inputs, targets):
        grads, out = _loss_and_grads(spec, loss_fn, loss_cfg, state, inputs, targets, acc.micro)
        grads = jax.tree.map(jnp.add, acc.grads, grads)
        return GradAccumulator(jax.lax.with_sharding_constraint(grads, grad_shardings),
                               jax.tree.map(jnp.add, acc.loss, out), acc.micro + 1)

    def apply(state, acc):
        return _apply(tx, state, acc.grads, acc.loss)

    # accumulators are pinned by the constraints inside; metrics are replicated so every process can read them
    replicated = jax.sharding.NamedSharding(shardings.step.mesh, jax.sharding.PartitionSpec())
    return StepFns(
        train_step=jax.jit(train_step, out_shardings=(shardings, replicated), donate_argnums=(0,)),
        zero_acc=jax.jit(zero_acc),
        accumulate=jax.jit(accumulate, donate_argnums=(0,)),
        apply=jax.jit(apply, out_shardings=(shardings, replicated), donate_argnums=(0,)),
    )


def loss_fn_zero_metrics(spec: ModelSpec, loss_fn: LossFn, loss_cfg: LossConfig) -> LossOutput:
    """A zero LossOutput with the loss function's metric keys (traced on a 1-token dummy batch)."""
    v = spec.config.text.vocab_size
    dummy = jax.eval_shape(lambda: loss_fn(jnp.zeros((1, 2, v)), {"labels": jnp.zeros((1, 2), jnp.int32)},
                                           loss_cfg))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dummy)
