"""Storage: local paths and `gs://` alike, for every file the project reads or writes.

Paths go through `etils.epath`; on `gs://` epath uses fsspec's `gcsfs` (the JSON API), chosen here
before either is first used (`EPATH_USE_TF=false`: TensorFlow's GCS filesystem is not used; the
plain, non-zonal gcsfs client), and orbax writes arrays through TensorStore's own GCS driver.
Nothing here, or anywhere in the project, reads or stores credentials: gcsfs, TensorStore and
google-cloud-storage find the default ones themselves (on a TPU VM the VM's service account), and
`STORAGE_EMULATOR_HOST` (with `TENSORSTORE_GCS_HTTP_URL`) points all three at an emulator.

An object store has no directories, no appends and no atomic rename, but a new object appears only
once it is completely uploaded; so a file written whole (`write_bytes`) is atomic there, and a
directory is committed by a marker written after its files (stage `_SUCCESS` markers, orbax's
`commit_success.txt`).
"""

from __future__ import annotations

import os

os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import contextlib  # noqa: E402
import functools  # noqa: E402
from typing import Iterator  # noqa: E402

import fsspec.config  # noqa: E402
from etils import epath  # noqa: E402

# No cached directory listings: another host (or an earlier attempt) writes the same bucket, and a
# stale listing would make a written object look missing or a removed one present.
for _protocol in ("gs", "gcs"):
    fsspec.config.conf.setdefault(_protocol, {})["use_listings_cache"] = False

# Bytes and requests of `read_range`, for measuring what a host reads.
READ_STATS = {"bytes": 0, "requests": 0}


class StorageError(ValueError):
    """A path that cannot be read or written: no such bucket, no such object, or no permission;
    the message names the path and what to do."""


def is_remote(path: epath.PathLike) -> bool:
    """True for an object-store URL (gs://...), false for a local path."""
    return "://" in os.fspath(path)


def bucket_of(path: epath.PathLike) -> str | None:
    """The bucket of a gs:// path (None for a local one)."""
    text = os.fspath(path)
    if not text.startswith("gs://"):
        return None
    return text[len("gs://"):].split("/", 1)[0]


@functools.lru_cache(maxsize=None)
def _filesystem(protocol: str):
    import fsspec

    return fsspec.filesystem(protocol)


def filesystem(path: epath.PathLike):
    """The fsspec filesystem of a path (gcsfs for gs://, the local one otherwise)."""
    text = os.fspath(path)
    return _filesystem(text.split("://", 1)[0] if is_remote(text) else "file")


def _object_of(error: BaseException) -> str | None:
    """The gs:// object a gcsfs error is about, from the request URL or path in its message."""
    import re
    import urllib.parse

    text = urllib.parse.unquote(str(error))
    m = re.search(r"/b/([^/?\s]+)/o(?:/([^?\s]+)|\?(?:[^\s]*&)?name=([^&\s]+))?", text)
    if not m:
        return None
    return f"gs://{m.group(1)}/{m.group(2) or m.group(3) or ''}".rstrip("/")


def _denied(path: str, error: BaseException) -> StorageError:
    where = _object_of(error)
    what = f" ({where})" if where and where != path else ""
    return StorageError(f"{path}: permission denied{what}; grant the VM's service account access to the "
                        "bucket (roles/storage.objectAdmin to write, roles/storage.objectViewer to read), "
                        "or use a bucket it can use")


def _is_denied(error: BaseException) -> bool:
    code = getattr(error, "code", None)
    text = str(error)[:200]
    return (isinstance(error, PermissionError) or code in (401, 403) or text.startswith("Forbidden")
            or "403" in text or "PERMISSION_DENIED" in text)


def check_bucket(path: epath.PathLike) -> None:
    """Raises StorageError unless the bucket of a gs:// path exists and can be reached (nothing to
    check for a local path). Nothing creates buckets: writing into a missing one would fail half
    way, so a run checks before it writes anything."""
    bucket = bucket_of(path)
    if bucket is None:
        return
    fs = filesystem(path)
    try:
        fs.ls(bucket, detail=False)  # a listing needs the bucket and the permission to read it
    except FileNotFoundError:
        raise StorageError(f"{os.fspath(path)}: the bucket gs://{bucket} does not exist; create it "
                           f"(gcloud storage buckets create gs://{bucket}) or fix the path") from None
    except OSError as e:
        if _is_denied(e):
            raise _denied(os.fspath(path), e) from None
        raise


