"""Which visual cues does the demo's Streamo SFT learn to read? (research/notes/streamo_learnability.md)

The Streamo counterpart of `stride_visual_probe.py`, on the same probe videos (dark 128 x 128 px, 4 fps, 20 s;
one thing visible during [s, e)). Each video becomes one Streamo stream with the question "Tell me when it is
gone." at 0 s: `</Silence>` before the thing shows, `</Standby>` for every second it is visible, `</Response>`
the second after — every state follows from the current frame alone. Probes:
  flash, block, square — as in stride_visual_probe.py (whole frame / one merged token of the demo's 56 px
           frames / a 24 px square, about the synthetic set's larger shapes);
  pair   — a red and a blue block in two different quarters, each visible for its own 2-4 s, and the question
           names one of them ("Tell me when the red block is gone."): the same read, plus binding a colour word
           to a token.
  pair_text — the pair streams without pixels: each frame replaced by a line naming what it shows (" red block.
           blue block." / " nothing."; `data.pipeline.format=chat`), scored teacher-forced (no frames to stream;
           `teacher_forced_binding`, also run on pair): at the unnamed block's first second, before the named one
           shows, only the question's colour word tells `</Silence>` from `</Standby>`: does the LLM bind it at all?
  pair_caption — a warm-up only (`--warmup-probe pair_caption`): the pair videos with every state replaced by
           that second's line as the answer (" red block." / " nothing."), the question by "What is shown?": a
           caption stage that ties the blocks' pixels to the colour words before the pair probe proper.
  pair_align — a warm-up only (`--warmup-probe pair_align`): no stream training; the vision tower and merger of
           a freshly initialised model learn (MSE, clean rendered pair frames) to output, at the merged token of
           each shown block, the LLM's own input embedding of its colour word (" red" / " blue"; empty tokens: 0),
           and the probe's SFT then keeps them frozen (`optim.groups.merger.train=false`). The pixels then reach
           the LLM as the very embedding the question's word has, as in pair_text: does that make binding learnable?
Per probe, the demo's recipe (configs/train/streamo_tiny.yaml; index, steps and out_dir changed, one device)
trains on 180 videos, then the demo's streaming evaluation scores the held-out 20 with their pixels and with
every pixel zeroed (`pixel_control`): a model that does not read the cue scores the same both ways. For pair, it
also counts which block the streamed `</Standby>` seconds follow (`pair_following`): the named one (binding) or
the other, split by which shows first — tracking whichever block appears first scores ~0.7 without any binding.

    python -m research.probes.streamo_visual_probe                      # every probe; 300 steps each
    python -m research.probes.streamo_visual_probe --probes pair --steps 900
    python -m research.probes.streamo_visual_probe --probes pair_text --set loss.kind=lm   # binding in text, plain CE
    python -m research.probes.streamo_visual_probe --probes square --warmup-probe block   # square after block
    python -m research.probes.streamo_visual_probe --probes pair --videos 2000 --warmup-probe pair_caption
    python -m research.probes.streamo_visual_probe --probes pair --videos 2000 --warmup-probe pair_align
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

from research.probes.stride_visual_probe import (BACKGROUND, DURATION, FPS, RED, SIZE, probe_args, probe_frame,
                                                 report, train_probe, warmup_start, write_splits)

PROBES = ("flash", "block", "square", "pair", "pair_text")
# warm-ups train on frames: not pair_text (none), but the caption stage pair_caption (no states to score)
WARMUPS = ("flash", "block", "square", "pair", "pair_caption", "pair_align")
PAIR_KINDS = ("pair", "pair_text", "pair_caption")  # the same draws per video: one scene, three renderings
BLUE = (40, 80, 230)
COLOUR_WORDS = (" red", " blue")  # pair_frame's order


def pair_frame(red_on: bool, blue_on: bool, quarters: tuple[int, int]) -> np.ndarray:
    f = np.full((SIZE, SIZE, 3), BACKGROUND, np.uint8)
    half = SIZE // 2
    for on, q, rgb in ((red_on, quarters[0], RED), (blue_on, quarters[1], BLUE)):
        if on:
            y0, x0 = half * (q // 2), half * (q % 2)
            f[y0 : y0 + half, x0 : x0 + half] = rgb
    return f


def _span(rng) -> tuple[int, int]:
    s = int(rng.integers(2, 14))
    return s, s + int(rng.integers(2, 5))


def _pair_line(t: int, spans, quarters) -> str:
    """Second t of a pair video as text, blocks in quarter order: " red block. blue block." / " nothing.".
    The leading space makes a line's first colour word the same token as in the question (" red"): at the
    start of a line the tiny tokenizer splits it ("r", "ed"), which the LLM would have to learn to match."""
    shown = [name for _, name, (a, b) in sorted(zip(quarters, ("red block", "blue block"), spans)) if a <= t < b]
    return " " + (". ".join(shown) + "." if shown else "nothing.")


def write_probe_streams(kind: str, out: str, videos: int, system_prompt: str, seed: int = 0) -> dict[str, str]:
    """Probe videos + Streamo stream records (the demo's layout); every tenth video is held out."""
    from data_pipelines.formats.streamo import to_stream
    from data_pipelines.synthetic.render import write_mp4

    rng = np.random.default_rng(seed)
    os.makedirs(f"{out}/videos", exist_ok=True)
    rows = {"train": [], "test": []}
    for v in range(videos):
        path = os.path.abspath(f"{out}/videos/{kind}_{v:04d}.mp4")
        if kind in PAIR_KINDS:
            spans = (_span(rng), _span(rng))
            quarters = tuple(int(q) for q in rng.choice(4, size=2, replace=False))
            asked = int(rng.integers(2))
            if kind != "pair_text":
                write_mp4(path, [pair_frame(*(a <= k / FPS < b for a, b in spans), quarters)
                                 for k in range(DURATION * FPS)], FPS)
            (s, e), name = spans[asked], ("the red block", "the blue block")[asked]
        else:
            (s, e), name = _span(rng), "it"
            xy = tuple(int(c) for c in rng.integers(20, SIZE - 20, size=2))
            write_mp4(path, [probe_frame(kind, s <= k / FPS < e, xy) for k in range(DURATION * FPS)], FPS)
        # Streamo times: turn t shows the frame at t - 1 s; visible at the integer seconds s .. e-1.
        raw = {"video_path": path, "task_type": f"probe_{kind}",
               "question": [{"content": f"Tell me when {name} is gone.", "time": "1"}],
               "response": [{"content": f"{name[0].upper()}{name[1:]} is gone.", "st_time": s + 1, "end_time": e,
                             "time": ""}]}
        stream = to_stream(raw, DURATION, system_prompt=system_prompt, video_path=path)
        stream["task_type"] = raw["task_type"]
        if kind in PAIR_KINDS:  # for `pair_following` (the pipeline reads only messages and videos)
            stream["pair_spans"] = {"named": spans[asked], "other": spans[1 - asked]}
        if kind == "pair_caption":
            answers = [m for m in stream["messages"] if m["role"] == "assistant"]
            for t, m in enumerate(answers):
                m["content"] = _pair_line(t, spans, quarters)
            first_user = stream["messages"][1]
            first_user["content"] = first_user["content"].replace(raw["question"][0]["content"], "What is shown?")
        if kind == "pair_text":
            stream.pop("videos")
            lines = iter(_pair_line(t, spans, quarters) for t in range(DURATION))
            for m in stream["messages"]:
                while "<stream>" in m["content"]:
                    m["content"] = m["content"].replace("<stream>", next(lines), 1)
        rows["test" if v % 10 == 0 else "train"].append(stream)
    return write_splits(rows, out)


def aligned_vision_start(recipe: str, tokenizer: str, root: str, steps: int, batch: int = 64, seed: int = 0):
    """pair_align: train visual/* of a fresh model so that each merged token of a pair frame equals the LLM's
    input embedding of the colour word of the block drawn there (0 where none); save the whole model.
    -> (overrides starting the probe's SFT from it with vision and merger frozen, final MSE per token)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from transformers import AutoTokenizer

    from stvl_jax.models.qwen_vl.host.preprocess import process_images
    from stvl_jax.models.qwen_vl.loading import save_model
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.data import training_preprocessing
    from stvl_jax.train.init import initial_preprocessing, model_config

    cfg = load_train_config(recipe, [f"data.pipeline.tokenizer={tokenizer}", f"seed={seed}"])
    config = model_config(cfg.model)
    vision = training_preprocessing(cfg.data, config, initial_preprocessing(cfg.model, config))
    tok = AutoTokenizer.from_pretrained(tokenizer)
    ids = [tok.encode(w, add_special_tokens=False) for w in COLOUR_WORDS]
    if any(len(i) != 1 for i in ids):
        raise SystemExit(f"pair_align: the colour words {COLOUR_WORDS} must be single tokens, got {ids}")
    model = QwenVLForConditionalGeneration(config, preprocessing=vision, rngs=nnx.Rngs(seed))
    words = np.asarray(model.language_model.embed_tokens.embedding[...])[[i[0] for i in ids]]  # (2, D)
    rng = np.random.default_rng(seed)

    def sample():  # merged tokens of a 2 x 2 grid are in raster order, as pair_frame's quarters
        frames, targets = [], np.zeros((batch, 4, words.shape[1]), np.float32)
        for b in range(batch):
            quarters, shown = tuple(int(q) for q in rng.choice(4, 2, replace=False)), rng.random(2) < 0.6
            frames.append(pair_frame(*(bool(s) for s in shown), quarters))
            for c in np.flatnonzero(shown):
                targets[b, quarters[c]] = words[c]
        pv, grid = process_images(np.stack(frames), vision)
        return prepare_vision_inputs(config, pixel_values=pv, image_grid_thw=grid), jnp.asarray(targets.reshape(
            -1, words.shape[1]))

    graph, params = nnx.split(model.visual)
    tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 2e-3, 50, steps))

    def loss_fn(p, vin, y):
        return ((nnx.merge(graph, p)(vin)[0] - y) ** 2).sum(-1).mean()

    @jax.jit
    def step(p, opt_state, vin, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, vin, y)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = tx.init(params)
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, *sample())
    mse = float(loss_fn(params, *sample()))
    print(f"pair_align: {steps} steps, held-out MSE per token {mse:.2e} (colour-word embedding squared norm "
          f"{float((words ** 2).sum(-1).mean()):.2e})", flush=True)
    nnx.update(model.visual, params)
    ckpt = save_model(model, None, f"{root}/warmup_pair_align/model", overwrite=True)
    return ["model.config=null", f"model.checkpoint={ckpt}", "optim.groups.merger.train=false"], mse


def pair_following(streams_path: str, result: dict) -> dict[str, dict[str, int]]:
    """Which block the streamed `</Standby>` seconds follow, by which block shows first: a model that binds the
    colour word follows the named one in every row; one that tracks whichever block appears first scores well
    only when that is the named one.
    -> {"named first" | "other first" | "same start": {"named" | "other" | "neither": streams}}."""
    spans = {}
    with open(streams_path) as f:
        for line in f:
            rec = json.loads(line)
            spans[rec["videos"][0]] = rec["pair_spans"]
    out = {k: {"named": 0, "other": 0, "neither": 0} for k in ("named first", "other first", "same start")}
    for s in result["streams"]:
        sp = spans[s["video"]]
        pred = np.array([p == "</Standby>" for p in s["pred"]])
        on = {k: np.array([a <= t < b for t in range(len(pred))]) for k, (a, b) in sp.items()}
        follows = next((k for k in ("named", "other") if (pred == on[k]).all()), "neither")
        a, b = sp["named"][0], sp["other"][0]
        out["named first" if a < b else "other first" if b < a else "same start"][follows] += 1
    return out


def binding_counts(pred: list[str], spans: dict) -> dict[str, list[int]]:
    """Teacher-forced states of one pair stream -> {case: [right, seconds]} for the seconds that tell binding
    apart: the other block's first second while the named one has not shown (`</Silence>` is right; only the
    colour word can tell), its later such seconds (`</Silence>` follows from the gold `</Silence>` just before
    them: copying the previous state suffices), and the named block's first second (`</Standby>`)."""
    (named_start, _), (other_start, other_end) = spans["named"], spans["other"]
    out = {case: [0, 0] for case in ("other block, first second", "other block, later seconds",
                                     "named block, first second")}

    def count(case: str, right: bool) -> None:
        out[case][0] += int(right)
        out[case][1] += 1

    for t in range(other_start, min(other_end, named_start, len(pred))):
        count(f"other block, {'first second' if t == other_start else 'later seconds'}", pred[t] == "</Silence>")
    if named_start < len(pred):
        count("named block, first second", pred[named_start] == "</Standby>")
    return out


