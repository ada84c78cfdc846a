"""The Qwen3-VL parts of `stvl bench gpu`: train-step MFU, decode speed, and the correctness checks.

Models are built from the packaged presets with random weights (no download). The train step is the trainer's
own (`stvl_jax.train.trainer.Trainer` on the packaged `qwen3vl_2b_mfu` config, its synthetic batches), timed on
one placed batch so that host batch generation does not enter the figure.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._gpu_part import HBM_BYTES_PER_S, PEAK_SOURCE, lookup
from benchmarks.common import random_qwen_vl
from stvl_jax import generate
from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.nn.params import flat_params
from stvl_jax.sharding import make_mesh
from stvl_jax.train.batches import place_host_batch, prepare_host_batch
from stvl_jax.train.config import load_train_config
from stvl_jax.train.data import SyntheticSource
from stvl_jax.train.flops import forward_flops, train_step_flops
from stvl_jax.train.state import ModelSpec, init_params_fn
from stvl_jax.train.trainer import Trainer

MFU_ANCHOR = "49.7% (MaxText Llama2-7B, 8xH100); target >= 55%"
_OUT_DIR = None


def train_config(sz, seq: int, rows: int, grid, overrides=()):
    """The packaged `qwen3vl_2b_mfu` train config at the suite's model preset and shapes."""
    global _OUT_DIR
    if _OUT_DIR is None:  # the trainer needs an out_dir; nothing is written there (no checkpoint, no log)
        _OUT_DIR = tempfile.TemporaryDirectory(prefix="stvl_gpu_bench_")
    return load_train_config("qwen3vl_2b_mfu", [
        f"model.config={sz.lm_preset}", f"out_dir={_OUT_DIR.name}", f"data.batch_size={rows}",
        f"data.synthetic.seq_len={seq}", f"data.synthetic.video_grid=[{','.join(map(str, grid))}]",
        "logging.progress=false", "logging.tensorboard=false", "logging.plot=false",
        "data.pad_batch_to_mesh=true", *overrides])  # masked rows on a mesh larger than the batch (not counted)


def placed_batch(trainer, data_cfg):
    """Synthetic batch 0 of `data_cfg`, prepared and placed on the trainer's mesh -> (inputs, targets, host)."""
    batch = SyntheticSource(data_cfg, trainer.model_config, seed=0).make(0)
    host = prepare_host_batch(trainer.model_config, batch, trainer.mesh,
                              pad_batch_to_mesh=trainer.cfg.data.pad_batch_to_mesh)
    return (*place_host_batch(host, trainer.mesh), host)


def train(sz, out) -> None:
    seq0, rows0 = sz.train_shapes[0]
    trainer = Trainer(train_config(sz, seq0, rows0, sz.train_video_grid))
    kind = jax.devices()[0].device_kind
    peak = trainer.peak
    source = (lookup(PEAK_SOURCE, kind) or (None,))[0] or (
        f"{kind}: {peak / 1e12:.0f} TFLOP/s (stvl_jax.train.flops.PEAK_FLOPS)" if peak else None)
    for seq, rows in sz.train_shapes:
        name = sz.train_name(seq, rows)
        with out.guard(name):
            _train_shape(sz, out, trainer, name, seq, rows, source)


def _train_shape(sz, out, trainer, name: str, seq: int, rows: int, source) -> None:
    """Time the trainer's step on one placed synthetic batch of `rows` x `seq` tokens -> one MFU figure."""
    inputs, targets, host = placed_batch(trainer, train_config(sz, seq, rows, sz.train_video_grid).data)
    flops = train_step_flops(forward_flops(trainer.model_config, trainer.kernels, host.row_lengths, host.grids),
                             trainer.multipliers)
    times = []
    with jax.set_mesh(trainer.mesh):
        t0 = time.perf_counter()
        trainer.state, metrics = trainer.fns.train_step(trainer.state, inputs, targets)  # compiles
        loss = float(metrics["loss"])
        compile_s = time.perf_counter() - t0
        for _ in range(sz.train_reps):
            if times and out.left() < 2 * times[-1] + 5:
                break
            t0 = time.perf_counter()
            trainer.state, metrics = trainer.fns.train_step(trainer.state, inputs, targets)
            float(metrics["loss"])
            times.append(time.perf_counter() - t0)
    if not times:
        out.emit(name, None, "", MFU_ANCHOR, status="timed out (compiled, no timed step)")
        return
    t = statistics.median(times)
    tokens = float(host.row_lengths.sum())
    n_dev, peak = trainer.mesh.devices.size, trainer.peak
    mfu = 100 * flops / t / (n_dev * peak) if peak else None
    note = (f"{1e3 * t:.0f} ms/step (median of {len(times)}), {tokens / t:,.0f} tokens/s, {flops / 1e12:.2f} "
            f"TFLOP/step, first step {compile_s:.0f} s, loss {loss:.3f}; peak: {source or 'unknown device'}")
    out.emit(name, mfu, "%", MFU_ANCHOR, note=note, status="ok" if peak else "ok (no peak FLOP/s for this "
             "device: MFU not defined)", step_s=t, tokens=tokens, flops=flops, devices=n_dev)


