"""3D RoPE of the SegPrompter: hand-computed rotations, the relative-position property for keys and the
time-only rotation of queries."""

import math

import jax.numpy as jnp
import numpy as np

from stvl_jax.models.virst.rope3d import (apply_pair_rotation, key_angles, query_angles, rope3d_split)

D = 32  # VIRST: 256 wide, 8 heads


def rotate(x, angles):
    """x (S, D) one head -> rotated (S, D)."""
    return np.asarray(apply_pair_rotation(jnp.asarray(x)[:, None, :], jnp.asarray(angles))[:, 0])


def test_split_is_upstreams():
    assert rope3d_split(32) == (10, 2)  # t, y, x parts of 10 each + 2 unrotated
    assert rope3d_split(64) == (20, 4)


def test_key_rotation_by_hand():
    # memory of T=2 frames on a 4x4 grid, row (t=1, y=2, x=3) = 1*16 + 2*4 + 3 = 27
    ang = key_angles(2, 4, D)
    row = 27
    pairs = np.ones((ang.shape[0], D), np.float32) * (np.arange(D) % 2 == 0)  # every pair = (1, 0)
    out = rotate(pairs, ang)[row]
    # pair i of the t part (channels 0..9): angle 1 * 10000^(-i/5); y part (10..19): 2 * ...; x part: 3 * ...
    for part, pos in enumerate((1, 2, 3)):
        for i in range(5):
            a = pos * 10000.0 ** (-i / 5)
            c = part * 10 + 2 * i
            np.testing.assert_allclose(out[c], math.cos(a), atol=1e-6)
            np.testing.assert_allclose(out[c + 1], math.sin(a), atol=1e-6)
    np.testing.assert_array_equal(out[30:], [1.0, 0.0])  # the 2 free channels are untouched


def test_pair_rotation_is_interleaved_not_half():
    # one pair (x0, x1) = (0.3, -0.7) rotated by angle a: (x0 cos - x1 sin, x1 cos + x0 sin)
    ang = np.zeros((1, D // 2), np.float32)
    ang[0, 0] = 0.5
    x = np.zeros((1, D), np.float32)
    x[0, 0], x[0, 1], x[0, 16] = 0.3, -0.7, 2.0
    out = rotate(x, ang)[0]
    np.testing.assert_allclose(out[:2], [0.3 * math.cos(0.5) + 0.7 * math.sin(0.5),
                                         -0.7 * math.cos(0.5) + 0.3 * math.sin(0.5)], atol=1e-6)
    assert out[16] == 2.0 and np.count_nonzero(out[2:16]) == 0


def test_keys_relative_position_property():
    # <R(p) q, R(p') k> depends only on p' - p: shift both positions by the same (dt, dy, dx)
    rng = np.random.default_rng(0)
    T, G = 6, 8
    ang = key_angles(T, G, D)
    q, k = rng.normal(size=(2, D)).astype(np.float32)

    def idx(t, y, x):
        return (t * G + y) * G + x

    def score(p, pk):
        rq = rotate(np.broadcast_to(q, (len(ang), D)), ang)[idx(*p)]
        rk = rotate(np.broadcast_to(k, (len(ang), D)), ang)[idx(*pk)]
        return float(rq @ rk)

    base = score((0, 1, 2), (3, 4, 1))
    np.testing.assert_allclose(score((2, 3, 5), (5, 6, 4)), base, rtol=1e-5)
    np.testing.assert_allclose(score((1, 0, 3), (4, 3, 2)), base, rtol=1e-5)
    assert abs(score((1, 0, 3), (4, 3, 3)) - base) > 1e-3  # a different offset gives a different score


def test_queries_rotated_by_time_only():
    Q, T = 3, 5
    ang = query_angles(Q, T, D)
    assert ang.shape == (Q * T, D // 2)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(Q * T, D)).astype(np.float32)
    out = rotate(x, ang)
    np.testing.assert_array_equal(out[:, 10:], x[:, 10:])  # y, x and free channels untouched
    for s in range(Q * T):
        t = s % T  # q-major layout: query s belongs to frame s % T
        for i in range(5):
            a = t * 10000.0 ** (-i / 5)
            x0, x1 = x[s, 2 * i], x[s, 2 * i + 1]
            np.testing.assert_allclose(out[s, 2 * i: 2 * i + 2],
                                       [x0 * math.cos(a) - x1 * math.sin(a), x1 * math.cos(a) + x0 * math.sin(a)],
                                       atol=1e-5)


def test_query_key_score_depends_on_frame_offset():
    # a query of frame t against a key at (t', y, x): the time part sees t' - t only
    rng = np.random.default_rng(2)
    T, G = 6, 2
    qa, ka = query_angles(1, T, D), key_angles(T, G, D)
    q, k = rng.normal(size=(2, D)).astype(np.float32)
    rq = rotate(np.broadcast_to(q, (T, D)), qa)
    rk = rotate(np.broadcast_to(k, (len(ka), D)), ka)
    cell = 3  # (y, x) = (1, 1)
    s = lambda t, tk: float(rq[t] @ rk[tk * G * G + cell])  # noqa: E731
    np.testing.assert_allclose(s(1, 3), s(2, 4), rtol=1e-5)
    np.testing.assert_allclose(s(0, 2), s(3, 5), rtol=1e-5)
