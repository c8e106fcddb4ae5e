"""Files, Beam-free: writing a local file whole or not at all (the one atomic-write primitive;
pipelines wrap it as ``transforms.outputs.write_bytes_atomic``), and the content digest that
identifies an input file (``protocols.totals.InputFile``).

**Digest.** ``file_digest`` is SHA-256 over the SHA-256 digests of the file's consecutive
:data:`DIGEST_CHUNK_BYTES` chunks (one chunk for a smaller file), prefixed ``sha256c64m:``. The
chunks are the splits of the digest: each is hashed on its own, so a huge file is digested by
several threads (hashlib releases the GIL) and identical files get identical digests whatever
their names or how they were split.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from typing import BinaryIO, Callable, Iterator

__all__ = ["DIGEST_CHUNK_BYTES", "DIGEST_PREFIX", "chunk_digest", "combine_digests",
           "digest_chunks", "file_digest", "replaced_atomically"]

# 64 MiB digest chunks: at ~1 GB/s of SHA-256 one chunk takes ~60 ms, so a file of a few chunks
# spreads over the digest threads, and the per-chunk overhead (open, seek) is negligible.
DIGEST_CHUNK_BYTES = 64 << 20
DIGEST_PREFIX = "sha256c64m:"
_READ_BYTES = 4 << 20  # read/hash step: large enough that hashlib releases the GIL for most of it


def digest_chunks(size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` byte ranges of a ``size``-byte file's digest chunks (one if empty)."""
    bounds = list(range(0, max(size, 1), DIGEST_CHUNK_BYTES)) + [size]
    return list(zip(bounds[:-1], bounds[1:])) if size else [(0, 0)]


def chunk_digest(fo: BinaryIO, start: int, end: int) -> bytes:
    """SHA-256 of bytes ``[start, end)`` of the open file ``fo``; ``ValueError`` if it is short."""
    h = hashlib.sha256()
    fo.seek(start)
    left = end - start
    while left > 0:
        data = fo.read(min(_READ_BYTES, left))
        if not data:
            raise ValueError(f"file ended {left} bytes before byte {end} while digesting")
        h.update(data)
        left -= len(data)
    return h.digest()


def combine_digests(chunks: list[bytes]) -> str:
    """The file digest from its chunk digests, in order."""
    return DIGEST_PREFIX + hashlib.sha256(b"".join(chunks)).hexdigest()


def file_digest(open_file: Callable[[], BinaryIO], size: int) -> str:
    """The content digest of a ``size``-byte file (``open_file()`` opens it for reading),
    chunk by chunk in this thread."""
    chunks = []
    for start, end in digest_chunks(size):
        with open_file() as fo:
            chunks.append(chunk_digest(fo, start, end))
    return combine_digests(chunks)


@contextlib.contextmanager
def replaced_atomically(path: str) -> Iterator[str]:
    """``with replaced_atomically(PATH) as tmp:`` write the file ``tmp``; on success it replaces
    ``PATH`` by one rename (``os.replace``), on failure it is removed and ``PATH`` is untouched.
    ``tmp`` is a fresh hidden sibling of ``PATH`` (same directory, so the rename is atomic; not
    created here, so the writer's permissions apply); the directory is created if needed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
