"""Shipped weights outside the wheel (models/fetch.py): an installed wheel is simulated by an empty repository folder
($RESNETS_WEIGHTS_DIR), the torch hub cache by a scratch $TORCH_HOME, the weights' host by `http.server` on 127.0.0.1
serving one temporary folder. The file used is resnet20-fast.pt (1.1 MB), the smallest shipped."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import resnets
from resnets.cli import main
from resnets.io import UnreadableFileError
from resnets.models import fetch
from resnets.models.fetch import WeightsUnavailableError
from resnets.models.pretrained import list_pretrained, weight_file

REPOSITORY_WEIGHTS = Path(resnets.__file__).parent / "assets" / "weights"
FILE = "resnet20-fast.pt"
# The file's SHA-256 as shipped (resnet20-fast.json, and `sha256sum` on the file), written out here.
SHA256 = "dd874c70f361e2bc27a4d8081fc33e0dd850df3143a24f12f0d6e41175475d0c"


class Server:
    """A static file server for one folder, recording the path of every GET."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.requests = folder, []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "served" / "weights").mkdir(parents=True)
    running = Server(tmp_path / "served")
    yield running
    running.stop()


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel's view: no repository copies, an empty torch hub cache; returns the cache folder of our weights."""
    (tmp_path / "no-weights").mkdir()
    monkeypatch.setenv(fetch.DIR_ENV, str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME unless set_dir was called
    monkeypatch.delenv(fetch.URL_ENV, raising=False)
    assert fetch.cache_dir() == tmp_path / "torch" / "hub" / "checkpoints" / "resnets"
    return fetch.cache_dir()


def serve(server: Server, data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    (server.folder / "weights" / FILE).write_bytes(data)
    monkeypatch.setenv(fetch.URL_ENV, server.url + "/")  # a trailing slash is fine


def damaged(data: bytes) -> bytes:
    """The same number of bytes, one flipped in the middle (inside a tensor: only the hash can tell)."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def good_bytes() -> bytes:
    return (REPOSITORY_WEIGHTS / FILE).read_bytes()


def same_as_shipped(model: torch.nn.Module) -> bool:
    shipped = torch.load(REPOSITORY_WEIGHTS / FILE, weights_only=True)["model"]
    return all(torch.equal(value, shipped[key]) for key, value in model.state_dict().items())


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert text and "\n" not in text, text
    return text


def test_first_use_fetches_checks_and_caches_the_second_does_not(installed: Path, server: Server,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    serve(server, good_bytes(), monkeypatch)
    hashed = []
    monkeypatch.setattr(fetch, "file_sha256", lambda path: hashed.append(path) or fetch.hashlib.sha256(
        Path(path).read_bytes()).hexdigest())
    model = resnets.create_model("resnet20", pretrained="fast")
    assert server.requests == ["/weights/resnet20-fast.pt"]
    assert sorted(p.name for p in installed.iterdir()) == [FILE]  # no temporary file left beside it
    assert fetch.hashlib.sha256((installed / FILE).read_bytes()).hexdigest() == SHA256
    assert same_as_shipped(model) and model.meta["pretrained"] == "resnet20.fast"
    assert "downloading weights resnet20.fast (1.1 MB) from http://127.0.0.1:" in capsys.readouterr().err
    again = resnets.create_model("resnet20.fast")
    resnets.load_model("resnet20.fast")
    assert server.requests == ["/weights/resnet20-fast.pt"]  # the cache, not the server
    assert same_as_shipped(again)
    assert hashed == []  # hashed while it downloaded: not again for the loads of this process
    assert resnets.resolve_pretrained("resnet20.fast").path == installed / FILE


def test_a_corrupted_download_is_refused_and_not_kept(installed: Path, server: Server,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    serve(server, damaged(good_bytes()), monkeypatch)
    with pytest.raises(UnreadableFileError) as error:
        resnets.create_model("resnet20.fast")
    text = one_line(error)
    assert text.startswith(f"refused the download of weights resnet20.fast from {server.url}/resnet20-fast.pt: "
                           "SHA-256 ") and "nothing was cached" in text
    assert not installed.exists() or list(installed.iterdir()) == []
    assert main(["predict", "x.jpg", "--pretrained", "resnet20.fast"]) == 2  # the CLI: the same one line


def test_a_damaged_cached_copy_is_fetched_again(installed: Path, server: Server,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    installed.mkdir(parents=True)
    (installed / FILE).write_bytes(damaged(good_bytes()))
    with pytest.raises(UnreadableFileError) as error:  # without a URL: refused, naming the copy
        resnets.create_model("resnet20.fast")
    assert one_line(error).startswith(f"the cached copy {installed / FILE} of weights resnet20.fast has SHA-256 ")
    (installed / FILE).write_bytes(good_bytes()[:1000])  # truncated: told by its size
    with pytest.raises(UnreadableFileError, match=r"has 1,000 bytes, not the manifest's 1,132,949 \(damaged\)"):
        resnets.create_model("resnet20.fast")
    serve(server, good_bytes(), monkeypatch)
    assert same_as_shipped(resnets.create_model("resnet20.fast"))
    assert server.requests == ["/weights/resnet20-fast.pt"]
    assert (installed / FILE).read_bytes() == good_bytes()


def test_no_network_and_no_cache_says_what_to_do(installed: Path, server: Server,
                                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
                                                 ) -> None:
    with pytest.raises(WeightsUnavailableError) as error:
        resnets.create_model("resnet20.fast")
    assert one_line(error) == (
        f"weights resnet20.fast (resnet20-fast.pt) are not installed (no {fetch.local_dir() / FILE}) nor cached "
        f"(no {installed / FILE}); set RESNETS_WEIGHTS_URL to a base URL that serves resnet20-fast.pt, or copy "
        f"the file to {installed / FILE}")
    serve(server, good_bytes(), monkeypatch)
    server.stop()  # the host is down
    with pytest.raises(WeightsUnavailableError) as error:
        resnets.create_model("resnet20.fast")
    text = one_line(error)
    assert text.startswith(f"cannot download weights resnet20.fast from {server.url}/resnet20-fast.pt (")
    assert text.endswith(f"check RESNETS_WEIGHTS_URL and the network, or copy resnet20-fast.pt to {installed / FILE}")
    assert not installed.exists() or list(installed.iterdir()) == []
    capsys.readouterr()
    assert main(["predict", "x.jpg", "--pretrained", "resnet20.fast"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "resnets predict: error: cannot download weights resnet20.fast")


def test_the_repository_copy_is_used_offline_and_checked(tmp_path: Path, server: Server,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fetch.DIR_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    serve(server, good_bytes(), monkeypatch)
    assert resnets.resolve_pretrained("resnet20.fast").path == REPOSITORY_WEIGHTS / FILE
    assert server.requests == [] and not (tmp_path / "torch").exists()
    changed = tmp_path / "checkout"
    changed.mkdir()
    (changed / FILE).write_bytes(damaged(good_bytes()))
    monkeypatch.setenv(fetch.DIR_ENV, str(changed))
    with pytest.raises(UnreadableFileError) as error:
        resnets.create_model("resnet20.fast")
    assert one_line(error).startswith(f"{changed / FILE} (weights resnet20.fast) has SHA-256 ")
    assert server.requests == []  # a changed repository file is an error, not a reason to download


def test_the_manifest_describes_every_shipped_file() -> None:
    shipped = list_pretrained(task=None)  # classifiers and detectors alike
    entries = fetch.manifest()
    assert sorted(entries) == sorted(shipped)
    assert entries["resnet20.fast"]["sha256"] == SHA256 and entries["resnet20.fast"]["size"] == 1132949
    for name, meta in shipped.items():
        path = weight_file(meta["model"], meta["tag"])
        entry = entries[name]
        assert entry["file"] == path.name and entry["size"] == path.stat().st_size, name
        assert entry["sha256"] == meta["sha256"] == fetch.file_sha256(path), name
        assert entry["test_top1_error"] == meta.get("test_top1_error") and entry["dataset"] == meta["dataset"], name
        assert entry["preprocess"].get("kind") == (meta.get("preprocess") or {}).get("kind"), name
        assert entry["task"] == meta.get("task", "classification"), name


def test_the_weight_files_stay_out_of_the_wheel_and_the_sdist() -> None:
    """The packaging rules (the built wheel's size, 0.7 MB, is measured with `python -m build`: docs/pretrained.md)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    repository = REPOSITORY_WEIGHTS.parents[3]
    config = tomllib.loads((repository / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-data"]["resnets"] == ["assets/*.txt", "assets/weights/*.json", "models/manifest.json"]
    assert "assets/weights/*.pt" in config["exclude-package-data"]["resnets"]
    assert "recursive-exclude src/resnets/assets/weights *.pt" in (repository / "MANIFEST.in").read_text()
