"""Writing a local file whole or not at all (Beam-free): the one atomic-write primitive.

Pipelines writing to any Beam filesystem wrap it (``transforms.outputs.write_bytes_atomic``).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

__all__ = ["replaced_atomically"]


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
