"""Why the tiny random-init LLM does not bind a question's word to what it is shown (research/notes/
streamo_learnability.md, "the binding plateau"): dense text tasks on the demo's LLM (tiny Qwen2.5-VL, text
only), trained by the project's step (`stvl_jax.train.step`, AdamW with warmup + cosine, next-token CE on the
answer tokens only).

Each sequence is a query word then `--lines` lines of two words, each line followed by its answer:

    Q q SEP  [LINE a b ANS y] x lines
    copy_line   y = a               a lookup two tokens back
    copy_query  y = q               a lookup of the query, far back
    member      y = YES iff q is a or b (else NO; half the lines hold q)

`member` is what a Streamo or STRIDE question about "the red block" needs at every second, here with an answer
at every line instead of one decisive second per stream. Neither q nor a line word alone predicts y (each is
independent of it): y is an equality of two tokens, an XOR for a gradient, with no first-order signal at a small
initialisation. The two copy tasks have one. The script prints the held-out answer accuracy per task and
`text.initializer_range`, and the first step at which it reached `--target`.

    python -m research.probes.binding_plateau                                  # defaults: 8 words, 600 steps
    python -m research.probes.binding_plateau --tasks member --init 0.02,0.088 --seeds 0,1,2 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

Q, SEP, LINE, ANS, YES, NO = 20, 21, 22, 23, 24, 25  # ids of the tiny vocabulary that stand for markers
WORD0 = 100  # by default the words are ids WORD0 .. WORD0 + words - 1
TASKS = ("copy_line", "copy_query", "member")
IGNORE = -100


def make_batch(task: str, rng: np.random.Generator, batch: int, lines: int, words: np.ndarray):
    """words: the word ids. -> (input_ids (B, L) int32, labels (B, L) int32: the answer id at each answer
    position, else -100)."""
    ids, labels = [], []
    for _ in range(batch):
        q = int(rng.choice(words))
        others = words[words != q]
        row, lab = [Q, q, SEP], [IGNORE] * 3
        for _ in range(lines):
            has = rng.random() < 0.5
            pair = [q, int(rng.choice(others))] if has else [int(w) for w in rng.choice(others, 2)]
            rng.shuffle(pair)
            y = {"copy_line": pair[0], "copy_query": q, "member": YES if has else NO}[task]
            row += [LINE, *pair, ANS, y]
            lab += [IGNORE] * 4 + [y]
        ids.append(row)
        labels.append(lab)
    return np.asarray(ids, np.int32), np.asarray(labels, np.int32)


def run(task: str, init: float, seed: int, words: np.ndarray, a) -> dict:
    """Train the tiny LLM on `task` from a fresh init; -> {"curve": [(step, held-out accuracy)], "reached": step,
    "model": the trained nnx model}."""
    import jax
    import jax.numpy as jnp

    from stvl_jax.models.qwen_vl.inputs import ModelInputs
    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.config import LossConfig, OptimConfig
    from stvl_jax.train.losses import get_loss
    from stvl_jax.train.optim import make_optimizer
    from stvl_jax.train.state import ModelSpec, abstract_train_state, init_train_state, train_state_shardings
    from stvl_jax.train.step import make_step_fns

    config = load_model_config(a.model, [f"text.initializer_range={init}"])
    if words.max() >= config.text.vocab_size:
        raise SystemExit(f"word id {words.max()} is outside the vocabulary of {config.text.vocab_size}")
    spec = ModelSpec.create(config, trainable_groups=("llm", "embed"))
    optim = OptimConfig(lr=a.lr, warmup_steps=a.warmup)
    tx = make_optimizer(optim, spec.split(spec.shapes())[0], a.steps, a.warmup)
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    state = init_train_state(spec, tx, mesh, seed)
    loss_cfg = LossConfig(kind="lm")
    steps = make_step_fns(spec, tx, get_loss(loss_cfg), loss_cfg,
                          train_state_shardings(abstract_train_state(spec, tx), spec, mesh))

    def inputs(ids):
        b, n = ids.shape
        pos = np.broadcast_to(np.arange(n, dtype=np.int32), (3, b, n))
        return ModelInputs(jnp.asarray(ids), jnp.ones((b, n), jnp.int32), jnp.asarray(pos), None)

    @jax.jit
    def answers(params, frozen, inp):
        logits, _, _ = spec.merge({**params, **frozen}).forward(inp)
        return logits.argmax(-1)

    rng, held_rng = np.random.default_rng(seed), np.random.default_rng(10_000 + seed)
    held_ids, held_labels = make_batch(task, held_rng, a.eval_batch, a.lines, words)
    held_in, at = inputs(held_ids), held_labels[:, 1:] != IGNORE

    def accuracy(state) -> float:
        pred = np.asarray(answers(state.params, state.frozen, held_in))[:, :-1]
        return float((pred == held_labels[:, 1:])[at].mean())

    curve, reached = [], None
    with jax.set_mesh(mesh):
        for step in range(1, a.steps + 1):
            ids, labels = make_batch(task, rng, a.batch, a.lines, words)
            state, _ = steps.train_step(state, inputs(ids), {"labels": jnp.asarray(labels)})
            if step % a.eval_every == 0 or step == a.steps:
                acc = accuracy(state)
                curve.append((step, acc))
                if reached is None and acc >= a.target:
                    reached = step
    return {"curve": curve, "reached": reached, "model": spec.merge({**state.params, **state.frozen})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--init", default="0.02,0.088", help="text.initializer_range values (HF default 0.02; "
                    "1/sqrt(128) = 0.088 for the tiny LLM's width)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lines", type=int, default=16)
    ap.add_argument("--words", type=int, default=8)
    ap.add_argument("--word-ids", default=None, help="comma-separated token ids to use as the words instead "
                    f"(e.g. the tiny tokenizer's colour words); default {WORD0} .. {WORD0} + words - 1")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--model", default="qwen25vl_tiny")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--out", default=None, help="write the curves here (JSON)")
    ap.add_argument("--save", default=None, metavar="DIR", help="save the last run's model as an stvl-jax "
                    "checkpoint (a start for an SFT: `model.checkpoint=DIR`)")
    a = ap.parse_args()
    tasks = a.tasks.split(",")
    if set(tasks) - set(TASKS):
        ap.error(f"--tasks: unknown {sorted(set(tasks) - set(TASKS))}; known {list(TASKS)}")
    try:
        inits = [float(x) for x in a.init.split(",")]
        seeds = [int(x) for x in a.seeds.split(",")]
        words = (np.array([int(x) for x in a.word_ids.split(",")]) if a.word_ids
                 else WORD0 + np.arange(a.words))
    except ValueError as e:
        ap.error(f"--init / --seeds / --word-ids: {e}")
    if len(set(words.tolist())) != len(words) or len(words) < 3 or (words <= NO).any():
        ap.error(f"the words must be at least 3 distinct ids above the markers' {NO}, got {words.tolist()}")
    from benchmarks.common import machine

    print(f"{machine()}; {a.steps} steps of {a.batch} x {a.lines} answers, {len(words)} words, lr {a.lr}",
          flush=True)
    print(f"{'task':<11} {'init':>6} {'seed':>4}  {'reached ' + str(a.target):>12}  {'final':>5}  "
          f"accuracy every {a.eval_every} steps", flush=True)
    results = []
    for task in tasks:
        for init in inits:
            for seed in seeds:
                t = time.perf_counter()
                r = run(task, init, seed, words, a)
                model = r.pop("model")
                reached = "-" if r["reached"] is None else str(r["reached"])
                print(f"{task:<11} {init:>6} {seed:>4}  {reached:>12}  {r['curve'][-1][1]:>5.3f}  "
                      + " ".join(f"{acc:.2f}" for _, acc in r["curve"])
                      + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
                results.append({"task": task, "init": init, "seed": seed, **r})
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "results": results}, f, indent=1)
    if a.save:
        from stvl_jax.models.qwen_vl.loading import save_model

        print(f"saved {task}, init {init}, seed {seed}: {save_model(model, None, a.save, overwrite=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
