"""Synthetic detection data (real CIFAR-10 objects pasted on real Imagenette photos), the COCO-format dataset and
COCO box AP. Expected values are worked out by hand or from the source images, never from the code under test."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnets.data.folder import read_image
from resnets.data.paths import DATASETS_ENV, datasets_root
from resnets.detection.data import DetectionDataset, collate_detection
from resnets.detection.metrics import METRICS, detections_to_coco, evaluate_detections
from resnets.detection.synthetic import DESCRIPTION, make_synthetic_detection

from .conftest import skip_without_data

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY = {"train_images": 6, "val_images": 4, "objects_per_image": (2, 4), "progress": False}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = datasets_root()
    if not (root / "imagenette" / "val").is_dir() or not (root / "cifar10-jpeg" / "test").is_dir():
        skip_without_data(f"imagenette/ and cifar10-jpeg/ not found in {root.resolve()}; set {DATASETS_ENV} to the "
                          "folder that holds them to run this test")
    out = tmp_path_factory.mktemp("synthetic") / "data"
    summary = make_synthetic_detection(out, seed=0, **TINY)
    assert not summary["reused"] and summary["splits"]["train"]["images"] == 6
    return out


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def visible_box(pasted: list[list[int]], k: int, size: tuple[int, int]) -> list[int]:
    """Tight box of the pixels of paste k that no later paste covers."""
    mask = torch.zeros(size, dtype=torch.bool)
    x, y, w, h = pasted[k]
    mask[y:y + h, x:x + w] = True
    for x, y, w, h in pasted[k + 1:]:
        mask[y:y + h, x:x + w] = False
    ys, xs = mask.nonzero(as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def iou(a: list[int], b: list[int]) -> float:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_synthetic_layout_is_coco_with_honest_boxes_of_the_configured_sizes(synthetic: Path) -> None:
    from pycocotools.coco import COCO

    for split, count, background_split, object_split in (("train", 6, "train", "train"), ("val", 4, "val", "test")):
        assert sorted(p.name for p in (synthetic / split).iterdir()) == [f"{i:06d}.jpg" for i in range(count)]
        document = load(synthetic / "annotations" / f"{split}.json")
        assert document["info"]["description"] == DESCRIPTION and "not COCO or VOC" in DESCRIPTION
        assert document["info"]["seed"] == 0 and document["info"]["parameters"]["object_sizes"] == [24, 112]
        assert [(c["id"], c["name"]) for c in document["categories"]] == list(enumerate(CIFAR_CLASSES, 1))
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(synthetic / "annotations" / f"{split}.json"))
        assert sorted(coco.getCatIds()) == list(range(1, 11)) and len(coco.getImgIds()) == count
        for image in document["images"]:
            assert image["background"].startswith(f"imagenette/{background_split}/")
            anns = [a for a in document["annotations"] if a["image_id"] == image["id"]]
            assert 2 <= len(anns) <= 4 and len(coco.getAnnIds(imgIds=image["id"])) == len(anns)
            pasted = [a["pasted_bbox"] for a in anns]
            for k, ann in enumerate(anns):
                x, y, w, h = ann["pasted_bbox"]
                assert 24 <= max(w, h) <= 112 and round(max(w, h) * 0.75) <= min(w, h)  # aspect 0.75..1.33
                assert min(x, y) >= 0 and x + w <= image["width"] and y + h <= image["height"]
                assert ann["bbox"] == visible_box(pasted, k, (image["height"], image["width"]))
                assert w * h >= ann["area"] >= 0.5 * w * h and ann["iscrowd"] == 0
                assert all(iou(ann["pasted_bbox"], earlier) <= 0.5 for earlier in pasted[:k])
                source_split, source_class = ann["source"].split("/")[1:3]
                assert source_split == object_split and CIFAR_CLASSES[ann["category_id"] - 1] == source_class


def test_pasted_pixels_are_the_resized_cifar_object_and_the_rest_is_the_photo(synthetic: Path) -> None:
    root = datasets_root()
    document = load(synthetic / "annotations" / "train.json")
    for image in document["images"]:
        pixels = read_image(synthetic / "train" / image["file_name"]).float()
        anns = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        top = anns[-1]  # pasted last: nothing covers it
        x, y, w, h = top["pasted_bbox"]
        expected = TF.resize(read_image(root / top["source"]), [h, w], antialias=True).float()
        inside = (pixels[:, y + 2:y + h - 2, x + 2:x + w - 2] - expected[:, 2:-2, 2:-2]).abs().mean()
        assert inside < 6, (image["file_name"], float(inside))  # JPEG q90 error (up to ~4 seen); a 3 px offset: > 20
        shifted = (pixels[:, y + 5:y + h - 2, x + 5:x + w - 2] - expected[:, 2:-5, 2:-5]).abs().mean()
        assert shifted > 3 * inside
        outside = torch.ones(pixels.shape[1:], dtype=torch.bool)
        for px, py, pw, ph in (a["pasted_bbox"] for a in anns):
            outside[max(0, py - 8):py + ph + 8, max(0, px - 8):px + pw + 8] = False
        background = read_image(root / image["background"]).float()
        error = (pixels - background).abs()[:, outside].mean()
        other = read_image(root / document["images"][image["id"] % len(document["images"])]["background"]).float()
        assert error < 2.5 < 10 < (pixels - other).abs()[:, outside].mean(), image["file_name"]


def test_generation_is_deterministic_reusable_and_refuses_foreign_folders(synthetic: Path, tmp_path: Path) -> None:
    again = make_synthetic_detection(tmp_path / "again", seed=0, **TINY)
    for split in ("train", "val"):
        assert (tmp_path / "again/annotations" / f"{split}.json").read_bytes() == \
            (synthetic / "annotations" / f"{split}.json").read_bytes()
        for name in ("000000.jpg", "000003.jpg"):
            assert (tmp_path / "again" / split / name).read_bytes() == (synthetic / split / name).read_bytes()
    assert again["splits"]["val"]["objects"] == len(load(synthetic / "annotations/val.json")["annotations"])
    make_synthetic_detection(tmp_path / "other", seed=1, **TINY)
    assert (tmp_path / "other/annotations/train.json").read_bytes() != \
        (synthetic / "annotations/train.json").read_bytes()

    stamp = (tmp_path / "again/annotations/train.json").stat().st_mtime_ns
    assert make_synthetic_detection(tmp_path / "again", seed=0, **TINY)["reused"]
    assert (tmp_path / "again/annotations/train.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="not empty") as error:
        make_synthetic_detection(tmp_path / "again", seed=2, **TINY)
    assert "\n" not in str(error.value)
    (tmp_path / "again/annotations/val.json").unlink()  # an unfinished folder is not taken for a dataset
    with pytest.raises(FileExistsError, match="delete it"):
        make_synthetic_detection(tmp_path / "again", seed=0, **TINY)
    with pytest.raises(ValueError, match="object_sizes"):
        make_synthetic_detection(tmp_path / "bad", object_sizes=(50, 20), **TINY)


def test_ground_truth_scores_100_shifted_boxes_less_and_no_detections_0(synthetic: Path) -> None:
    annotations = synthetic / "annotations" / "val.json"
    dataset = DetectionDataset(synthetic, "val")
    targets = [dataset[i][1] for i in range(len(dataset))]
    outputs = [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]
    results = detections_to_coco(dataset.image_ids, outputs)
    assert len(results) == len(load(annotations)["annotations"])
    perfect = evaluate_detections(annotations, results)
    assert set(perfect) == set(METRICS)
    assert perfect["map"] == pytest.approx(100) and perfect["map_50"] == pytest.approx(100)
    shifted = [dict(r, bbox=[r["bbox"][0] + r["bbox"][2] / 2, *r["bbox"][1:]]) for r in results]
    assert evaluate_detections(annotations, shifted)["map_50"] < 100  # IoU 1/3 with its own object
    empty = evaluate_detections(annotations, [])
    assert empty["map"] == 0 and empty["map_50"] == 0
    for name in METRICS:  # undefined (NaN) only where the ground truth has no object of that size
        assert math.isnan(empty[name]) == math.isnan(perfect[name]) and (math.isnan(empty[name]) or empty[name] == 0)


def write_coco(folder: Path, boxes: list[list[float]], size: tuple[int, int] = (100, 100),
               labels: list[int] | None = None) -> Path:
    """One image (random pixels, lossless PNG) with the given [x, y, w, h] boxes, categories 1 'a' and 2 'b'."""
    width, height = size
    (folder / "val").mkdir(parents=True, exist_ok=True)
    pixels = torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(folder / "val" / "a.png")
    labels = labels or [1] * len(boxes)
    document = {"images": [{"id": 7, "file_name": "a.png", "width": width, "height": height}],
                "annotations": [{"id": i + 1, "image_id": 7, "category_id": label, "bbox": box, "area": box[2] * box[3],
                                 "iscrowd": 0} for i, (box, label) in enumerate(zip(boxes, labels, strict=True))],
                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (folder / "annotations").mkdir(exist_ok=True)
    (folder / "annotations" / "val.json").write_text(json.dumps(document))
    return folder / "annotations" / "val.json"


def test_average_precision_of_hand_computed_cases(tmp_path: Path) -> None:
    one = write_coco(tmp_path / "one", [[10, 10, 40, 40]])  # area 1600: a medium object

    def ap(*detections: tuple[list[float], float, int]) -> dict[str, float]:
        return evaluate_detections(one, [{"image_id": 7, "bbox": b, "score": s, "category_id": c}
                                         for b, s, c in detections])

    half = ap(([30, 10, 40, 40], 1.0, 1))  # shifted by half its width: IoU 800 / 2400 = 1/3 < 0.5
    assert half["map_50"] == 0 and half["map"] == 0
    near = ap(([18, 10, 40, 40], 1.0, 1))  # IoU 1280 / 1920 = 2/3: a hit at IoU .50 .55 .60 .65, 4 of 10 thresholds
    assert near["map_50"] == pytest.approx(100) and near["map_75"] == 0 and near["map"] == pytest.approx(40)
    assert near["map_medium"] == pytest.approx(40) and math.isnan(near["map_small"]) and math.isnan(near["map_large"])
    assert ap(([10, 10, 40, 40], 1.0, 2))["map_50"] == 0  # right box, wrong category
    two = write_coco(tmp_path / "two", [[10, 10, 40, 40], [50, 50, 40, 40]])
    # A false positive ranked first, then one of the two objects: recall 0.5 at precision 0.5, so the
    # interpolated precision is 0.5 at the 51 recall thresholds 0, .01, ..., .50 and 0 above: AP = 51 * 0.5 / 101.
    ranked = evaluate_detections(two, [{"image_id": 7, "bbox": [0, 60, 30, 30], "score": 0.9, "category_id": 1},
                                       {"image_id": 7, "bbox": [10, 10, 40, 40], "score": 0.8, "category_id": 1}])
    assert ranked["map_50"] == pytest.approx(100 * 51 * 0.5 / 101)
    assert evaluate_detections(two, [])["map_50"] == 0
    with pytest.raises(ValueError, match="image_id"):
        evaluate_detections(two, [{"image_id": 8, "bbox": [0, 0, 1, 1], "score": 1.0, "category_id": 1}])


def test_dataset_tensors_and_the_flip_of_a_hand_computed_box(synthetic: Path, tmp_path: Path) -> None:
    dataset = DetectionDataset(synthetic, "train")
    assert len(dataset) == 6 and dataset.categories == dict(enumerate(CIFAR_CLASSES, 1))
    image, target = dataset[2]
    assert image.dtype == torch.float32 and image.shape == (3, 224, 224) and 0 <= image.min() <= image.max() <= 1
    assert torch.equal(image, read_image(synthetic / "train" / "000002.jpg").float() / 255)
    anns = [a for a in load(synthetic / "annotations/train.json")["annotations"] if a["image_id"] == 3]
    assert target["image_id"] == 3 and target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [a["category_id"] for a in anns]
    assert target["boxes"].dtype == torch.float32 and target["boxes"].tolist() == \
        [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert len(images) == len(targets) == 2 and targets[1]["image_id"] == 2

    write_coco(tmp_path, [[10, 20, 30, 40]], size=(100, 80))
    flipping = DetectionDataset(tmp_path, "val", train_flip=True, seed=3)
    plain_image, plain = DetectionDataset(tmp_path, "val")[0]
    assert plain["boxes"].tolist() == [[10, 20, 40, 60]]
    seen = set()
    for epoch in range(12):
        flipping.set_epoch(epoch)
        image, target = flipping[0]
        flipped = flipping.flips(0)
        seen.add(flipped)
        # mirrored in a 100 px wide image: x 10..40 becomes 100 - 40 .. 100 - 10 = 60..90
        assert target["boxes"].tolist() == ([[60, 20, 90, 60]] if flipped else [[10, 20, 40, 60]])
        assert torch.equal(image, plain_image.flip(-1) if flipped else plain_image)
    assert seen == {True, False}
    same, other = (DetectionDataset(tmp_path, "val", train_flip=True, seed=s) for s in (3, 4))
    flips = {}
    for name, ds in (("first", flipping), ("same", same), ("other", other)):
        flips[name] = []
        for epoch in range(24):
            ds.set_epoch(epoch)
            flips[name].append(ds.flips(0))
    assert flips["first"] == flips["same"] != flips["other"]


def test_bad_inputs_give_one_line_naming_the_file(tmp_path: Path) -> None:
    def error_of(make) -> str:
        with pytest.raises(ValueError) as error:
            make()
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "annotation file not found" in error_of(lambda: DetectionDataset(tmp_path / "none", "val"))
    annotations = write_coco(tmp_path / "ok", [[10, 20, 30, 40]])
    annotations.write_text(annotations.read_text()[:40])  # truncated
    message = error_of(lambda: DetectionDataset(tmp_path / "ok", "val"))
    assert str(annotations) in message and "regenerate" in message
    write_coco(tmp_path / "out", [[80, 20, 30, 40]])  # x + w = 110 > 100
    assert "outside" in error_of(lambda: DetectionDataset(tmp_path / "out", "val"))
    write_coco(tmp_path / "cat", [[10, 20, 30, 40]], labels=[5])
    assert "category_id 5" in error_of(lambda: DetectionDataset(tmp_path / "cat", "val"))
    write_coco(tmp_path / "pixels", [[10, 20, 30, 40]])
    (tmp_path / "pixels/val/a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dataset = DetectionDataset(tmp_path / "pixels", "val")
    assert str(tmp_path / "pixels/val/a.png") in error_of(lambda: dataset[0])
