"""Strefer held-out evaluation (`stvl eval strefer`): accuracy per question family on the text pairs of an engine
dataset (the clips of videos the model did not train on: a separate `stvl data strefer` run), beside controls.

Every pair the training reads (`data_pipelines.strefer.training.text_pairs`: no region input) is asked on its own,
answered by greedy generation, and counted right when the answer equals the reference, case, spacing and a final
period aside (`normalize_answer`): `<k>` tokens must match exactly. The same questions under three conditions:

- `model`: the clip's frames, as in training;
- `no_frames`: the question alone, no video part (the text-only baseline: what the question and the answer priors
  give without any frame);
- `black_frames`: the clip's frames all black, same count and size (the control for what the score owes to the
  pixels rather than to the video tokens' presence and timestamps);
- `other_clip`: as many seconds of another video's clip (`other_clip_parts`): real footage, the same frame count
  and stamps, the wrong content. Black frames are an input a model with a trained vision tower never saw; this
  control is not (left out, with a line saying so, when no other video has a clip that long);

and, with `--prior DATA_DIR` (the training run's engine output), `train_prior`: the most frequent training answer
of the pair's template, no model at all.

Prompts are the training pipeline's own (`ExampleBuilder`: the same frame sampling, `<t seconds>` stamps and
tokenization): the pair as a one-turn chat, cut where the answer's labels begin.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter, defaultdict

import numpy as np
from tqdm import tqdm

from data_pipelines.errors import AnnotationError
from data_pipelines.grain.sources import TfdsSource, parse_record
from data_pipelines.strefer.training import FEATURES, StreferTextConfig, clip_parts, pair_record, text_pairs
from stvl_jax.errors import InputError
from stvl_jax.eval.skips import SkipReport

CONDITIONS = ("model", "no_frames", "black_frames", "other_clip")
LABELS = {"model": "model", "no_frames": "no frames", "black_frames": "black frames", "other_clip": "other clip",
          "train_prior": "train prior"}
LENGTH_MULTIPLE = 64  # prompts are left-padded to a multiple of this: few distinct widths, few compiles


def normalize_answer(text: str) -> str:
    """Lower case, single spaces, no final period: 'From <0> to <11>.' == 'from <0>  to <11>'."""
    return " ".join(text.split()).rstrip(".").strip().lower()


def dataset_spec(data_dir: str, split: str) -> str:
    return f"tfds:strefer/{split}@{data_dir}"


def read_items(spec: str, cfg: StreferTextConfig, skips: SkipReport, limit: int | None = None) -> list[dict]:
    """The text pairs of the first `limit` clips -> [{"clip_id", "video" (part), "pair", "source"}]; a bad clip is
    counted in `skips`."""
    src = TfdsSource(spec, FEATURES)
    items = []
    for i in range(len(src) if limit is None else min(limit, len(src))):
        item = src[i]
        try:
            video, clip_id, pairs = clip_parts(parse_record(item), item["key"])
            chosen = text_pairs(pairs, cfg, item["key"])
        except AnnotationError as e:
            skips.add_error(item["key"], e)
            continue
        items += [{"clip_id": clip_id, "video": video, "pair": p, "source": f"{item['key']}/{j}"}
                  for j, p in enumerate(chosen)]
    return items


def other_clip_parts(items: list[dict]) -> dict[str, dict] | None:
    """clip id -> the video part of the `other_clip` control: the first `end - start` seconds of the next clip (in
    clip-id order, cyclic) that comes from another video and lasts at least as long. None when some clip has no
    such partner."""
    clips = sorted({it["clip_id"]: it["video"] for it in items}.items())
    out = {}
    for i, (cid, part) in enumerate(clips):
        length = part["end"] - part["start"]
        partner = next((p for _, p in clips[i + 1:] + clips[:i]
                        if p["path"] != part["path"] and p["end"] - p["start"] >= length - 1e-6), None)
        if partner is None:
            return None
        out[cid] = {**part, "path": partner["path"], "start": partner["start"], "end": partner["start"] + length}
    return out


def train_prior(spec: str, cfg: StreferTextConfig) -> dict[str, str]:
    """template -> the most frequent (normalized) answer of that template in a training dataset."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for it in read_items(spec, cfg, SkipReport()):
        counts[it["pair"].get("template", it["pair"]["family"])][normalize_answer(it["pair"]["answer"])] += 1
    return {t: c.most_common(1)[0][0] for t, c in counts.items()}


