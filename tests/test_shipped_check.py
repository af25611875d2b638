"""Every shipped classifier gives the error in its metadata on every test/validation image, through a loop that uses
only `create_model` and `preprocess` (issue #35). benchmarks/check_shipped.py runs that loop over all images (773 s
on 2 cores of an Intel Xeon @ 2.80GHz: too long for CI) and records each image's predicted class in
results/shipped-check.json. Here, in a minute or two:

- the record covers every shipped classifier file, by its SHA-256: new or re-saved weights need the benchmark again;
- each net's recorded predictions, scored against the labels of the folders here, give the recorded error, and that
  is the metadata's within 0.1 points;
- a spread sixteenth of each net's images, run through the same loop again, gets the predictions the record holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resnets import list_pretrained
from resnets.data.decoded import spread_indices
from resnets.io import read_json

from .conftest import REPOSITORY, load_benchmark, skip_without_data

RECORD = REPOSITORY / "results" / "shipped-check.json"
RERUN_EVERY = 16  # 625 CIFAR test images, 245 Imagenette photos per net
CHECK = load_benchmark("check_shipped")
NAMES = CHECK.shipped_classifiers()
SHIPPED = list_pretrained()


@pytest.fixture(scope="module")
def record() -> dict:
    return read_json(RECORD, "shipped-weights record")


def images_of(name: str) -> tuple[list[Path], list[int]]:
    try:
        return CHECK.labelled_images(name)
    except FileNotFoundError as error:
        skip_without_data(str(error))
        raise


def predictions(entry: dict) -> list[int]:
    return list(bytes.fromhex(entry["predictions_hex"]))


def test_the_record_covers_every_shipped_classifier_file(record: dict) -> None:
    assert {SHIPPED[name]["dataset"] for name in NAMES} == {"cifar10", "imagenette"}, NAMES
    stale = [name for name in NAMES if record.get(name, {}).get("sha256") != SHIPPED[name]["sha256"]]
    assert not stale, (f"results/shipped-check.json lacks these files (or holds older ones): run "
                       f"`python benchmarks/check_shipped.py {' '.join(stale)} --json results/shipped-check.json`")


@pytest.mark.parametrize("name", NAMES)
def test_the_recorded_predictions_give_the_metadata_error(name: str, record: dict) -> None:
    _, labels = images_of(name)
    entry, stated = record[name], SHIPPED[name]
    predicted = predictions(entry)
    assert len(predicted) == len(labels) == entry["images"] == stated["test_images"]
    error = 100 * sum(p != y for p, y in zip(predicted, labels, strict=True)) / len(labels)
    assert error == pytest.approx(entry["top1_error"], abs=1e-9)
    assert abs(error - stated["test_top1_error"]) <= 0.1, (name, error, stated["test_top1_error"])
    if "check_all" in stated:  # ResNet-56/110: shipped with an fp32 pass over the cached test set, another path
        assert abs(error - stated["check_all"]["top1_error"]) <= 0.02, (name, error, stated["check_all"])


@pytest.mark.parametrize("name", NAMES)
def test_a_spread_of_images_gets_the_recorded_predictions(name: str, record: dict) -> None:
    """At most one image may change its class: another CPU's fp32 kernels round differently, which can flip a
    near-tie; a changed weight file or preprocessing flips many."""
    paths, _ = images_of(name)
    chosen = spread_indices(len(paths), len(paths) // RERUN_EVERY).tolist()
    again = CHECK.predict(name, [paths[i] for i in chosen])
    recorded = predictions(record[name])
    changed = [(paths[i].name, recorded[i], p) for i, p in zip(chosen, again, strict=True) if recorded[i] != p]
    assert len(chosen) >= 240 and len(changed) <= 1, (name, changed)


def test_the_report_section_checks_each_file_by_its_hash(tmp_path: Path) -> None:
    from resnets.analysis.shipped_check import shipped_check_section
    from resnets.io import atomic_write_json

    first, second = NAMES[0], NAMES[-1]

    def entry(name: str, off: float, sha256: str | None = None) -> dict:
        return {"sha256": sha256 or SHIPPED[name]["sha256"], "images": 10, "folder": "somewhere",
                "top1_error": SHIPPED[name]["test_top1_error"] + off, "cpu": "a CPU"}

    atomic_write_json(tmp_path / "shipped-check.json", {first: entry(first, 0.05), second: entry(second, 0, "0" * 64)})
    text = "\n".join(shipped_check_section(tmp_path))
    assert f"| `{first}` | 10 (somewhere) |" in text and f"| `{second}` |" not in text  # an older file's number
    assert "within 0.1 points: yes (largest difference +0.05" in text and f"`{second}`" in text.split("re-saved:")[1]
    atomic_write_json(tmp_path / "shipped-check.json", {first: entry(first, -0.3)})
    assert "within 0.1 points: no (largest difference -0.30" in "\n".join(shipped_check_section(tmp_path))
    assert shipped_check_section(tmp_path / "nothing") == []


def test_a_record_grows_one_entry_at_a_time_and_refuses_what_it_cannot_merge(tmp_path: Path) -> None:
    from resnets.io import UnreadableFileError, update_json

    path = tmp_path / "record.json"
    update_json(path, {"a": 1, "b": 2})
    update_json(path, {"b": 3, "c": 4})  # b measured again: replaced; a kept
    assert read_json(path) == {"a": 1, "b": 3, "c": 4}
    path.write_text("[1, 2]")
    with pytest.raises(UnreadableFileError, match="holds a JSON list, not an object of entries; move it aside"):
        update_json(path, {"a": 1})
    path.write_text('{"a": 1')  # cut short
    with pytest.raises(UnreadableFileError, match="is not valid JSON"):
        update_json(path, {"a": 1})
    assert path.read_text() == '{"a": 1'  # nothing lost
