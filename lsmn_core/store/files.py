"""Reading and writing the files of a run without trusting what is already on disk.

A write goes to a temporary file that is renamed over its target, so a crash never leaves a
half-written file that looks finished; the rename replaces only a regular file (never a device,
FIFO, socket, symlink or folder someone put in its place), and every OS error becomes one line
naming the path. A read opens regular files only (a FIFO would block forever), of bounded size, and
JSON of bounded nesting and integer size, so a hostile run folder costs an error, not a hang.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from lsmn_core.errors import RunError

JSON_LIMIT = 64 * 2**20  # bytes of one JSON file (a 1,000-task routing.json is a few MB)
HEADER_LIMIT = 16 * 2**20  # bytes of a safetensors header (its tensor names, shapes and offsets)


def os_reason(exc: OSError) -> str:
    """An OS error's reason in words ("No space left on device"), for a one-line message."""
    return exc.strerror or type(exc).__name__


def occupied(path: Path) -> bool:
    """Whether anything, even a broken link, is at `path` (what an export must not replace unasked)."""
    return path.exists() or path.is_symlink()


@contextmanager
def new_folder(out: Path):
    """A folder to fill that becomes `out` when the block ends, and is removed if it ends in an error:
    a write cut short leaves nothing, and the folder is made new (mkdir refuses a name that exists),
    so it is never anyone else's; made as any folder is (the user's umask), since `out` is theirs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name[:100]}-{secrets.token_hex(6)}.partial"
    partial.mkdir()
    try:
        yield partial
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def atomic_write(path: Path, write) -> None:
    """Call write(temp_path), then rename the temporary file over `path`, which must be absent or a
    regular file."""
    path = Path(path)
    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        kind = None
    except OSError as exc:
        raise RunError(f"cannot write {path}: {os_reason(exc)}") from None
    if kind is not None and not stat.S_ISREG(kind):
        what = "a folder" if stat.S_ISDIR(kind) else "a symlink" if stat.S_ISLNK(kind) else "not a regular file"
        raise RunError(f"will not replace {path}: it is {what}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunError(f"cannot write {path}: {os_reason(exc)}") from None
    except SafetensorError as exc:  # safetensors' own I/O errors (a full disk while serializing)
        io_error = re.search(r"I/O error: (.+?)(?: \(os error \d+\))?$", str(exc))
        raise RunError(f"cannot write {path}: {io_error[1] if io_error else exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, default=float)))


def regular_file(path: Path, limit: int | None = None) -> Path:
    """`path` if it is a regular file (of at most `limit` bytes); RunError otherwise, without opening it."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RunError(f"missing file: {path}") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {os_reason(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunError(f"{path}: not a regular file")
    if limit is not None and info.st_size > limit:
        raise RunError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} a run file may hold")
    return path


def read_text(path: Path, limit: int = JSON_LIMIT, errors: str = "strict") -> str:
    try:
        return regular_file(path, limit).read_text(errors=errors)
    except UnicodeDecodeError:
        raise RunError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {os_reason(exc)}") from None


def parse_json(text: str, where):
    """JSON text as data; nesting too deep for Python or integers beyond its 4,300 digits are errors."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RunError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than int() converts
        raise RunError(f"{where}: {str(exc)[:120]}") from None


def read_json(path: Path, limit: int = JSON_LIMIT):
    return parse_json(read_text(path, limit), path)


def json_integer(value) -> bool:
    """Whether a parsed JSON value is an integer; Python's bool is an int, and `true` is no count or index."""
    return isinstance(value, int) and not isinstance(value, bool)


def checked_safetensors(path: Path) -> Path:
    """`path` if it is a regular file whose safetensors header is of bounded size, read before the
    library parses (and allocates for) it."""
    path = regular_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise RunError(f"cannot read {path}: {os_reason(exc)}") from None
    if len(head) < 8:
        raise RunError(f"{path}: not a safetensors file (shorter than its header size)")
    (size,) = struct.unpack("<Q", head)
    if size > HEADER_LIMIT:
        raise RunError(f"{path}: a safetensors header of {size:,} bytes, more than the {HEADER_LIMIT:,} allowed")
    return path
