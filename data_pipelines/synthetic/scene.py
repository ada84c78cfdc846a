"""Scene sampling and motion simulation of the synthetic set (pure numpy, deterministic from an rng).

Entities move horizontally in lanes. Each follows a script (late entry, stop/go, exit, re-entry) executed
by a simple simulator at `SIM_HZ`: walls bounce entities that are inside the frame, "collide" partners in one
lane bounce off each other, everything else passes over/under (occlusion by z-order). Action boundaries are
read off the simulated trajectory, so the ground truth is what the simulation did, not what was scripted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from data_pipelines.synthetic.vocabulary import PALETTE, SHAPES, SIZES
from stvl_jax.errors import ConfigError

SIM_HZ = 100  # simulation steps per second (frame times are multiples of 1/fps, fps must divide SIM_HZ)
SQUARE_HALF = 0.85  # a square's half side relative to its size radius (similar area to the circle)


def half_width(category: str, radius: float) -> float:
    """Horizontal half-extent of a shape: what decides 'fully inside' and wall contact."""
    return SQUARE_HALF * radius if category == "square" else float(radius)


@dataclass(frozen=True)
class SceneParams:
    """Sampling ranges of one video (part of SynthConfig)."""

    size: int = 128
    fps: int = 4
    min_duration: int = 12
    max_duration: int = 16
    min_entities: int = 2
    max_entities: int = 4
    min_speed: float = 10.0  # px/s
    max_speed: float = 18.0
    p_late_entry: float = 0.5
    p_stop: float = 0.5
    p_exit_reenter: float = 0.4
    p_collide_pair: float = 0.4
    p_occluder: float = 0.5
    # Probability that an entity without an exit gets one soon after it is fully in view: it turns to the nearer
    # border, leaves, and returns after 1-2 s (the exit/re-entry case of video object segmentation: 0.5 raises
    # the entities that leave and return from 10 % to 45 %). 0 draws nothing extra: the earlier scenes exactly.
    p_return: float = 0.0

    def __post_init__(self):
        if self.fps <= 0 or SIM_HZ % self.fps:  # frames must fall on simulation steps
            raise ConfigError(f"scene fps must divide {SIM_HZ} (e.g. 4, 20, 25, 50), got {self.fps}")
        if not 0.0 <= self.p_return <= 1.0:
            raise ConfigError(f"scene p_return must be a probability in [0, 1], got {self.p_return}")


@dataclass
class Entity:
    id: int
    category: str
    color: str
    size: str
    radius: int
    lane_y: float
    layer: int  # z-order, larger is drawn on top
    speed: float
    commands: list = field(default_factory=list)  # (time, kind, arg)


@dataclass
class Scene:
    width: int
    height: int
    fps: int
    duration: int
    entities: list[Entity]
    occluders: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1) pixel boxes, drawn in front of entities
    collide_pairs: list[tuple[int, int]]
    x: np.ndarray = None  # (n_entities, n_steps) centre x in pixels, nan when absent
    vx: np.ndarray = None  # (n_entities, n_steps)
    instants: list[dict] = field(default_factory=list)  # bounce/collide contacts: {entity, action, time, other?}

    @property
    def num_frames(self) -> int:
        return self.duration * self.fps

    def frame_step(self, k: int) -> int:
        return k * SIM_HZ // self.fps


def sample_scene(rng: np.random.Generator, p: SceneParams) -> Scene:
    """Draw entities (distinct colours, repeated shapes likely), lanes, scripts and occluders."""
    W = H = p.size
    duration = int(rng.integers(p.min_duration, p.max_duration + 1))
    n = int(rng.integers(p.min_entities, p.max_entities + 1))
    colors = rng.choice(list(PALETTE), size=n, replace=False)
    # Few shapes per video so that several entities share a category.
    shape_pool = rng.choice(SHAPES, size=max(1, min(len(SHAPES), n - 1)), replace=False)
    entities = []
    for i in range(n):
        size = str(rng.choice(list(SIZES)))
        r = SIZES[size]
        entities.append(Entity(
            id=i + 1, category=str(rng.choice(shape_pool)), color=str(colors[i]), size=size, radius=r,
            lane_y=float(rng.uniform(r + 3, H - r - 3)), layer=int(i),
            speed=float(rng.uniform(p.min_speed, p.max_speed)),
        ))
    order = rng.permutation(n)
    for j, i in enumerate(order):
        entities[i].layer = j
    collide_pairs = []
    if n >= 2 and rng.random() < p.p_collide_pair:
        a, b = (int(v) for v in rng.choice(n, size=2, replace=False))
        entities[b].lane_y = entities[a].lane_y
        collide_pairs.append((entities[a].id, entities[b].id))
    occluders = []
    if rng.random() < p.p_occluder:
        w = int(rng.integers(10, 17))
        x0 = int(rng.integers(int(0.35 * W), int(0.65 * W) - w))
        h = int(rng.integers(int(0.4 * H), int(0.7 * H)))
        y0 = int(rng.integers(0, H - h + 1))
        occluders.append((x0, y0, x0 + w, y0 + h))
    for e in entities:
        _script(e, rng, p, duration, W)
    scene = Scene(width=W, height=H, fps=p.fps, duration=duration, entities=entities, occluders=occluders,
                  collide_pairs=collide_pairs)
    simulate(scene, rng)
    return scene


def _script(e: Entity, rng: np.random.Generator, p: SceneParams, duration: int, W: int) -> None:
    """Commands: ("spawn", x), ("enter", side), ("stop", dur), ("go", dir), ("exit", None), ("reenter", gap),
    and with `p_return` ("exit_near", None): leave through the nearer border (waits until fully in view)."""
    late = rng.random() < p.p_late_entry
    if late:
        t = float(rng.uniform(0.5, 0.4 * duration))
        e.commands.append((t, "enter", str(rng.choice(["left", "right"]))))
        t += 2 * e.radius / e.speed + 0.5
    else:
        e.commands.append((0.0, "spawn", float(rng.uniform(e.radius + 2, W - e.radius - 2))))
        t = 0.0
    if rng.random() < p.p_stop and t + 4 < duration - 3:
        ts = float(rng.uniform(t + 1.5, min(t + 5, duration - 3.5)))
        e.commands.append((ts, "stop", None))
        t = ts + float(rng.uniform(2.0, 3.5))
        e.commands.append((t, "go", str(rng.choice(["left", "right"]))))
    if rng.random() < p.p_exit_reenter and t + 1 < duration - 9:
        tx = float(rng.uniform(t + 1, duration - 9))
        e.commands.append((tx, "exit", None))
        e.commands.append((tx, "reenter", float(rng.uniform(1.5, 3.0))))
    if p.p_return > 0 and not any(c[1] == "exit" for c in e.commands) and rng.random() < p.p_return:
        tx = float(rng.uniform(t + 0.2, t + 1.5))
        e.commands.append((tx, "exit_near", None))
        e.commands.append((tx, "reenter", float(rng.uniform(1.0, 2.0))))


def simulate(scene: Scene, rng: np.random.Generator) -> None:
    """Run all scripts; fills scene.x, scene.vx and scene.instants (bounce/collide contacts)."""
    W = scene.width
    n_steps = scene.duration * SIM_HZ + 1
    n = len(scene.entities)
    X = np.full((n, n_steps), np.nan)
    V = np.zeros((n, n_steps))
    mode = ["absent"] * n
    x = [math.nan] * n
    v = [0.0] * n
    absent_since = [0.0] * n
    pending = [sorted(e.commands, key=lambda c: c[0]) for e in scene.entities]
    partner = {}
    for a, b in scene.collide_pairs:
        partner.setdefault(a, set()).add(b)
        partner.setdefault(b, set()).add(a)
    idx = {e.id: i for i, e in enumerate(scene.entities)}
    dt = 1.0 / SIM_HZ
    for s in range(n_steps):
        t = s * dt
        for i, e in enumerate(scene.entities):
            r = half_width(e.category, e.radius)
            while pending[i] and pending[i][0][0] <= t + 1e-9:
                _, kind, arg = pending[i][0]
                if kind == "reenter":
                    if mode[i] != "absent" or t < absent_since[i] + arg:
                        break  # wait until the entity has been gone for `arg` seconds
                    side = "left" if rng.random() < 0.5 else "right"
                    x[i], v[i], mode[i] = (-r, e.speed, "entering") if side == "left" else (W + r, -e.speed, "entering")
                elif kind == "exit_near":
                    if mode[i] != "inside":
                        break  # still entering: leave once fully in view (the return below waits for it)
                    v[i] = e.speed * (1 if x[i] > W / 2 else -1)
                    mode[i] = "leaving"
                elif kind == "spawn":
                    x[i], v[i], mode[i] = arg, e.speed * (1 if rng.random() < 0.5 else -1), "inside"
                elif kind == "enter":
                    x[i], v[i], mode[i] = (-r, e.speed, "entering") if arg == "left" else (W + r, -e.speed, "entering")
                elif kind == "stop" and mode[i] == "inside":
                    v[i] = 0.0
                elif kind == "go" and mode[i] == "inside":
                    v[i] = e.speed * (1 if arg == "right" else -1)
                elif kind == "exit" and mode[i] == "inside":
                    if v[i] == 0.0:
                        v[i] = e.speed * (1 if x[i] > W / 2 else -1)
                    mode[i] = "leaving"
                pending[i].pop(0)
            if mode[i] == "absent":
                continue
            if s > 0:
                x[i] += v[i] * dt
            if mode[i] == "entering" and r <= x[i] <= W - r:
                mode[i] = "inside"
            elif mode[i] == "inside" and (x[i] < r or x[i] > W - r):
                x[i] = 2 * r - x[i] if x[i] < r else 2 * (W - r) - x[i]
                v[i] = -v[i]
                scene.instants.append({"entity": e.id, "action": "bounce", "time": round(t, 2)})
            elif mode[i] == "leaving" and (x[i] + r <= 0 or x[i] - r >= W):
                mode[i], x[i], v[i] = "absent", math.nan, 0.0
                absent_since[i] = t
        # Collisions between partners that are both inside and approaching.
        for a, b in scene.collide_pairs:
            i, j = idx[a], idx[b]
            if mode[i] != "inside" or mode[j] != "inside":
                continue
            ri = half_width(scene.entities[i].category, scene.entities[i].radius)
            rj = half_width(scene.entities[j].category, scene.entities[j].radius)
            dx = x[j] - x[i]
            if abs(dx) < ri + rj and dx * (v[i] - v[j]) > 0:
                for k, toward in ((i, dx), (j, -dx)):
                    if v[k] * toward > 0:
                        v[k] = -v[k]
                for k, other in ((a, b), (b, a)):
                    scene.instants.append({"entity": k, "action": "collide", "other": other, "time": round(t, 2)})
        for i in range(n):
            X[i, s], V[i, s] = x[i], v[i]
    scene.x, scene.vx = X, V


def _runs(flag: np.ndarray) -> list[tuple[int, int]]:
    """Maximal [start, end] step-index runs where flag is True (inclusive)."""
    f = np.concatenate([[False], flag, [False]]).astype(np.int8)
    d = np.diff(f)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def contact_actions(instants: list[dict], last: float, half: float = 0.5) -> list[dict]:
    """Bounce/collide contacts -> +-`half` s actions. Repeated contacts of one entity with the same wall or
    partner whose spans touch (a shape squeezed between a wall and its partner ping-pongs every few frames)
    are one action spanning first - half .. last + half with a `contacts` count: as separate events their
    overlapping windows would be unlearnable label noise (Standby/Response flicker within a second)."""
    groups: dict[tuple, list[float]] = {}
    for c in sorted(instants, key=lambda c: c["time"]):
        key = (c["entity"], c["action"], c.get("other"))
        runs = groups.setdefault(key, [])
        if runs and c["time"] - runs[-1][-1] <= 2 * half:
            runs[-1].append(c["time"])
        else:
            runs.append([c["time"]])
    out = []
    for (entity, action, other), runs in groups.items():
        for times in runs:
            item = {"entity": entity, "action": action, "start": round(max(0.0, times[0] - half), 2),
                    "end": round(min(last, times[-1] + half), 2), "contact_time": times[0], "contacts": len(times)}
            if other is not None:
                item["other"] = other
            out.append(item)
    return out


def trajectory_actions(scene: Scene, min_move: float = 1.0, min_stop: float = 1.0) -> list[dict]:
    """Durative actions read off the trajectory: enter / exit (first pixel in -> fully in, and back),
    move_left / move_right (fully in frame, moving), stop (fully in frame, still), plus bounce/collide contacts
    as +-0.5 s spans. Each: {entity, action, start, end, ...}; `truncated` when the video ends mid-action."""
    W, dt = scene.width, 1.0 / SIM_HZ
    last = scene.duration
    out = []
    for i, e in enumerate(scene.entities):
        x, v, r = scene.x[i], scene.vx[i], half_width(e.category, e.radius)
        present = ~np.isnan(x)
        xs = np.where(present, x, 0.0)
        full = present & (xs - r >= -1e-6) & (xs + r <= W + 1e-6)
        partial = present & ~full
        n_enter = 0
        for a, b in _runs(partial):
            entering = (v[a] > 0 and xs[a] < W / 2) or (v[a] < 0 and xs[a] > W / 2)
            kind = "enter" if entering else "exit"
            side = "left" if xs[a] < W / 2 else "right"
            item = {"entity": e.id, "action": kind, "start": round(a * dt, 2), "end": round((b + 1) * dt, 2),
                    "side": side}
            if kind == "enter":
                item["occurrence"] = n_enter
                n_enter += 1
            if b == len(x) - 1:
                item["truncated"] = True
                item["end"] = float(last)
            if a == 0 and kind == "enter":
                continue  # already partly in view at t=0: not an observed entry
            out.append(item)
        for kind, flag, min_len in (("move_right", full & (v > 0), min_move), ("move_left", full & (v < 0), min_move),
                                    ("stop", full & (v == 0), min_stop)):
            for a, b in _runs(flag):
                if (b - a) * dt >= min_len:
                    out.append({"entity": e.id, "action": kind, "start": round(a * dt, 2),
                                "end": round(min(b * dt, last), 2)})
    out.extend(contact_actions(scene.instants, float(last)))
    out.sort(key=lambda a: (a["start"], a["entity"], a["action"]))
    return out