class PromptBuilder:
    """(video part | None, pair) -> a generation prompt row (ids, token types, pixel rows | None, grid | None,
    seconds per temporal patch), built by the training pipeline's `ExampleBuilder` (`zero_pixels`: black
    frames)."""

    def __init__(self, tokenizer_dir: str, vision, positions, *, zero_pixels: bool = False):
        from data_pipelines.grain.config import PipelineConfig
        from data_pipelines.grain.examples import ExampleBuilder

        cfg = PipelineConfig(index="tfds:strefer", tokenizer=tokenizer_dir, format="chat", preprocess=vision,
                             positions=positions, zero_pixels=zero_pixels, length_buckets=(1 << 20,),
                             media_root=os.sep)
        self.builder, self.rng = ExampleBuilder(cfg), np.random.default_rng(0)

    def __call__(self, video: dict | None, pair: dict, source: str) -> tuple:
        item = {"key": source, "data": json.dumps(pair_record(video, pair)).encode()}
        ex = self.builder(item, self.rng)
        if "__skip__" in ex:
            raise AnnotationError(ex["__skip__"], ex["message"], source)
        cut = int(np.flatnonzero(ex["labels"] != -100)[0])  # the answer's first token: the prompt ends before it
        has_video = len(ex["video_grid_thw"]) > 0
        spg = float(ex["second_per_grid_ts"][0]) if has_video and "second_per_grid_ts" in ex else 1.0
        return (ex["input_ids"][:cut], ex["mm_token_type_ids"][:cut],
                ex["pixel_values_videos"] if has_video else None, ex["video_grid_thw"] if has_video else None, spg)


