"""Files, written and read safely: atomic writes (temporary file + fsync + rename) and verified weights-only loading.

Every file this package writes goes through `atomic_write_bytes`, so an interrupted write never leaves a half file
under the real name; every torch file it reads goes through `load_torch_file`, never as a pickle.

Torch files verify themselves: `torch.save` writes a zip archive whose every member carries the CRC-32 of its bytes,
but `torch.load` never checks them (a file with bytes flipped inside a tensor loads without a word). Each load here
first checks every member against its CRC (`verify_torch_file`, about 1 GB/s), and each torch file written here is
checked the same way before it replaces the previous one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch


class UnreadableFileError(ValueError):
    """A file that exists but cannot be used: truncated, corrupt, foreign or not weights-only."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Any, verify: Any = None) -> Path:
    """Call write(file_object) on a temporary file beside `path`, fsync, `verify(temporary path)` if given, then
    rename over `path`: the old file stays until the new one is complete (and verified)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: Path) -> Path:
    return atomic_write_bytes(path, lambda f: torch.save(obj, f), verify=verify_torch_file)


def verify_torch_file(path: Path) -> None:
    """Check every member of a torch (zip) file against the CRC-32 stored with it; UnreadableFileError naming the
    file and the damaged member. Files in torch's legacy non-zip format carry no checksums and pass unchecked."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as error:
        raise UnreadableFileError(f"{path} is damaged ({first_line(error)})") from None
    if damaged is not None:
        raise UnreadableFileError(f"{path} is damaged: {damaged} does not match the checksum written with it")


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, document: Any) -> Path:
    return atomic_write_text(path, json.dumps(document, indent=2))


def first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def load_torch_file(path: str | Path, what: str = "file", hint: str = "") -> Any:
    """`torch.load(weights_only=True)` on the CPU with one clear error naming the file (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        verify_torch_file(path)
    except UnreadableFileError as error:
        raise UnreadableFileError(f"{error}; the {what} is corrupt (disk or copy error): do not use it"
                                  f"{'; ' + hint if hint else ''}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or unsafe files
        raise UnreadableFileError(f"{path}: not a readable weights-only PyTorch {what} ({first_line(exc)})"
                                  f"{'; ' + hint if hint else ''}") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """A JSON file, or one clear error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnreadableFileError(f"{path} is not valid JSON ({error})") from None


def update_json(path: str | Path, entries: dict[str, Any]) -> Path:
    """Add `entries` to the JSON object in `path` (created if absent; an entry of the same key is replaced), written
    atomically: records that grow one measurement at a time keep everything measured before."""
    path = Path(path)
    earlier = read_json(path, "record") if path.is_file() else {}
    if not isinstance(earlier, dict):
        raise UnreadableFileError(f"{path} holds a JSON {type(earlier).__name__}, not an object of entries; move it "
                                  "aside or name another file")
    return atomic_write_json(path, {**earlier, **entries})