def _text_weight_bytes(model) -> int:
    """Bytes of the parameters a decode step reads: everything but the vision tower (the tied embedding table
    is read once per step as the LM head; the input lookup reads B rows of it)."""
    return sum(v.get_value().nbytes for k, v in flat_params(model).items() if not k.startswith("visual/"))


def decode(sz, out) -> None:
    config = load_model_config(sz.lm_preset)
    model = random_qwen_vl(config, dtype=jnp.bfloat16)
    bw = lookup(HBM_BYTES_PER_S, jax.devices()[0].device_kind)
    anchor = f"HBM roofline ({bw[1]})" if bw else "HBM roofline (bandwidth of this device unknown)"
    for b in sz.decode_batches:
        name = f"decode, batch {b}"
        if out.left() < 10:
            out.emit(name, None, "", anchor, status="timed out (no time left before compiling)")
            continue
        with out.guard(name):
            _decode_batch(sz, out, model, name, b, bw, anchor)


def _decode_batch(sz, out, model, name: str, b: int, bw, anchor: str) -> None:
    """Greedy generation of `decode_new` tokens for `b` rows of a short text prompt -> tokens/s and the fraction
    of the HBM roofline."""
    t = model.config.text
    rng = np.random.default_rng(b)
    batch = {"input_ids": rng.integers(20, min(t.vocab_size, 5000), (b, sz.decode_prompt)).astype(np.int32),
             "attention_mask": np.ones((b, sz.decode_prompt), np.int32)}

    def run():
        return generate(model, batch, max_new_tokens=sz.decode_new, eos_token_id=())

    t0 = time.perf_counter()
    run()  # compiles
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(sz.decode_reps):
        if times and out.left() < 2 * times[-1] + 3:
            break
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    secs = min(times)
    tok_s = b * sz.decode_new / secs
    # bytes a step must read at least: the text weights + K and V of the mean context of the decode
    weights = _text_weight_bytes(model)
    ctx = sz.decode_prompt + sz.decode_new / 2
    kv = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * ctx * b * 2  # bf16 cache
    roof = b * bw[0] / (weights + kv) if bw else None
    frac = f"{100 * tok_s / roof:.0f}% of the roofline ({roof:,.0f} tokens/s)" if roof else "roofline n/a"
    out.emit(name, tok_s, "tokens/s", anchor,
             note=f"{frac}; {sz.decode_new} new tokens after a {sz.decode_prompt}-token prompt (prefill "
                  f"included), best of {len(times)}; {weights / 1e9:.2f} GB weights + {kv / 1e9:.2f} GB KV "
                  f"per step; first call {compile_s:.0f} s",
             roofline_fraction=(tok_s / roof) if roof else None, seconds=secs)


def _short_batch(sz, trainer_model_config):
    """A short HF-style batch (the train config's synthetic rows), without the training targets."""
    cfg = train_config(sz, sz.check_len, sz.check_rows, sz.check_video_grid).data
    batch = SyntheticSource(cfg, trainer_model_config, seed=1).make(0)
    return {k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}


def _logits(spec, params, batch):
    return np.asarray(spec.merge(params)(**batch).logits, np.float32)