def generate_answers(model, tokenizer, rows: list[tuple], *, batch_size: int, max_new_tokens: int,
                     desc: str = "strefer eval", progress: bool = True) -> list[str]:
    """Greedy answers to prompt rows, batched by vision layout (one compiled program per layout and width; the
    last batch of a layout is filled with repeats)."""
    from stvl_jax.eval.prompts import collate_prompts
    from stvl_jax.models.qwen_vl.generate import generate

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    mesh = getattr(model, "mesh", None)
    data_size = 1 if mesh is None else mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    width = -(-batch_size // data_size) * data_size  # rows per batch: the mesh's data axes divide it

    def layout(i):
        grid = rows[i][3]
        return () if grid is None else tuple(np.asarray(grid).ravel().tolist())

    order = sorted(range(len(rows)), key=lambda i: (layout(i), len(rows[i][0])))
    groups = [list(g) for _, g in itertools.groupby(order, key=layout)]
    out: list[str] = [""] * len(rows)
    bar = tqdm(total=len(rows), desc=desc, unit="question", disable=not progress)
    for chunk in (g[s:s + width] for g in groups for s in range(0, len(g), width)):
        batch_rows = [rows[i] for i in chunk] + [rows[chunk[-1]]] * (width - len(chunk))
        length = -(-max(len(r[0]) for r in batch_rows) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
        ids = generate(model, collate_prompts(tokenizer, model.preprocessing, batch_rows, length),
                       max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos)
        for i, row in zip(chunk, np.asarray(ids)):
            row = row.tolist()
            out[i] = tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True)
        bar.update(len(chunk))
    bar.close()
    return out


def score(items: list[dict], answers: dict[str, list[str]]) -> dict:
    """Exact-match accuracy per family and overall for each condition's answers (aligned with `items`)."""
    fams = sorted({it["pair"]["family"] for it in items})
    table = {}
    for fam in [*fams, "all"]:
        idx = [i for i, it in enumerate(items) if fam in ("all", it["pair"]["family"])]
        gold = [normalize_answer(items[i]["pair"]["answer"]) for i in idx]
        table[fam] = {"n": len(idx), "accuracy": {
            cond: float(np.mean([normalize_answer(ans[i]) == g for i, g in zip(idx, gold)])) if idx else 0.0
            for cond, ans in answers.items()}}
    return table


def format_table(table: dict, conditions) -> str:
    """Families as rows, conditions as columns."""
    head = f"{'family':<20} {'n':>5}" + "".join(f" {LABELS.get(c, c):>13}" for c in conditions)
    lines = [head, "-" * len(head)]
    for fam, row in table.items():
        lines.append(f"{fam:<20} {row['n']:>5}" + "".join(f" {row['accuracy'][c]:>13.3f}" for c in conditions))
    return "\n".join(lines)


def evaluate_strefer(model, tokenizer, tokenizer_dir: str, items: list[dict], *, controls: bool = True,
                     prior: dict[str, str] | None = None, batch_size: int = 8, progress: bool = True,
                     skips: SkipReport | None = None) -> dict:
    """Answer every item under each condition -> {"families": score table, "conditions", "samples", "skipped"}.
    An item whose prompt cannot be built (unreadable clip) is counted in `skips` and dropped from every
    condition, so all conditions score the same questions."""
    skips = SkipReport() if skips is None else skips
    conditions = CONDITIONS if controls else CONDITIONS[:1]
    others = other_clip_parts(items) if "other_clip" in conditions else None
    if "other_clip" in conditions and others is None:
        print("strefer eval: the other-clip control is left out: some clip has no clip of another video that lasts "
              "as long")
        conditions = tuple(c for c in conditions if c != "other_clip")
    builders = {c: PromptBuilder(tokenizer_dir, model.preprocessing, model.config.positions,
                                 zero_pixels=c == "black_frames") for c in conditions}
    videos = {"model": lambda it: it["video"], "no_frames": lambda it: None, "black_frames": lambda it: it["video"],
              "other_clip": lambda it: others[it["clip_id"]]}
    rows: dict[str, list] = {c: [] for c in conditions}
    kept = []
    for it in items:
        try:
            built = {c: builders[c](videos[c](it), it["pair"], it["source"]) for c in conditions}
        except InputError as e:
            skips.add_error(it["source"], e)
            continue
        kept.append(it)
        for c in conditions:
            rows[c].append(built[c])
    skips.require_usable(len(kept), "the evaluation dataset")
    longest = max(len(tokenizer(it["pair"]["answer"], add_special_tokens=False)["input_ids"]) for it in kept)
    answers = {c: generate_answers(model, tokenizer, rows[c], batch_size=batch_size, max_new_tokens=longest + 1,
                                   desc=f"strefer {LABELS[c]}", progress=progress) for c in conditions}
    if prior is not None:
        answers["train_prior"] = [prior.get(it["pair"].get("template", it["pair"]["family"]), "") for it in kept]
    samples = [{"clip_id": it["clip_id"], "family": it["pair"]["family"], "template": it["pair"].get("template"),
                "question": it["pair"]["question"], "answer": it["pair"]["answer"],
                **{c: answers[c][i] for c in answers}} for i, it in enumerate(kept)]
    return {"families": score(kept, answers), "conditions": list(answers), "samples": samples,
            "skipped": skips.as_dict()}


def run_strefer(args, model, tokenizer) -> dict:
    """`stvl eval strefer`: load the held-out pairs, answer them under every condition, print and write the table
    (OUT/strefer_metrics.json)."""
    from data_pipelines.strefer.time_tokens import time_token_count
    from stvl_jax.models.qwen_vl.checkpoints import tokenizer_dir
    from stvl_jax.train.data import check_vocabulary

    tok_dir = args.tokenizer or tokenizer_dir(args.ckpt)
    n_time = time_token_count(tokenizer)
    if n_time < 2:
        raise InputError(f"--tokenizer {tok_dir!r} holds no Strefer time tokens <0>, <1>, ... (the tokenizer the "
                         f"model was trained with: `stvl data tokenizer --time-tokens N`)")
    check_vocabulary(tok_dir, model.config)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip()) if args.families else None
    cfg = StreferTextConfig(num_time_tokens=n_time, **({"families": families} if families else {}))
    skips = SkipReport()
    spec = dataset_spec(args.data, args.split)
    items = read_items(spec, cfg, skips, args.limit)
    skips.require_usable(len(items), spec)
    prior = train_prior(dataset_spec(args.prior, "train"), cfg) if args.prior else None
    result = evaluate_strefer(model, tokenizer, tok_dir, items, controls=not args.no_controls, prior=prior,
                              batch_size=args.batch_size, skips=skips)
    result.update(checkpoint=args.ckpt, data=spec, num_time_tokens=n_time)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "strefer_metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"strefer held-out exact-match accuracy ({spec}, {len({s['clip_id'] for s in result['samples']})} clips):")
    print(format_table(result["families"], result["conditions"]))
    print(f"{skips.summary(len(result['samples']))} -> {os.path.join(args.out, 'strefer_metrics.json')}")
    return result
