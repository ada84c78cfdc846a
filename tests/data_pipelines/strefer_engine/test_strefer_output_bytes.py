"""Re-running the engine writes the same bytes: each tf.train.Example reaches its ArrayRecord file with the feature
map in key order (`tfds_dataset.CanonicalExampleWriter`), not in the order of protobuf's map hash, which is
seeded per process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _entry(key: bytes, value: bytes) -> bytes:
    """Wire bytes of one `Features.feature` map entry {key: Feature(bytes_list=[value])} (short strings only)."""
    feature = b"\x0a" + bytes([len(value) + 2]) + b"\x0a" + bytes([len(value)]) + value  # bytes_list{value}
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature  # key = 1, value = 2
    return b"\x0a" + bytes([len(entry)]) + entry  # Features.feature = 1 (a map: one entry per occurrence)


def _example(*entries: bytes) -> bytes:
    features = b"".join(entries)
    return b"\x0a" + bytes([len(features)]) + features  # Example.features = 1


def test_writer_puts_the_feature_map_in_key_order(tmp_path):
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    from tensorflow_datasets.core.file_adapters import FileFormat

    from data_pipelines.strefer.tfds_dataset import CanonicalExampleWriter

    a, b = _entry(b"a", b"x"), _entry(b"b", b"yz")
    path = str(tmp_path / "t.array_record")
    CanonicalExampleWriter(file_format=FileFormat.ARRAY_RECORD).write(
        path, [("k0", _example(b, a)), ("k1", _example(a, b))]
    )
    src = ArrayRecordDataSource([path])
    assert len(src) == 2 and src[0] == src[1] == _example(a, b)


RUN = (
    "import sys\nfrom data_pipelines.strefer.config import EngineConfig\n"
    "from data_pipelines.strefer.run import run_engine\n"
    "print(run_engine(sys.argv[1], sys.argv[2], EngineConfig())['examples'])\n"
)


# ~10 s of CPU (a fresh process imports Beam, TFDS and PyAV); 20-24 s wall measured on 2 cores at load ~15
def test_two_runs_in_two_processes_write_the_same_bytes(strefer_set, tmp_path):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    root = tmp_path / "set"
    (root / "videos").mkdir(parents=True)
    (root / "annotations").mkdir()
    shutil.copy(os.path.join(strefer_set, "videos", "synth_00001.mp4"), root / "videos")
    shutil.copy(os.path.join(strefer_set, "annotations", "synth_00001.json"), root / "annotations")
    # one run in this process, one in a fresh one: protobuf's map hash seed differs between them
    assert run_engine(str(root / "videos"), str(tmp_path / "out0"), EngineConfig())["examples"] == 2  # 12-16 s
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(root / "videos"), str(tmp_path / "out1")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) == 2
    shards = [
        {
            p.name: p.read_bytes()
            for p in sorted((tmp_path / out / "strefer" / "1.0.0").iterdir())
            if "array_record" in p.name
        }
        for out in ("out0", "out1")
    ]
    assert len(shards[0]) >= 1 and shards[0].keys() == shards[1].keys()
    for name in shards[0]:
        assert shards[0][name] == shards[1][name], name