def teacher_forced_binding(model, cfg, streams_path: str) -> dict:
    """The held-out pair streams (pixels or pair_text lines), teacher-forced: state accuracy and, summed over
    the streams, `binding_counts`. Binding shows at "other block, first second"; the later seconds only need
    the gold previous state copied, so a high count there is not binding."""
    from data_pipelines.formats.streamo import STATE_TOKENS
    from data_pipelines.grain import make_pipeline
    from data_pipelines.grain.config import PipelineConfig
    from stvl_jax.train.batches import split_targets

    with open(streams_path) as f:
        spans = [json.loads(line)["pair_spans"] for line in f]
    state_ids = list(cfg.loss.focal.state_token_ids)  # in STATE_TOKENS order
    pipe = dict(cfg.data.pipeline, index=streams_path, batch_size=1, worker_count=0, num_epochs=1, shuffle=False)
    right = total = 0
    counts = {}
    with make_pipeline(PipelineConfig.from_dict(pipe)) as it:
        for sp, batch in zip(spans, it):
            inputs, targets = split_targets(batch)
            labels = targets["labels"][0, 1:]
            at = np.flatnonzero(np.isin(labels, state_ids))  # one state per second, in order
            logits = np.asarray(model(**inputs).logits[0, :-1])[at][:, state_ids]
            pred = np.asarray(state_ids)[logits.argmax(-1)]
            right, total = right + int((pred == labels[at]).sum()), total + len(at)
            for case, (r, n) in binding_counts([STATE_TOKENS[state_ids.index(int(p))] for p in pred], sp).items():
                counts[case] = [a + b for a, b in zip(counts.get(case, [0, 0]), (r, n))]
    return {"teacher_forced_state_accuracy": right / total, "teacher_forced_binding": counts}


