"""Where the bytes of shipped weights come from, each file checked against the manifest before it is read.

The manifest (models/manifest.json, in the wheel) lists every shipped `model.tag`: its file, SHA-256, size, measured
error and preprocessing. The weight files themselves stay out of the wheel; `shipped_weights` finds one, in order:

1. the repository copy, `src/resnets/assets/weights/<file>` (a checkout or an editable install; `$RESNETS_WEIGHTS_DIR`
   names another folder, e.g. an offline mirror);
2. the torch hub cache, `torch.hub.get_dir()/checkpoints/resnets/<file>` (`$TORCH_HOME` moves it);
3. a download from `$RESNETS_WEIGHTS_URL/<file>` (no default host), hashed while it streams into a temporary file
   beside the cached name and renamed onto it only when the SHA-256 matches: a corrupt download is refused and not
   kept.

Each file is hashed once per process (cached by path, size and mtime). A repository copy that does not match is an
error (someone changed the file); a damaged cached copy is never used: it is downloaded again when
`$RESNETS_WEIGHTS_URL` is set, else refused with one line naming it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..io import UnreadableFileError, atomic_write_bytes, atomic_write_text, first_line
from . import weights as weight_files  # pretrained_dir() is looked up at each call (tests point it elsewhere)

MANIFEST_FILE = Path(__file__).with_name("manifest.json")
URL_ENV = "RESNETS_WEIGHTS_URL"
DIR_ENV = "RESNETS_WEIGHTS_DIR"
TIMEOUT_S = 60.0  # per socket operation, not for the whole file
_CHUNK = 1 << 20
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> its SHA-256


class WeightsUnavailableError(FileNotFoundError):
    """Shipped weights found nowhere: not in the repository, not cached, and not downloadable."""


@lru_cache(maxsize=1)
def manifest() -> dict[str, dict[str, Any]]:
    """`model.tag` -> {file, sha256, size, dataset, test_top1_error, preprocess} of every shipped weight file."""
    return json.loads(MANIFEST_FILE.read_text())["weights"]


def local_dir() -> Path:
    """The repository's copies: `$RESNETS_WEIGHTS_DIR`, else the package's assets/weights (absent from a wheel)."""
    named = os.environ.get(DIR_ENV, "").strip()
    return Path(named).expanduser() if named else weight_files.pretrained_dir()


def cache_dir() -> Path:
    """Downloaded weights: torch's hub cache, beside torchvision's and timm's (`$TORCH_HOME` moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / "resnets"


def base_url() -> str | None:
    url = os.environ.get(URL_ENV, "").strip()
    return url.rstrip("/") if url else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_once(path: Path) -> str:
    """The file's SHA-256, computed once per process while its size and mtime stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = file_sha256(path)
    return _verified[key]


def _mismatch(path: Path, entry: Mapping[str, Any]) -> str | None:
    """Why `path` is not the file the manifest describes (size first: no need to hash a truncated file), or None."""
    size = path.stat().st_size
    if entry.get("size") is not None and size != entry["size"]:
        return f"has {size:,} bytes, not the manifest's {entry['size']:,}"
    found = _sha256_once(path)
    if found != entry["sha256"]:
        return f"has SHA-256 {found[:16]}..., not the manifest's {entry['sha256'][:16]}..."
    return None


def expected(name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the file of `name` must hash to: the SHA-256 in its .json, written with the file by `resnets analyze ship`
    (the manifest's entry, size included, when the two agree: always for the package's weights, which
    tests/test_fetch.py checks; a file shipped since, or into another folder, is checked by its .json alone)."""
    entry = manifest().get(name)
    digest = meta.get("sha256") or (entry or {}).get("sha256")
    if not digest:
        raise UnreadableFileError(f"shipped weights {name} are not in {MANIFEST_FILE} and their .json has no sha256; "
                                  "ship them again with `resnets analyze ship`")
    return dict(entry) if entry is not None and entry["sha256"] == digest else {"sha256": digest, "size": None}


