"""SAM2 frame preprocessing (stvl_jax.models.sam2.host.preprocess) against the references it must equal.

transformers' `Sam2VideoVideoProcessor` needs torchvision, which cannot be installed next to the CPU torch here
(docs/sam2.md). Its resize is `torchvision.transforms.v2.functional.resize(uint8, BILINEAR, antialias=True)`,
which on an AVX2/AVX512 CPU is exactly `torch.nn.functional.interpolate` on the uint8 tensor (torchvision's
`_do_native_uint8_resize_on_cpu`), followed by the fused `(x - 255 mean) / (255 std)` in float32
(`TorchvisionBackend.rescale_and_normalize`): that composition is the reference here. Meta's `sam2` frame loader
(`load_video_frames_from_jpg_images`) runs as is.
"""

import os

import numpy as np
import pytest

from stvl_jax.models.sam2.host.preprocess import (
    IMAGENET_MEAN, IMAGENET_STD, Sam2PreprocessConfig, preprocess_frames, resize_bilinear_antialias,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch


def _torch_uint8_resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return F.interpolate(t, (h, w), mode="bilinear", align_corners=False, antialias=True).permute(0, 2, 3, 1).numpy()


@pytest.fixture(autouse=True)
def _avx2():
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("torchvision resizes uint8 natively only on AVX2/AVX512 CPUs")


@pytest.mark.parametrize("hw,out", [((48, 64), (1024, 1024)), ((1080, 1920), (1024, 1024)),
                                    ((2000, 3000), (1024, 1024)), ((37, 1500), (64, 64)), ((720, 1280), (512, 384)),
                                    ((1024, 1024), (1024, 1024))])
def test_resize_equals_torch_uint8_antialias(hw, out):
    frames = np.random.default_rng(hw[0]).integers(0, 256, (1, *hw, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear_antialias(frames, *out), _torch_uint8_resize(frames, *out))


def test_random_sizes_equal_torch():
    rng = np.random.default_rng(7)
    for _ in range(12):
        h, w, oh, ow = (int(x) for x in rng.integers(2, 1100, 4))
        frames = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_bilinear_antialias(frames, oh, ow), _torch_uint8_resize(frames, oh, ow))


def test_preprocess_equals_hf_video_processor_arithmetic():
    frames = np.random.default_rng(0).integers(0, 256, (3, 480, 640, 3), dtype=np.uint8)
    ref = torch.from_numpy(_torch_uint8_resize(frames, 1024, 1024)).permute(0, 3, 1, 2).to(torch.float32)
    mean = torch.tensor(IMAGENET_MEAN) * (1.0 / (1 / 255))
    std = torch.tensor(IMAGENET_STD) * (1.0 / (1 / 255))
    ref = (ref - mean[:, None, None]) / std[:, None, None]
    got = preprocess_frames(frames, Sam2PreprocessConfig())
    assert got.shape == (3, 3, 1024, 1024) and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref.numpy())


def test_pil_bicubic_equals_meta_sam2_loader(tmp_path):
    from PIL import Image

    load_video_frames_from_jpg_images = pytest.importorskip("sam2.utils.misc").load_video_frames_from_jpg_images

    frames = np.random.default_rng(1).integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    for i, f in enumerate(frames):  # PNG bytes under .jpg names: PIL reads by content, and nothing is lossy
        Image.fromarray(f).save(os.path.join(tmp_path, f"{i}.jpg"), format="PNG")
    ref, h, w = load_video_frames_from_jpg_images(str(tmp_path), 64, offload_video_to_cpu=True,
                                                   compute_device=torch.device("cpu"))
    got = preprocess_frames(frames, Sam2PreprocessConfig(image_size=64, resample="pil_bicubic"))
    assert (h, w) == (90, 120)
    np.testing.assert_array_equal(got, ref.numpy())


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(np.zeros((1, 8, 8, 3), np.float32), Sam2PreprocessConfig())
    with pytest.raises(ValueError):
        Sam2PreprocessConfig(image_size=1024, stride=4)  # unknown key