def check(sz, out) -> None:
    config = load_model_config(sz.lm_preset)
    groups = ("vision", "merger", "llm", "embed")
    spec32 = ModelSpec.create(config, trainable_groups=groups, dtype=jnp.float32, param_dtype=jnp.float32)
    spec16 = ModelSpec.create(config, trainable_groups=groups, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    params = jax.jit(init_params_fn(spec32))(jax.random.PRNGKey(0))
    batch = _short_batch(sz, config)
    real = batch["attention_mask"].astype(bool)
    # "fp32" means fp32: on GPUs XLA's default precision runs fp32 matmuls as TF32
    with jax.default_matmul_precision("highest"):
        l32 = _logits(spec32, params, batch)[real]
        name = "fp32 logits, device vs CPU"
        with out.guard(name):
            _cpu_parity(out, name, spec32, params, batch, real, l32)
    name = "bf16 vs fp32 logits"
    with out.guard(name):
        l16 = _logits(spec16, params, batch)[real]
        rel = float(np.linalg.norm(l16 - l32) / np.linalg.norm(l32))
        top1 = float((l16.argmax(-1) == l32.argmax(-1)).mean())
        ok = np.isfinite(l16).all()
        out.emit(name, rel, "rel. L2 error", "reported (no bound: bf16 keeps 8 significant bits)",
                 status="ok" if ok else "failed: non-finite bf16 logits",
                 note=f"top-1 agreement {100 * top1:.1f}%, max |d logit| {np.abs(l16 - l32).max():.3f} over "
                      f"{real.sum()} tokens", top1_agreement=top1)
    del params
    with out.guard("sharded vs 1 device (grads)"):
        sharded_check(sz, out)


def _cpu_parity(out, name, spec32, params, batch, real, l32) -> None:
    """The device's fp32 logits against the CPU backend's, same parameters and batch."""
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:
        out.skip(name, "no CPU backend in this process (JAX_PLATFORMS)")
        return
    with jax.default_device(cpu):
        lcpu = _logits(spec32, jax.device_put(params, cpu), batch)[real]
    d = float(np.abs(l32 - lcpu).max())
    tol = 1e-4 * max(1.0, float(np.abs(lcpu).max()))
    same = jax.devices()[0].platform == "cpu"
    out.emit(name, d, "max |d logit|", f"<= {tol:.1e} (1e-4 x max(1, max |logit|))",
             status=("ok" if d <= tol else "failed: above the bound"),
             note=f"{real.sum()} tokens, max |logit| {np.abs(lcpu).max():.2f}"
                  + ("; the device is the CPU (smoke): trivially equal" if same else ""))


def sharded_check(sz, out) -> None:
    """One gradient accumulation (fp32, highest precision) on a mesh over every device vs on one device, from
    the same parameters and batch: summed gradients equal to 1e-5 of the largest gradient entry."""
    name = "sharded vs 1 device (grads)"
    n = len(jax.devices())
    if n < 2:
        out.skip(name, "1 device")
        return
    rows = n * max(1, sz.check_rows // n)
    cfg = train_config(sz, sz.check_len, rows, sz.check_video_grid,
                       ["model.dtype=float32", "model.param_dtype=float32", "model.remat=none"])
    grads = {}
    with jax.default_matmul_precision("highest"):
        one = Trainer(cfg, mesh=make_mesh({"fsdp": 1}, devices=jax.devices()[:1]))
        many = Trainer(cfg, mesh=make_mesh({"fsdp": n}))
        many.state = jax.device_put(one.state, many.shardings)  # the very same parameters
        for key, tr in (("one", one), ("many", many)):
            inputs, targets, _ = placed_batch(tr, cfg.data)
            with jax.set_mesh(tr.mesh):
                acc = tr.fns.accumulate(tr.fns.zero_acc(tr.state), tr.state, inputs, targets)
            grads[key] = ({k: np.asarray(v) for k, v in acc.grads.items()}, float(acc.loss.total))
    scale = max(float(np.abs(g).max()) for g in grads["one"][0].values())
    d = max(float(np.abs(grads["one"][0][k] - grads["many"][0][k]).max()) for k in grads["one"][0])
    dloss = abs(grads["one"][1] - grads["many"][1])
    ok = d <= 1e-5 * scale and dloss <= 1e-5 * abs(grads["one"][1])
    out.emit(name, d / scale, "max |d grad| / max |grad|", "<= 1e-5 (fp32; loss sums too)",
             status="ok" if ok else "failed: above the bound",
             note=f"fsdp={n} vs 1 device, {rows} rows x {sz.check_len}; |d loss sum| {dloss:.1e} of "
                  f"{grads['one'][1]:.3f}")