@contextlib.contextmanager
def naming(path: epath.PathLike) -> Iterator[None]:
    """Turns a storage failure inside the block into one StorageError naming `path` (a missing
    object or bucket, a refused permission); other errors pass through."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        bucket = bucket_of(path)
        if bucket is not None and not filesystem(path).exists(bucket):
            raise StorageError(f"{os.fspath(path)}: the bucket gs://{bucket} does not exist") from None
        raise StorageError(f"{os.fspath(path)}: no such file") from None
    except OSError as e:
        if _is_denied(e):
            raise _denied(os.fspath(path), e) from None
        raise


def read_range(path: epath.PathLike, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file, in one read (one ranged GET on gs://)."""
    READ_STATS["bytes"] += end - start
    READ_STATS["requests"] += 1
    text = os.fspath(path)
    if not is_remote(text):
        with open(text, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
    else:
        with naming(text):
            data = filesystem(text).cat_file(text, start=start, end=end)
    if len(data) != end - start:
        raise StorageError(f"{text}: wanted bytes {start}..{end} but the file ends at {start + len(data)}: "
                           "it is truncated")
    return data


def write_bytes(path: epath.PathLike, data: bytes) -> None:
    """Writes a file atomically: on gs:// one upload (the object appears only once complete);
    locally a temporary name in the same directory, flushed, then renamed."""
    path = epath.Path(path)
    if is_remote(path):
        with naming(path):
            with path.open("wb") as f:
                f.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(os.fspath(tmp), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(os.fspath(tmp), os.fspath(path))


def files_under(directory: epath.PathLike) -> list[str]:
    """Relative names of the files under a directory, in sorted order, leaving out hidden ones and
    everything under hidden directories (temporary and work files); none if it does not exist."""
    directory = epath.Path(directory)
    text = os.fspath(directory).rstrip("/")
    out = []
    if is_remote(text):
        fs = filesystem(text)
        with naming(text):
            found = fs.find(text) if fs.exists(text) else []
        prefix = text.split("://", 1)[1] + "/"
        rels = [p[len(prefix):] for p in found if p.startswith(prefix)]
    else:
        rels = []
        for root, _, names in os.walk(text):
            rels += [os.path.relpath(os.path.join(root, n), text) for n in names]
    for rel in rels:
        if not any(part.startswith(".") for part in rel.split("/")):
            out.append(rel)
    return sorted(out)


def copy_tree(source: epath.PathLike, target: epath.PathLike) -> None:
    """Copies the (non-hidden) files under `source` to `target`, local or gs:// either side."""
    source, target = epath.Path(source), epath.Path(target)
    for rel in files_under(source):
        write_bytes(target / rel, (source / rel).read_bytes())


class _EventFile:
    """A TensorBoard event file on an object store: the records written so far, uploaded whole at
    each flush (a new object each time; an object is never appended to)."""

    def __init__(self, path: str):
        self.path = path
        self.buffer = bytearray()
        self.uploaded = -1

    def write(self, data: bytes) -> None:
        self.buffer += data

    def flush(self) -> None:
        if len(self.buffer) != self.uploaded:
            write_bytes(self.path, bytes(self.buffer))
            self.uploaded = len(self.buffer)

    def close(self) -> None:
        self.flush()


class _EventFiles:
    """tensorboardX's writer factory for gs:// (its own needs google-cloud-storage and uploads
    with a generation precondition that fails on close)."""

    def open(self, path: str) -> _EventFile:
        return _EventFile(path)

    def directory_check(self, path: str) -> None:
        pass  # an object store has no directories


def summary_writer(directory: epath.PathLike):
    """A tensorboardX SummaryWriter of event files in `directory`, local or gs://."""
    from tensorboardX import SummaryWriter, record_writer

    record_writer.register_writer_factory("gs", _EventFiles())
    return SummaryWriter(os.fspath(directory))
