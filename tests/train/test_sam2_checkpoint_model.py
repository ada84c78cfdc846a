"""SAM2 training checkpoints double as model checkpoints (slow: ~1 min of compiles on 2 cores; in .ci/run's slow
step, which the clip-step tests of test_sam2_train.py are not)."""

from __future__ import annotations

import numpy as np
import pytest

from .test_sam2_train import _cfg, _one_device_mesh


@pytest.mark.slow
def test_every_checkpoint_step_holds_its_model(vos_set, tmp_path):
    """A step directory's `model/` is that step's SAM2 checkpoint (what `stvl eval vos` loads), and keep-last-K
    removes it with the step. Image-only steps: the cheaper step to compile."""
    from stvl_jax import load_model
    from stvl_jax.errors import CheckpointError
    from stvl_jax.nn.params import flat_params
    from stvl_jax.train.sam2_trainer import Sam2Trainer

    tr = Sam2Trainer(_cfg(vos_set, tmp_path, "steps=2", "data.image_frames=true", "data.video_frames=false",
                          "checkpoint.every=1", "checkpoint.keep=1"), mesh=_one_device_mesh())
    tr.run()
    tr.close()
    steps = tmp_path / "checkpoints"
    assert sorted(p.name for p in steps.iterdir() if p.name.isdigit()) == ["2"]
    with pytest.raises(CheckpointError, match="is a training checkpoint step; its model is .*2/model"):
        load_model(str(steps / "2"))
    model = load_model(str(steps / "2" / "model"))
    assert model.family == "sam2_video"
    loaded = {k: np.asarray(v.get_value()) for k, v in flat_params(model).items()}
    want = tr.flat_params()
    assert set(loaded) == set(want)
    for k, v in want.items():
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
