"""A batch of objects' memory conditioning (bank assembly + memory attention) on a 2x2x2 mesh == one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters.sam2_video_keys import memory_attention_keys, memory_embedding_keys

from stvl_jax.models.sam2.memory_attention import MemoryAttention
from stvl_jax.models.sam2.memory_bank import MemoryBank, MemoryEmbeddings, assemble_memory, num_pointer_tokens
from stvl_jax.models.sam2.memory_config import MemoryAttentionConfig, MemoryBankConfig
from stvl_jax.models.sam2.memory_encoder import sine_position_encoding
from stvl_jax.sharding import describe_shardings, host_to_mesh, make_mesh, place_on_mesh
from sam2_memory_helpers import random_loaded

H, W, T, CAP, OBJECTS = 4, 4, 8, 2, 4


def test_objects_on_2x2x2_mesh_match_one_device():
    bank_cfg = MemoryBankConfig(hidden_dim=128, num_maskmem=3, max_object_pointers_in_encoder=4)
    att_cfg = MemoryAttentionConfig(hidden_size=128, num_layers=2, num_heads=2, ffn_hidden_size=64,
                                    rope_feat_sizes=(W, H))
    emb = random_loaded(lambda: MemoryEmbeddings(bank_cfg, rngs=nnx.Rngs(0)), memory_embedding_keys(bank_cfg, "", ""),
                        0)
    att = random_loaded(lambda: MemoryAttention(att_cfg, rngs=nnx.Rngs(0)), memory_attention_keys(att_cfg, "", ""),
                        1)
    rng = np.random.default_rng(2)
    banks = []
    for o in range(OBJECTS):  # a different tracking state per object
        bank = MemoryBank.empty(T, H * W, 64, 128, dtype=jnp.float32)
        for t in range(o, o + 4):
            bank = bank.store(t, rng.normal(size=(H * W, 64)), rng.normal(size=(128,)), t == o)
        banks.append(bank)
    banks = jax.tree.map(lambda *x: jnp.stack(x), *banks)
    cur = rng.normal(size=(OBJECTS, H * W, 128)).astype(np.float32)
    cur_pos = rng.normal(size=(OBJECTS, H * W, 128)).astype(np.float32)
    pos_table = jnp.asarray(sine_position_encoding(H, W, 64).reshape(H * W, 64))
    n_ptr = num_pointer_tokens(bank_cfg, CAP)

    def step(emb, att, banks, cur, cur_pos, f):
        memory, memory_pos, mask, _ = jax.vmap(
            lambda b: assemble_memory(emb, b, pos_table, f, cond_capacity=CAP, num_frames=T))(banks)
        return att(cur, memory, cur_pos, memory_pos, num_object_pointer_tokens=n_ptr, memory_mask=mask)

    single = np.asarray(nnx.jit(step)(emb, att, banks, cur, cur_pos, 5))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
        for m in (emb, att):
            place_on_mesh(m, mesh)
        assert describe_shardings(nnx.state(att), mesh).replicated_fraction < 0.5
        assert att.layers.linear1.kernel.get_value().sharding.spec == jax.P(None, "fsdp", "tensor")
        on_mesh = lambda x: host_to_mesh(x, mesh, ("act_batch",) + (None,) * (np.ndim(x) - 1))  # noqa: E731
        out = nnx.jit(step)(emb, att, jax.tree.map(on_mesh, banks), on_mesh(cur), on_mesh(cur_pos), 5)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), single, atol=1e-4, rtol=0)