def shipped_weights(name: str, file_name: str, meta: Mapping[str, Any]) -> Path:
    """A verified local file of shipped weights `name` (`resnet20.paper`), stored as `file_name`: the repository's
    copy, else the cached one, else downloaded into the cache. One error line when none can be had."""
    entry = expected(name, meta)
    local = local_dir() / file_name
    if local.is_file():
        if problem := _mismatch(local, entry):
            raise UnreadableFileError(
                f"{local} (weights {name}) {problem}: the file was changed or damaged; restore it (git checkout -- "
                f"{local.name}), or if it was re-shipped on purpose regenerate {MANIFEST_FILE.name} "
                "(resnets.models.pretrained.write_manifest())")
        return local
    cached = cache_dir() / file_name
    damage = _mismatch(cached, entry) if cached.is_file() else None
    if cached.is_file() and damage is None:
        return cached
    url = base_url()
    if url is None:
        if damage:
            raise UnreadableFileError(f"the cached copy {cached} of weights {name} {damage} (damaged); delete it and "
                                      f"set {URL_ENV} to fetch it again, or copy a good {file_name} there")
        raise WeightsUnavailableError(
            f"weights {name} ({file_name}) are not installed (no {local}) nor cached (no {cached}); set {URL_ENV} to "
            f"a base URL that serves {file_name}, or copy the file to {cached}")
    return _download(f"{url}/{file_name}", cached, name, entry)


def _download(url: str, target: Path, name: str, entry: Mapping[str, Any]) -> Path:
    """`url` into `target` through a temporary file, renamed only once its SHA-256 matches the manifest."""
    digest = hashlib.sha256()
    size = f" ({entry['size'] / 1e6:.1f} MB)" if entry.get("size") else ""
    print(f"resnets: downloading weights {name}{size} from {url} to {target}", file=sys.stderr)

    def write(file: Any) -> None:
        try:
            response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
        except (OSError, ValueError, http.client.HTTPException) as error:  # URLError, HTTPError, timeouts, bad URL
            reason = error.reason if isinstance(error, urllib.error.URLError) else first_line(error)
            raise WeightsUnavailableError(
                f"cannot download weights {name} from {url} ({reason}) and no good cached copy at {target}; check "
                f"{URL_ENV} and the network, or copy {target.name} to {target}") from None
        with response:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise WeightsUnavailableError(f"download of weights {name} from {url} broke off "
                                                  f"({first_line(error)}); nothing was cached: try again") from None
                if not chunk:
                    break
                digest.update(chunk)
                file.write(chunk)

    def verify(_: Path) -> None:
        if digest.hexdigest() != entry["sha256"]:
            raise UnreadableFileError(
                f"refused the download of weights {name} from {url}: SHA-256 {digest.hexdigest()[:16]}... is not "
                f"the manifest's {entry['sha256'][:16]}... (corrupt or wrong file); nothing was cached: fix the "
                f"file on the server or {URL_ENV}")

    atomic_write_bytes(target, write, verify)  # removes the temporary file when write or verify raises
    stat = target.stat()  # hashed as it streamed in: not again in this process
    _verified[(str(target.resolve()), stat.st_size, stat.st_mtime_ns)] = digest.hexdigest()
    return target


def manifest_entry(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest records of a weight file and its .json: the bytes (name, hash, size), what they measured and
    how inputs are prepared (the per-pixel mean image itself stays in the weight file and its .json)."""
    preprocess = {key: value for key, value in (meta.get("preprocess") or {}).items() if key != "mean_image"}
    if (meta.get("preprocess") or {}).get("mean_image") is not None:
        preprocess["mean_image"] = "per-pixel mean image, stored in the weight file"
    return {"file": path.name, "sha256": file_sha256(path), "size": path.stat().st_size,
            "task": meta.get("task", "classification"), "dataset": meta.get("dataset"),
            "test_top1_error": meta.get("test_top1_error"),
            "test_images": meta.get("test_images"), "preprocess": preprocess}


def write_manifest_file(entries: Mapping[str, Mapping[str, Any]], path: Path = MANIFEST_FILE) -> Path:
    document = {"about": "shipped weights: file, SHA-256, size, measured error, preprocessing; the files are fetched "
                         f"from ${URL_ENV}/<file> into the torch hub cache when the repository copy is absent",
                "weights": dict(sorted(entries.items()))}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
    manifest.cache_clear()
    return path
