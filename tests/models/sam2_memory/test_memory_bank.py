"""Memory bank (static shapes) vs transformers' `Sam2VideoModel`: closest conditioning-frame selection, and the
whole memory conditioning of a frame (`_prepare_memory_conditioned_features`: memory gathering, temporal
embeddings, object pointers + their positions, memory attention) on hand-made tracking states, forward and
reverse; the memory encoding of a frame (`_encode_new_memory`)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from flax import nnx  # noqa: E402

from converters.sam2_video_keys import (flat_to_hf, memory_attention_keys, memory_embedding_keys,  # noqa: E402
                                        memory_encoder_keys)
from stvl_jax.models.sam2.memory_attention import MemoryAttention  # noqa: E402
from stvl_jax.models.sam2.memory_bank import (MemoryBank, MemoryEmbeddings, _select_closest,  # noqa: E402
                                              condition_on_memory, encode_memory)
from stvl_jax.models.sam2.memory_config import (MemoryAttentionConfig, MemoryBankConfig,  # noqa: E402
                                                MemoryEncoderConfig)
from stvl_jax.models.sam2.memory_encoder import MemoryEncoder, sine_position_encoding  # noqa: E402
from stvl_jax.nn.params import flat_params  # noqa: E402
from sam2_memory_helpers import SHAPES, build_loaded, state_numpy, tiny_hf_config, tiny_hf_model  # noqa: E402

TOL = 1e-4
CAP = 4  # conditioning frames per object
T_CAP, T = 12, 10  # bank capacity, video length


@pytest.fixture(scope="module")
def models():
    out = {}
    for shape, extra in (("a", {}), ("b", {"max_object_pointers_in_encoder": 4})):
        hf_cfg = tiny_hf_config(shape, **extra)
        hf = tiny_hf_model(hf_cfg, seed=3)
        d = hf_cfg.to_dict()
        out[shape] = (hf, MemoryBankConfig.from_hf(d), MemoryAttentionConfig.from_hf(d),
                      MemoryEncoderConfig.from_hf(d), state_numpy(hf))
    return out


def _ours(models, shape, **bank_changes):
    hf, bank_cfg, att_cfg, enc_cfg, sd = models[shape]
    bank_cfg = bank_cfg.replace(**bank_changes)
    emb = build_loaded(lambda: MemoryEmbeddings(bank_cfg, rngs=nnx.Rngs(0)), memory_embedding_keys(bank_cfg, "", ""),
                       sd)
    att = build_loaded(lambda: MemoryAttention(att_cfg, rngs=nnx.Rngs(0)),
                       memory_attention_keys(att_cfg, "memory_attention.", ""), sd)
    enc = build_loaded(lambda: MemoryEncoder(enc_cfg, rngs=nnx.Rngs(0)),
                       memory_encoder_keys(enc_cfg, "memory_encoder.", ""), sd)
    return emb, att, enc


@pytest.mark.parametrize("max_cond", [-1, 1, 2, 3])
def test_closest_conditioning_frames_match_transformers(models, max_cond):
    hf = models["a"][0]
    rng = np.random.default_rng(max_cond + 10)
    select = jax.jit(lambda t, valid, rank, f: _select_closest(t, valid, rank, f, max_cond))
    for _ in range(60):
        n = int(rng.integers(1, CAP + 1))
        inserted = [int(x) for x in rng.choice(T, size=n, replace=False)]  # insertion order
        f = int(rng.integers(0, T))
        ref, _ = hf._select_closest_cond_frames(f, {t: None for t in inserted}, max_cond)
        t = np.full(CAP, -1, np.int32)
        rank = np.zeros(CAP, np.int32)
        order = sorted(inserted)  # the bank lists conditioning frames by index
        t[:n] = order
        rank[:n] = [inserted.index(x) for x in order]
        got = np.asarray(select(t, t >= 0, rank, f))
        assert sorted(t[got].tolist()) == sorted(ref), (inserted, f, max_cond)


# (shape, reverse, max_cond_frame_num, frame, conditioning frames in insertion order, tracked frames, streaming,
#  training: pointers of future conditioning frames too)
SCENARIOS = [
    ("a", False, -1, 8, [5, 0], [1, 2, 3, 4, 6, 7], False, False),
    ("a", False, -1, 5, [8, 2], [1, 3, 4], False, True),  # training selection: frame 8's pointer too
    ("a", False, 2, 5, [8, 3, 4, 6], [1, 2, 7], False, False),  # 3 and 8 unselected; 3 comes back as a previous frame
    ("a", True, 2, 2, [7, 3, 9], [4, 5, 6, 8], False, False),  # reverse after a forward pass
    ("a", False, -1, 9, [0], [2, 3, 5, 6, 7, 8], True, False),  # streaming: pointer offsets normalised by 15, not 9
    ("b", False, 2, 5, [8, 2, 4, 6], [0, 1, 3, 7], False, False),  # 4 memories, at most 4 pointers
    ("b", True, -1, 1, [6], [2, 3, 4, 5, 7, 8, 9], False, False),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s[0]}-{'rev' if s[1] else 'fwd'}-m{s[2]}-f{s[3]}"
                                                      f"{'-stream' if s[6] else ''}{'-train' if s[7] else ''}"
                                                      for s in SCENARIOS])
def test_memory_conditioning_matches_transformers(models, scenario):
    shape, reverse, max_cond, frame, cond, tracked, streaming, training = scenario
    n_frames = None if streaming else T
    hf, bank_cfg, att_cfg, _, _ = models[shape]
    h, w = SHAPES[shape]["grid"]
    hw, c, m = h * w, bank_cfg.hidden_dim, bank_cfg.mem_dim
    rng = np.random.default_rng(frame)
    pos_table = sine_position_encoding(h, w, m).reshape(hw, m)
    feats = {t: rng.normal(size=(hw, m)).astype(np.float32) for t in range(T)}
    ptrs = {t: rng.normal(size=(c,)).astype(np.float32) for t in range(T)}
    cur = rng.normal(size=(hw, c)).astype(np.float32)
    cur_pos = rng.normal(size=(hw, c)).astype(np.float32)

    th = lambda a: torch.from_numpy(a)  # noqa: E731
    out = lambda t: {"maskmem_features": th(feats[t])[:, None], "maskmem_pos_enc": th(pos_table)[:, None],  # noqa: E731
                     "object_pointer": th(ptrs[t])[None]}
    session = types.SimpleNamespace(dtype=torch.float32, output_dict_per_obj={0: {
        "cond_frame_outputs": {t: out(t) for t in cond}, "non_cond_frame_outputs": {t: out(t) for t in tracked}}})
    hf.config.max_cond_frame_num = max_cond
    hf.training = training  # the top module only: its pointer selection; submodules stay in eval (no dropout)
    with torch.no_grad():
        ref = hf._prepare_memory_conditioned_features(session, frame, 0, False, th(cur)[:, None], th(cur_pos)[:, None],
                                                      T, track_in_reverse_time=reverse, streaming=streaming)
    hf.training = False
    ref = ref.numpy()[0].reshape(c, hw).T

    emb, att, _ = _ours(models, shape, max_cond_frame_num=max_cond)
    bank = MemoryBank.empty(T_CAP, hw, m, c, dtype=jnp.float32)
    for t in cond + tracked:
        bank = bank.store(t, feats[t], ptrs[t], t in cond)

    no_mem = hf.no_memory_embedding.detach().numpy()

    @jax.jit
    def run(bank, f, n, initial):
        return condition_on_memory(att, emb, bank, cur, cur_pos, jnp.asarray(pos_table), f, initial, no_mem,
                                   cond_capacity=CAP, reverse=reverse, num_frames=n, training=training)

    got = np.asarray(run(bank, frame, n_frames, False))
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    with torch.no_grad():  # an initial conditioning frame: no memory, the no-memory embedding instead
        ref_init = hf._prepare_memory_conditioned_features(session, frame, 0, True, th(cur)[:, None],
                                                           th(cur_pos)[:, None], T, track_in_reverse_time=reverse)
    np.testing.assert_allclose(np.asarray(run(bank, frame, n_frames, True)), ref_init.numpy()[0].reshape(c, hw).T,
                               atol=TOL, rtol=0)
    # static shapes: other frames, a grown bank and another video length reuse the one compiled step
    for f in range(T):
        run(bank.store(f, feats[f], ptrs[f], False), f, None if streaming else T - 1, False)
    assert run._cache_size() == 1  # (the initial-frame call is the same compiled step too)


def test_encode_memory_matches_transformers(models):
    """HF rounds the encoded memory to bf16; ours in fp32 lies within half a bf16 step of it (+1e-4), and
    rounds to the same bf16 values (almost everywhere: an fp32 difference can straddle a rounding boundary)."""
    hf, bank_cfg, _, enc_cfg, _ = models["a"]
    emb, _, enc = _ours(models, "a")
    h, w = SHAPES["a"]["grid"]
    s = enc_cfg.downsampler_total_stride
    rng = np.random.default_rng(7)
    pix = rng.normal(size=(2, h, w, bank_cfg.hidden_dim)).astype(np.float32)
    logits = (rng.normal(size=(2, h * s, w * s)) * 6).astype(np.float32)
    scores = np.array([[2.0], [-1.0]], np.float32)  # object present, absent (occlusion embedding added)
    for binarize in (False, True):
        with torch.no_grad():
            seq_first = torch.from_numpy(pix.reshape(2, h * w, -1).transpose(1, 0, 2))
            ref, ref_pos = hf._encode_new_memory(seq_first, torch.from_numpy(logits[:, None]),
                                                 torch.from_numpy(scores[:, :, None]),  # (N, 1, 1) as HF has them
                                                 binarize)
        ref = ref.float().numpy().transpose(1, 0, 2).reshape(2, h, w, -1)
        ref_pos = ref_pos.numpy().transpose(1, 0, 2).reshape(2, h, w, -1)
        got, pos = jax.jit(lambda p, lg, sc: encode_memory(emb, enc, p, lg, sc, binarize=binarize))(pix, logits, scores)
        got = np.asarray(got)
        # half a bf16 step is at most |x| * 2^-8
        assert np.all(np.abs(got - ref) <= np.abs(ref) * 2.0 ** -8 + TOL)
        same = np.asarray(jnp.asarray(got).astype(jnp.bfloat16).astype(jnp.float32)) == ref
        assert same.mean() > 0.995
        np.testing.assert_allclose(np.asarray(pos), ref_pos, atol=1e-5, rtol=0)


def test_object_pointer(models):
    hf, bank_cfg, *_ = models["a"]
    emb, _, _ = _ours(models, "a")
    tok = np.random.default_rng(8).normal(size=(2, bank_cfg.hidden_dim)).astype(np.float32)
    with torch.no_grad():
        ref = hf.object_pointer_proj(torch.from_numpy(tok)).numpy()
    got = np.asarray(emb.object_pointer(tok, np.array([[1.0], [-1.0]], np.float32)))
    np.testing.assert_allclose(got[0], ref[0], atol=TOL, rtol=0)
    np.testing.assert_array_equal(got[1], hf.no_object_pointer.detach().numpy()[0])


def test_key_map_round_trip(models):
    hf, bank_cfg, *_ = models["b"]
    sd = state_numpy(hf)
    emb, _, _ = _ours(models, "b")
    params = {k: np.asarray(v.get_value()) for k, v in flat_params(emb).items()}
    entries = memory_embedding_keys(bank_cfg, "", "")
    back = flat_to_hf(entries, params.__getitem__)
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)
    video_only = {k for k in sd if not k.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.",
                                                     "memory_encoder.", "memory_attention.",
                                                     "shared_image_embedding.", "no_memory_embedding"))}
    assert set(back) == video_only


def test_store_keeps_insertion_rank():
    bank = MemoryBank.empty(6, 2, 64, 128, dtype=jnp.float32)
    z, p = np.zeros((2, 64)), np.zeros(128)
    for f, cond in ((4, True), (1, True), (2, False), (4, True), (5, True)):
        bank = bank.store(f, z, p, cond)
    assert np.asarray(bank.kind).tolist() == [0, 1, 2, 0, 1, 1]
    assert np.asarray(bank.cond_rank)[[4, 1, 5]].tolist() == [0, 1, 2]
