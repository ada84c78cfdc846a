"""The engine with its videos and output in an object store (what Dataflow workers need: no shared filesystem).

`gs://` is served here by fsspec's in-memory filesystem registered under the `gs`/`gcs` protocols, the way
`etils.epath` reaches Cloud Storage when TensorFlow is absent (through gcsfs). The DirectRunner runs in this
process, so the workers see the same store.
"""

import json
import os

import pytest

from strefer_helpers import read_dataset


@pytest.fixture
def fake_gcs():
    """gs:// backed by memory for the duration of a test -> the store's dict (paths -> files)."""
    import importlib

    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    registry = importlib.import_module("fsspec.registry")  # the module (fsspec.registry is a read-only view)

    class FakeGCS(MemoryFileSystem):
        protocol = ("gs", "gcs")
        store: dict = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            # as gcsfs: "gs://bucket/key" -> "bucket/key" (epath puts the scheme back on what glob returns)
            path = os.fspath(path)
            for scheme in ("gs://", "gcs://"):
                path = path.removeprefix(scheme)
            return path.rstrip("/")

    saved = {k: registry._registry.get(k) for k in FakeGCS.protocol}
    for name in FakeGCS.protocol:
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    FakeGCS.clear_instance_cache()
    yield FakeGCS.store
    for name, cls in saved.items():
        registry._registry.pop(name, None)
        if cls is not None:
            registry._registry[name] = cls


def _upload(local_dir: str, uri: str) -> None:
    from etils import epath

    for root, _, files in os.walk(local_dir):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), local_dir)
            dst = epath.Path(f"{uri}/{rel}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(open(os.path.join(root, f), "rb").read())


def _download(store: dict, prefix: str, local_dir: str) -> None:
    """Every object under `prefix` (bucket/key) from the fake store to `local_dir`."""
    for key, f in store.items():
        if key.startswith(prefix + "/"):
            dst = os.path.join(local_dir, key[len(prefix) + 1:])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as out:
                out.write(f.getvalue())


def test_videos_and_output_in_gcs(fake_gcs, strefer_set, strefer_run, tmp_path):
    from etils import epath

    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    local_summary, local_examples = strefer_run
    _upload(strefer_set, "gs://bkt/set")
    s = run_engine("gs://bkt/set/videos", "gs://bkt/out", EngineConfig())
    assert s["counters"] == local_summary["counters"] and s["examples"] == local_summary["examples"] == 14
    assert s["out"].startswith("gs://bkt/out/strefer/")
    assert s["dead_letter_path"] == "gs://bkt/out/dead_letter.jsonl" and s["dead_letters"] == 0
    assert epath.Path(s["dead_letter_path"]).read_text() == ""
    shards = [f for f in epath.Path(s["out"]).iterdir() if ".array_record-" in f.name]
    assert shards, "no ArrayRecord shard was uploaded"

    _download(fake_gcs, "bkt/out", str(tmp_path))
    examples = read_dataset(str(tmp_path))
    assert [e["clip_id"] for e in examples] == [e["clip_id"] for e in local_examples]
    local_videos = os.path.join(strefer_set, "videos")
    for remote, local in zip(examples, local_examples):
        assert remote["video"] == "gs://bkt/set/videos/" + os.path.basename(local["video"])
        for k in local:
            a, b = remote[k], local[k]
            if k in ("video", "record"):  # the clip reference names the store
                a = json.loads(json.dumps(a).replace("gs://bkt/set/videos", local_videos))
            assert (a == b).all() if hasattr(b, "shape") else a == b, (local["clip_id"], k)


def test_remote_bad_videos_are_dead_letters(fake_gcs, bad_videos, strefer_set):
    from etils import epath

    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    def put(local, uri):
        epath.Path(uri).parent.mkdir(parents=True, exist_ok=True)
        epath.Path(uri).write_bytes(open(local, "rb").read())

    put(bad_videos["truncated"], "gs://bkt/bad/videos/truncated.mp4")
    put(bad_videos["good"], "gs://bkt/bad/videos/orphan.mp4")  # no ground truth: the annotator refuses it
    # and one good video: the run completes
    put(os.path.join(strefer_set, "videos", "synth_00002.mp4"), "gs://bkt/bad/videos/synth_00002.mp4")
    put(os.path.join(strefer_set, "annotations", "synth_00002.json"), "gs://bkt/bad/annotations/synth_00002.json")
    s = run_engine("gs://bkt/bad/videos", "gs://bkt/bad/out", EngineConfig())
    assert s["examples"] > 0 and s["counters"]["videos"] == 3
    dead = [json.loads(line) for line in epath.Path("gs://bkt/bad/out/dead_letter.jsonl").read_text().splitlines()]
    assert {(os.path.basename(d["element"] if isinstance(d["element"], str) else d["element"]["video"]),
             d["stage"], d["reason"]) for d in dead} == {("truncated.mp4", "clip", "bad_video"),
                                                         ("orphan.mp4", "annotate", "no_ground_truth")}
    assert all((d["element"] if isinstance(d["element"], str) else d["element"]["video"]).startswith("gs://")
               for d in dead)


def test_local_copies_keep_the_latest_and_clean_up(fake_gcs, tmp_path):
    from etils import epath

    from data_pipelines.storage import LocalCopies

    for i in range(3):
        epath.Path(f"gs://bkt/v/{i}.mp4").parent.mkdir(parents=True, exist_ok=True)
        epath.Path(f"gs://bkt/v/{i}.mp4").write_bytes(bytes([i]) * 10)
    copies = LocalCopies(keep=2)
    assert copies.local(str(tmp_path / "x.mp4")) == str(tmp_path / "x.mp4")  # local paths as given
    a = copies.local("gs://bkt/v/0.mp4")
    assert open(a, "rb").read() == bytes([0]) * 10 and copies.local("gs://bkt/v/0.mp4") == a  # reused
    b = copies.local("gs://bkt/v/1.mp4")
    copies.local("gs://bkt/v/0.mp4")  # 0 is now the most recent: 1 goes when 2 arrives
    c = copies.local("gs://bkt/v/2.mp4")
    assert os.path.exists(a) and not os.path.exists(b) and open(c, "rb").read() == bytes([2]) * 10
    copies.close()
    assert not os.path.exists(os.path.dirname(a))


def test_training_from_a_remote_dataset_says_copy_it_first():
    from data_pipelines.errors import AnnotationError
    from data_pipelines.grain.sources import open_source

    with pytest.raises(AnnotationError, match="read from local disk only.*copy the dataset"):
        open_source("tfds:strefer/train@gs://bkt/out")
