"""`stvl segment` prompts: parsing `--box` / `--point` / `--frame` / `--object` in command-line order, checking
them against the video, and turning them into SAM2's point encoding.

`--frame K` and `--object N` set the frame and object of the prompts that follow them (defaults: frame 0, object
1), so several objects and several prompted frames are one command:

    stvl segment v.mp4 --ckpt C --box 10,20,110,90 --object 2 --point 200,50 --point 210,80:0 --frame 12 --box ...

Coordinates are pixels of the video (x right, y down); a point's label is 1 (foreground, the default) or 0
(background). SAM2 encodes a box as its two corners, labelled 2 and 3, ahead of any clicks of the same frame and
object (`Sam2VideoProcessor.add_inputs_to_inference_session` / Meta's `add_new_points_or_box` do the same).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from stvl_jax.errors import InputError

@dataclass(frozen=True)
class Prompt:
    """One `--box` (coords x0, y0, x1, y1) or `--point` (coords x, y; label 1 or 0) on `frame` for `obj`."""
    kind: str
    coords: tuple[float, ...]
    frame: int
    obj: int
    label: int = 1
    flag: str = ""  # the argument as typed, for error messages

    def describe(self) -> str:
        return f"--{self.kind} {self.flag}" + (f" (frame {self.frame}, object {self.obj})")


def _numbers(text: str, n: int, flag: str) -> tuple[float, ...]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != n or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected {n} comma-separated numbers")
    return values


class _PromptAction(argparse.Action):
    """Appends a Prompt to `namespace.prompts` with the frame/object in force at that point of the command."""

    def __call__(self, parser, namespace, value, option_string=None):
        state = getattr(namespace, "_prompt_state", None) or {"frame": 0, "object": 1}
        namespace._prompt_state = state
        prompts = list(getattr(namespace, "prompts", None) or [])
        if self.dest in ("frame", "object"):
            try:
                state[self.dest] = int(value)
            except ValueError:
                parser.error(f"argument {option_string}: expected an integer, got {value!r}")
            if state[self.dest] < 0 or (self.dest == "object" and state[self.dest] == 0):
                kind = "non-negative" if self.dest == "frame" else "positive"
                parser.error(f"argument {option_string}: expected a {kind} integer, got {value!r}")
            setattr(namespace, self.dest, state[self.dest])
            return
        try:
            if self.dest == "box":
                prompts.append(Prompt("box", _numbers(value, 4, option_string), state["frame"], state["object"],
                                      flag=value))
            else:
                xy, _, label = value.partition(":")
                if label not in ("", "0", "1"):
                    raise argparse.ArgumentTypeError(f"{option_string} {value!r}: the label after ':' is 1 "
                                                     f"(foreground) or 0 (background)")
                prompts.append(Prompt("point", _numbers(xy, 2, option_string), state["frame"], state["object"],
                                      label=int(label or 1), flag=value))
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))
        namespace.prompts = prompts


def add_prompt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--box", action=_PromptAction, metavar="X0,Y0,X1,Y1", help="a box prompt (pixels)")
    p.add_argument("--point", action=_PromptAction, metavar="X,Y[:LABEL]",
                   help="a click (pixels); LABEL 1 foreground (default) or 0 background")
    p.add_argument("--frame", action=_PromptAction, metavar="K", help="frame of the prompts that follow (default 0)")
    p.add_argument("--object", action=_PromptAction, metavar="N",
                   help="object id of the prompts that follow (default 1)")
    p.set_defaults(prompts=[])


def check_prompts(prompts: list[Prompt], num_frames: int, height: int, width: int, video: str) -> None:
    """One InputError naming the prompt and the reason: none given, frame past the end, a box inverted or
    empty, a box or point outside the frame, an object whose prompts have no foreground."""
    if not prompts:
        raise InputError("no prompt: give at least one --box X0,Y0,X1,Y1 or --point X,Y")
    for p in prompts:
        if p.frame >= num_frames:
            raise InputError(f"{p.describe()}: frame {p.frame} is past the end of {video!r} ({num_frames} frames, "
                             f"0..{num_frames - 1})")
        xs, ys = p.coords[0::2], p.coords[1::2]
        if p.kind == "box" and (xs[1] <= xs[0] or ys[1] <= ys[0]):
            raise InputError(f"{p.describe()}: the box is inverted or empty (needs X0 < X1 and Y0 < Y1)")
        if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
            raise InputError(f"{p.describe()}: outside the {width}x{height} frame of {video!r}")
    by_obj = defaultdict(list)
    for p in prompts:
        by_obj[p.obj].append(p)
    for obj, ps in by_obj.items():
        if all(p.kind == "point" and p.label == 0 for p in ps):
            raise InputError(f"object {obj}: only background clicks; give a box or a foreground point")


def encode_prompts(prompts: list[Prompt], height: int, width: int, image_size: int) -> dict:
    """{(frame, object): tracker.Prompt(points (N, 2) float32 model-input pixels, labels (N,), box (4,) or None)}.

    Coordinates scale from the video's (width, height) to the model's square input, as SAM2's processors do; the
    tracker puts a box's corners (labels 2, 3) ahead of the clicks."""
    from stvl_jax.models.sam2.tracker import Prompt as TrackerPrompt

    scale = np.array([image_size / width, image_size / height], np.float32)
    grouped: dict[tuple[int, int], list[Prompt]] = defaultdict(list)
    for p in prompts:
        grouped[(p.frame, p.obj)].append(p)
    out = {}
    for key, ps in sorted(grouped.items()):
        boxes = [p for p in ps if p.kind == "box"]
        if len(boxes) > 1:
            raise InputError(f"frame {key[0]}, object {key[1]}: more than one --box (SAM2 takes one box per "
                             f"object and frame)")
        clicks = [p for p in ps if p.kind == "point"]
        out[key] = TrackerPrompt(
            points=np.asarray([p.coords for p in clicks], np.float32).reshape(-1, 2) * scale if clicks else None,
            labels=np.asarray([p.label for p in clicks], np.int32) if clicks else None,
            box=np.asarray(boxes[0].coords, np.float32) * np.tile(scale, 2) if boxes else None)
    return out
