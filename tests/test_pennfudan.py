"""Penn-Fudan (Sec. 4.3 on real photos): the annotation parser and its errors, the recorded split, boxes and masks
as torchvision's Mask R-CNN takes them (flips included), mask AP that sees a corrupted mask, and a Mask R-CNN run on
the database that resumes bit-exactly."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.cli import main
from resnets.data.folder import read_image
from resnets.data.paths import datasets_root
from resnets.detection import (
    PENNFUDAN_RECIPE,
    DetectionOptions,
    PennFudanDataset,
    detect_image,
    evaluate_detections,
    evaluate_detector,
    load_detector,
    parse_annotation,
    pennfudan_split,
    train_detector,
)
from resnets.detection.metrics import detections_to_coco
from resnets.detection.ship import ship_detector
from resnets.models import weights as weights_module
from resnets.models.pretrained import list_pretrained

from .conftest import resume_detection_at_iteration_2, skip_without_data


@pytest.fixture(scope="module")
def root() -> Path:
    folder = datasets_root() / "pennfudan"
    if not folder.is_dir():
        skip_without_data(f"needs the Penn-Fudan database at {folder}")
    return folder


def copy_of(root: Path, destination: Path, names: list[str]) -> Path:
    """A small Penn-Fudan folder holding `names` only (photos and masks linked, annotations copied)."""
    for folder in ("JPEGImages", "PedMasks", "Annotation"):
        (destination / folder).mkdir(parents=True)
    for name in names:
        (destination / "JPEGImages" / f"{name}.jpg").symlink_to(root / "JPEGImages" / f"{name}.jpg")
        (destination / "PedMasks" / f"{name}_mask.png").symlink_to(root / "PedMasks" / f"{name}_mask.png")
        shutil.copy(root / "Annotation" / f"{name}.txt", destination / "Annotation" / f"{name}.txt")
    return destination


def test_annotation_is_parsed_to_zero_based_boxes(root: Path) -> None:
    # FudanPed00001.txt: 559 x 536, (160, 182) - (302, 431) and (420, 171) - (535, 486), 1-based inclusive
    size, boxes = parse_annotation(root / "Annotation" / "FudanPed00001.txt")
    assert size == (559, 536)
    assert boxes.tolist() == [[159, 181, 302, 431], [419, 170, 535, 486]]


def test_malformed_annotations_give_one_line_naming_file_and_line(root: Path, tmp_path: Path) -> None:
    folder = copy_of(root, tmp_path / "pf", ["FudanPed00001", "FudanPed00002", "PennPed00001", "PennPed00002"])
    text = (folder / "Annotation" / "FudanPed00001.txt").read_text(encoding="latin-1").splitlines()
    number = next(i for i, line in enumerate(text, 1) if line.startswith("Bounding box for object 2"))
    cases = {"(420, 171) - (535, 486)": "(420, 171) - (535)",  # a coordinate lost
             "(535, 486)": "(600, 486)"}  # outside the 559 px wide photo
    for old, new in cases.items():
        broken = [line.replace(old, new) if i == number else line for i, line in enumerate(text, 1)]
        (folder / "Annotation" / "FudanPed00001.txt").write_text("\n".join(broken), encoding="latin-1")
        with pytest.raises(ValueError) as error:
            for split in ("train", "test"):  # the split holding the photo reads its annotation
                PennFudanDataset(folder, split)
        message = str(error.value)
        assert "\n" not in message and f"FudanPed00001.txt:{number}:" in message, message


def test_split_is_seeded_disjoint_and_complete(root: Path) -> None:
    split = pennfudan_split(root)
    everything = sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg"))
    assert len(split["train"]) == 120 and len(split["test"]) == 50 and len(everything) == 170
    assert sorted(split["train"] + split["test"]) == everything
    assert pennfudan_split(root) == split and pennfudan_split(root, seed=1) != split
    both = {name[:5] for name in split["test"]}
    assert both == {"Fudan", "PennP"}  # a seeded shuffle, not the first or last 50 of the sorted names


def test_items_hold_boxes_and_masks_that_agree_and_flip_together(root: Path) -> None:
    dataset = PennFudanDataset(root, "train")
    image, target = dataset[0]
    count = len(target["boxes"])
    assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert target["masks"].shape == (count, *image.shape[1:]) and target["masks"].dtype == torch.uint8
    assert torch.equal(target["labels"], torch.ones(count, dtype=torch.int64))
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert (tight - box).abs().max() <= 3  # pedestrian K of the text is id K of the mask
    flipping = PennFudanDataset(root, "train", train_flip=True, seed=0)
    seen = set()
    for epoch in range(8):
        flipping.set_epoch(epoch)
        flipped_image, flipped = flipping[0]
        mirrored = flipping.flips(0)
        seen.add(mirrored)
        if mirrored:
            width = image.shape[-1]
            assert torch.equal(flipped_image, image.flip(-1))
            assert torch.equal(flipped["masks"], target["masks"].flip(-1))
            assert flipped["boxes"][:, [2, 0]].tolist() == (width - target["boxes"][:, [0, 2]]).tolist()
        else:
            assert torch.equal(flipped["masks"], target["masks"])
    assert seen == {True, False}


def test_mask_ap_sees_a_corrupted_mask_that_box_ap_does_not(root: Path) -> None:
    dataset = PennFudanDataset(root, "test")
    indices = range(6)
    outputs = []
    for i in indices:
        _, target = dataset[i]
        outputs.append({"boxes": target["boxes"], "labels": target["labels"],
                        "scores": torch.ones(len(target["boxes"])), "masks": target["masks"][:, None].float()})
    ids = [dataset.image_ids[i] for i in indices]
    perfect = evaluate_detections(dataset.coco_document(), detections_to_coco(ids, outputs), ids)
    assert perfect["map"] == pytest.approx(100) and perfect["mask_map"] == pytest.approx(100)
    masks = outputs[0]["masks"].clone()
    masks[0, 0, : masks.shape[2] // 2 + int(outputs[0]["boxes"][0, 1] // 2)] = 0  # the top of the first person gone
    outputs[0] = {**outputs[0], "masks": masks}
    corrupted = evaluate_detections(dataset.coco_document(), detections_to_coco(ids, outputs), ids)
    assert corrupted["map"] == pytest.approx(100) and corrupted["mask_map"] < 99


def test_mask_rcnn_on_pennfudan_resumes_bit_exactly_predicts_masks_and_ships(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg"))[::17]  # 10 photos: 8 train, 2 test
    data = copy_of(root, tmp_path / "pf", names)
    recipe = dataclasses.replace(PENNFUDAN_RECIPE, iterations=4, batch_size=2, warmup_iterations=2, evaluations=1,
                                 image_size=96, max_size=128, train_sizes=(80, 96, 112), rois_per_image=32,
                                 proposals_train=100, proposals_test=50)
    whole = tmp_path / "whole"
    # From the shipped Imagenette backbone: frozen BN from He init is the identity, and activations then blow up
    options = DetectionOptions(data=str(data), out=str(whole), pretrained="resnet18.imagenette", deterministic=True,
                               log_every=1, checkpoint_every=2, progress=False, recipe=recipe)
    with pytest.raises(ValueError, match="test must hold"):
        pennfudan_split(data, test=len(names))
    assert len(pennfudan_split(data)["test"]) == 3  # a copy smaller than the database holds out 30%
    summary = train_detector(options)
    assert summary["complete"] and summary["eval_split"] == "test" and "test_mask_map" in summary
    config = json.loads((whole / "config.json").read_text())
    assert sorted(config["split"]["train"] + config["split"]["test"]) == names

    resume_detection_at_iteration_2(options, capsys)  # as if killed after its checkpoint at iteration 2
    a, _ = load_detector(whole)

    photo = data / "JPEGImages" / f"{config['split']['test'][0]}.jpg"
    assert main(["detect", "predict", str(photo), "--pretrained", str(whole), "--out", str(tmp_path / "drawn"),
                 "--threshold", "0"]) == 0
    assert "found ->" in capsys.readouterr().out and (tmp_path / "drawn" / f"{photo.stem}.png").is_file()
    a.roi_heads.score_thresh = 0.0  # four iterations score below torchvision's 0.05: keep everything
    found = detect_image(a, load_detector(whole)[1], photo, tmp_path / "all.png", score_threshold=0.0)
    assert found and all(d["mask"].dtype == torch.bool and d["mask"].shape == read_image(photo).shape[1:]
                         for d in found)
    assert main(["detect", "eval", "--pretrained", str(whole), "--data", str(data)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["mask_map_50"] == pytest.approx(summary["test_mask_map_50"], abs=1e-6)
    assert np.isfinite(scores["map"])

    # Shipped under the one naming scheme, then found by name; its JSON holds the AP of the fp16 file itself.
    shelf = tmp_path / "weights"
    shelf.mkdir()
    monkeypatch.setattr(weights_module, "pretrained_dir", lambda: shelf)
    monkeypatch.delenv("RESNETS_WEIGHTS_DIR", raising=False)
    path = ship_detector(whole, weights_dir=shelf)
    assert path == shelf / "maskrcnn_resnet18-pennfudan.pt"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["task"] == "detection" and meta["eval_split"] == "test" and meta["split"] == config["split"]
    assert "maskrcnn_resnet18.pennfudan" not in list_pretrained()  # not a classifier: create_model never sees it
    assert main(["detect", "eval", "--pretrained", "maskrcnn_resnet18.pennfudan", "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["mask_map"] == pytest.approx(meta["scores"]["mask_map"], abs=0.005)
    assert main(["models", "--pretrained"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("maskrcnn_resnet18.pennfudan")]
    assert len(listed) == 1 and f"{meta['scores']['map']:.2f}" in listed[0], listed


def test_the_shipped_detector_gives_the_ap_in_its_metadata(root: Path) -> None:
    """maskrcnn_resnet18.pennfudan on the 50 recorded test photos, as `resnets detect eval` runs it: within 0.5 AP
    points of its .json (measured when it was shipped, on the same fp16 file)."""
    shipped = list_pretrained("detection")
    if "maskrcnn_resnet18.pennfudan" not in shipped:
        pytest.fail("maskrcnn_resnet18.pennfudan is not shipped (src/resnets/assets/weights)")
    meta = shipped["maskrcnn_resnet18.pennfudan"]
    detector, _ = load_detector("maskrcnn_resnet18.pennfudan")
    dataset = PennFudanDataset(root, "test")
    assert sorted(dataset.names) == sorted(meta["split"]["test"])  # the split it was trained and measured with
    scores = evaluate_detector(detector, dataset)
    for key in ("map", "map_50", "mask_map", "mask_map_50"):
        assert scores[key] == pytest.approx(meta["scores"][key], abs=0.5), key
