"""Multi-process vision gather (`stvl_jax.train.batches._global_vision`): two real CPU processes (gloo), each
holding half of a global batch, must prepare exactly the vision inputs one process prepares from the whole
batch — for float32 rows, raw uint8 rows, raw uint8 channels-last rows and raw uint8 whole frames — and refuse
processes that send pixels of different kinds.

Run as a script, this file is one of the two processes: `python test_global_vision_gather.py PID PORT OUT`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

BATCH, IMAGE_GRID, VIDEO_GRID = 4, (1, 4, 4), (2, 4, 4)
KINDS = ("float32", "uint8", "channels_last", "frames")


def _model_config():
    from stvl_jax.train.config import ModelSection

    return ModelSection(config="qwen3vl_tiny").resolve_arch()


def _batch(config, kind: str, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows of one global batch (images and videos), pixels of `kind`. Pixel rows depend only on
    the global row, so the halves of two processes concatenate to the one-process batch."""
    from stvl_jax.train.config import DataConfig
    from stvl_jax.train.data import SyntheticSource

    cfg = DataConfig.from_dict({"batch_size": BATCH, "synthetic": {
        "seq_len": 96, "image_grid": list(IMAGE_GRID), "video_grid": list(VIDEO_GRID)}})
    batch = SyntheticSource(cfg, config, seed=3, process_index=process_index, process_count=process_count).make(0)
    if kind == "float32":
        return batch
    local = BATCH // process_count
    vc = config.vision
    for key, grid in (("pixel_values", IMAGE_GRID), ("pixel_values_videos", VIDEO_GRID)):
        # frames: flat bytes, one frame per temporal patch of an image, T of a video
        per_patch = (vc.patch_size**2 * vc.in_channels * (1 if key == "pixel_values" else vc.temporal_patch_size),)
        row = {"channels_last": vc.channels_last_row, "frames": per_patch}.get(kind, (vc.patch_dim,))
        blocks = [np.random.default_rng([7, len(key), g]).integers(0, 256, (int(np.prod(grid)), *row), np.uint8)
                  for g in range(process_index * local, (process_index + 1) * local)]
        if kind == "frames":
            blocks = [b.reshape(-1) for b in blocks]
        batch[key] = np.concatenate(blocks)
    return batch


def _vision_arrays(host) -> dict[str, np.ndarray]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(host.inputs.vision)[0]
    return {**{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}, "grids": host.grids}


def _worker(pid: int, port: int, out: str) -> None:
    from stvl_jax.errors import InputError
    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.batches import prepare_host_batch
    from stvl_jax.train.config import DistributedConfig
    from stvl_jax.train.distributed import initialize

    initialize(DistributedConfig(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid))

    config, mesh = _model_config(), make_mesh({"data": 4})
    result = {}
    for kind in KINDS:
        host = prepare_host_batch(config, _batch(config, kind, pid, 2), mesh)
        np.savez(f"{out}.{pid}.{kind}.npz", **_vision_arrays(host))
    # process 0 channels-last, process 1 the HF row layout: both processes must refuse the batch
    try:
        prepare_host_batch(config, _batch(config, "channels_last" if pid == 0 else "uint8", pid, 2), mesh)
        result["mixed"] = "accepted"
    except InputError as e:
        result["mixed"] = str(e)
    Path(f"{out}.{pid}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_gather_the_one_process_vision_inputs(tmp_path):
    import jax

    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.batches import prepare_host_batch

    from .conftest import subprocess_env

    out, port = str(tmp_path / "gather"), _free_port()
    procs = [subprocess.Popen([sys.executable, __file__, str(pid), str(port), out], env=subprocess_env(devices=2),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)

    config = _model_config()
    mesh = make_mesh({"data": 4}, devices=jax.devices()[:4])
    for kind in KINDS:
        whole = _batch(config, kind)
        assert whole["pixel_values"].dtype == (np.float32 if kind == "float32" else np.uint8)
        assert whole["pixel_values"].ndim == {"channels_last": 3, "frames": 1}.get(kind, 2)
        expected = _vision_arrays(prepare_host_batch(config, whole, mesh))
        for pid in (0, 1):
            got = dict(np.load(f"{out}.{pid}.{kind}.npz"))
            assert got.keys() == expected.keys(), kind
            for name, value in expected.items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{kind} {name} (process {pid})")
    for pid in (0, 1):
        mixed = json.loads(Path(f"{out}.{pid}.json").read_text())["mixed"]
        assert "processes sent pixels of different kinds" in mixed and "[2, 3]" in mixed, mixed


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
