"""Where data files live: local paths, or object stores (`gs://`, `s3://`, `az://`) through `etils.epath`, the
layer TFDS itself writes its datasets through (the Strefer engine reads and writes every file here).

    videos, ignored = list_videos("gs://bucket/videos", (".mp4",))  # launcher
    copies = LocalCopies(); local = copies.local(path)               # worker: a file PyAV can open
    with staged_output(shard_uri) as local: write(local)             # worker: a local file, uploaded on exit

PyAV, PySceneDetect and the ArrayRecord writer open local files only (google/array_record#120): a remote video is
copied to the worker's temp folder before it is decoded, and a shard is written locally, then uploaded. Remote
paths need the store's fsspec package on the launcher and the workers (`gcsfs` for gs://, `s3fs` for s3://), or
TensorFlow's `tf.io.gfile`, which epath prefers when TensorFlow is installed.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile

from etils import epath

from data_pipelines.errors import VideoDecodeError
from stvl_jax.errors import InputError


def is_remote(path) -> bool:
    """True for `scheme://...` paths other than `file://`."""
    s = os.fspath(path)
    return "://" in s and not s.startswith("file://")


def normpath(path: str) -> str:
    """`os.path.normpath` that keeps a remote path's `scheme://` (posixpath would fold it to `scheme:/`)."""
    if not is_remote(path):
        return os.path.normpath(path)
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}"


def absolute(path: str) -> str:
    """An absolute local path; a remote one as given."""
    return path if is_remote(path) else os.path.abspath(path)


def isfile(path: str) -> bool:
    return epath.Path(path).is_file()


def read_text(path: str) -> str:
    return epath.Path(path).read_text()


def write_text(path: str, text: str) -> None:
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def list_videos(videos_dir: str, extensions: tuple[str, ...]) -> tuple[list[str], int]:
    """Files under `videos_dir` ending in `extensions` (recursive, sorted, absolute or full URIs)
    -> (paths, other files ignored)."""
    root = absolute(videos_dir)
    if not epath.Path(root).is_dir():
        raise InputError(f"--videos {videos_dir!r}: not a directory")
    scheme = root.split("://", 1)[0] + "://" if is_remote(root) else ""
    paths, other = [], 0
    for d, _, files in epath.Path(root).walk():
        d = os.fspath(d)
        if scheme and not d.startswith(scheme):  # fsspec stores (gcsfs, s3fs) walk without the scheme
            d = scheme + d.lstrip("/")
        for f in files:
            if f.lower().endswith(extensions):
                paths.append(posixpath.join(d, f) if scheme else os.path.join(d, f))
            else:
                other += 1
    paths.sort()
    if not paths:
        raise InputError(f"--videos {videos_dir!r}: no video files ({', '.join(extensions)}) in it")
    return paths, other


class LocalCopies:
    """Local files for remote paths, the `keep` most recently used kept on disk (a worker often gets several
    clips of one video). Local paths come back unchanged. One per DoFn instance: `close()` in `teardown`."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._dir: str | None = None
        self._files: dict[str, str] = {}  # uri -> local copy, least recently used first
        self._made = 0

    def local(self, path: str) -> str:
        if not is_remote(path):
            return path
        if path in self._files:
            self._files[path] = self._files.pop(path)
            return self._files[path]
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="stvl-videos-")
        while len(self._files) >= self.keep:
            os.remove(self._files.pop(next(iter(self._files))))
        self._made += 1
        dst = os.path.join(self._dir, f"{self._made}_{posixpath.basename(path)}")
        try:
            epath.Path(path).copy(dst, overwrite=True)
        except FileNotFoundError:
            raise VideoDecodeError(path, "no such file") from None
        self._files[path] = dst
        return dst

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._files = None, {}


@contextlib.contextmanager
def staged_output(path):
    """Yields a path a local-only writer can write; a remote `path` gets the file uploaded on a clean exit."""
    if not is_remote(path):
        yield os.fspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="stvl-shard-") as d:
        local = os.path.join(d, posixpath.basename(os.fspath(path)))
        yield local
        epath.Path(local).copy(epath.Path(path), overwrite=True)