def _report_row(kind: str, r: dict) -> str:
    forced = ""
    if "teacher_forced_binding" in r:
        forced = (f"\n{'':<8} teacher-forced state accuracy {r['teacher_forced_state_accuracy']:.3f}; right / seconds: "
                  + ", ".join(f"{case} {a} / {n}" for case, (a, n) in r["teacher_forced_binding"].items()))
    if "macro_f1" not in r:  # pair_text: teacher-forced only, no streams
        return f"{kind:<8} (no streams){forced}"
    return (f"{kind:<8} {r['macro_f1']:>8.3f} {r['zeroed_macro_f1']:>8.3f} {r['majority_macro_f1']:>9.3f} "
            f"{r['unchanged_streams']:>11} / {r['streams']}{forced}")


def main() -> int:
    a = probe_args(__doc__, PROBES, WARMUPS)
    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax.demo.streamo import DEMO_SYSTEM_PROMPT, TRAIN_CONFIG, evaluate, pixel_control

    root = a.out or tempfile.mkdtemp(prefix="streamo_probe_")
    tokenizer = build_tiny_tokenizer(f"{root}/tokenizer")
    one_device = ("mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1")
    if a.warmup_probe == "pair_align":
        start, _ = aligned_vision_start(TRAIN_CONFIG, tokenizer, root, a.warmup_steps)
    else:
        start = warmup_start(TRAIN_CONFIG, lambda kind, out: write_probe_streams(kind, out, a.videos,
                                                                                   DEMO_SYSTEM_PROMPT)["train"],
                             tokenizer, a, root, *one_device)
    results = {}
    for kind in a.probes:
        paths = write_probe_streams(kind, f"{root}/{kind}", a.videos, DEMO_SYSTEM_PROMPT)
        text = ("data.pipeline.format=chat",) if kind == "pair_text" else ()
        trainer, cfg = train_probe(TRAIN_CONFIG, paths["train"], tokenizer, a, f"{root}/{kind}/run", *one_device,
                                   *start, *text)
        if text:
            results[kind] = teacher_forced_binding(trainer.model(), cfg, paths["test"])
            print(kind, json.dumps(results[kind]), flush=True)
            continue
        model, eval_dir = trainer.model(), f"{root}/{kind}/eval"
        result = evaluate(model, tokenizer, paths["test"], eval_dir)
        control = pixel_control(model, tokenizer, paths["test"], eval_dir, result)
        m = result["metrics"]
        results[kind] = {"macro_f1": m["macro_f1"], "majority_macro_f1": m["baseline"]["macro_f1"],
                         "zeroed_macro_f1": control["macro_f1"], "unchanged_streams": control["unchanged_streams"],
                         "streams": control["streams"]}
        if kind == "pair":
            results[kind]["following"] = pair_following(paths["test"], result)
            results[kind].update(teacher_forced_binding(model, cfg, paths["test"]))
        print(kind, json.dumps(results[kind]), flush=True)
    report(a, root, results, "held-out streams, state macro-F1",
           f"{'probe':<8} {'pixels':>8} {'zeroed':>8} {'majority':>9} {'unchanged streams':>18}", _report_row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
