"""BatchNorm re-estimation at the test size (`resnets eval --recalibrate-bn N`): the statistics equal the ones
computed here by hand, weights are untouched, each multi-scale scale runs with its own copy, and the shipped
ResNet-18's statistics, deliberately corrupted, come back near the ones its training left (which this code never
saw)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from resnets.analysis.ship import ship_recalibrated
from resnets.data.folder import open_image_folder
from resnets.data.paths import datasets_root
from resnets.data.preprocess import preprocessing_of
from resnets.data.transforms import Normalize
from resnets.evaluate.protocols import evaluate
from resnets.evaluate.recalibrate import (
    batchnorm_state,
    per_scale_batchnorm,
    recalibrate_batchnorm,
    train_folder_of,
    training_photos,
)
from resnets.evaluate.run import evaluate_checkpoint

from .conftest import skip_without_data

PLAIN = Normalize(mean=(0.0, 0.0, 0.0), std=None)  # pixels / 255


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 24, 32), generator=generator, dtype=torch.uint8) // (i + 1) for i in range(5)]


def test_statistics_are_the_image_weighted_average_over_batches(photos: list[torch.Tensor]) -> None:
    """A BN layer on the raw input: after recalibration its running mean is the mean of every pixel of the 5 photos
    (not the mean of the 3 batch means, which the short last batch would skew) and its variance, with one batch,
    the unbiased variance over all of them."""
    pixels = torch.stack(photos).double() / 255  # shorter side 24 kept: the photos are fed as they are
    bn = nn.BatchNorm2d(3)
    recalibrate_batchnorm(nn.Sequential(bn), photos, 24, normalize=PLAIN, batch_size=2)  # batches of 2, 2, 1
    assert torch.allclose(bn.running_mean.double(), pixels.mean(dim=(0, 2, 3)), atol=1e-6)
    batch_means = torch.stack([pixels[:2].mean(dim=(0, 2, 3)), pixels[2:4].mean(dim=(0, 2, 3)),
                               pixels[4:].mean(dim=(0, 2, 3))]).mean(dim=0)
    assert float((batch_means - pixels.mean(dim=(0, 2, 3))).abs().max()) > 1e-2  # unweighted would be visibly off
    assert bn.momentum == 0.1 and not bn.training

    recalibrate_batchnorm(nn.Sequential(bn), photos, 24, normalize=PLAIN, batch_size=8)  # one batch
    assert torch.allclose(bn.running_var.double(), pixels.transpose(0, 1).reshape(3, -1).var(dim=1), atol=1e-6)
    assert torch.allclose(bn.running_mean.double(), pixels.mean(dim=(0, 2, 3)), atol=1e-6)

    # a centre crop: the statistics of the 16x16 centres only (rows 4..20, columns 8..24 of each 24x32 photo)
    recalibrate_batchnorm(nn.Sequential(bn), photos, 24, crop=16, normalize=PLAIN, batch_size=8)
    assert torch.allclose(bn.running_mean.double(), pixels[:, :, 4:20, 8:24].mean(dim=(0, 2, 3)), atol=1e-6)


def test_weights_stay_bit_identical_and_only_running_statistics_change(photos: list[torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4),
                          nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 24, 32))  # materialise the lazy layer
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    model.eval()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    before = batchnorm_state(model)
    recalibrate_batchnorm(model, photos, 24, normalize=PLAIN)
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
    after = batchnorm_state(model)
    for name in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var"):
        assert not torch.allclose(before[name], after[name]), name
    assert not model.training and not any(m.training for m in model.modules())
    with pytest.raises(ValueError, match="no BatchNorm layers"):
        recalibrate_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1)), photos, 24)


def test_per_scale_statistics_and_evaluate_runs_each_scale_with_its_own() -> None:
    """One copy per side, estimated on the whole photos at that side; the model's own statistics come back; and
    evaluate() normalises the views of side s with copy s (seen here through the running mean each forward used)."""

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(3)
            self.seen: list[tuple[int, float]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(x).mean(dim=(2, 3))

        def forward_fcn(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append((x.shape[-2], round(float(self.bn.running_mean[0]), 6)))
            return self.bn(x)

    # a photo whose left half is dark and right half bright, framed by a black border: resizing blurs the edges
    # differently at each size, so the per-size means differ
    photo = torch.zeros(3, 40, 40, dtype=torch.uint8)
    photo[:, 4:36, 20:36] = 255
    model = Recorder().eval()
    own = batchnorm_state(model)
    states = per_scale_batchnorm(model, [photo], (16, 40), normalize=PLAIN)
    assert all(torch.equal(own[name], value) for name, value in batchnorm_state(model).items())
    assert float(states[40]["bn.running_mean"][0]) == pytest.approx((32 * 16) / (40 * 40), abs=1e-6)
    assert set(states) == {16, 40} and not torch.equal(states[16]["bn.running_mean"], states[40]["bn.running_mean"])

    # hand-made states with recognisable means: side 20 -> 0.25, side 30 -> 0.75
    made = {side: {**own, "bn.running_mean": torch.full((3,), value)} for side, value in ((20, 0.25), (30, 0.75))}
    result = evaluate(model, [(photo, 0)], "multiscale", scales=(20, 30), batchnorm_per_scale=made, progress=False,
                      normalize=PLAIN)
    assert model.seen == [(20, 0.25), (30, 0.75)] and result["images"] == 1
    assert all(torch.equal(own[name], value) for name, value in batchnorm_state(model).items())
    with pytest.raises(ValueError, match="not for every scale"):
        evaluate(model, [(photo, 0)], "multiscale", scales=(20, 64), batchnorm_per_scale=made, progress=False)
    with pytest.raises(ValueError, match="for the multiscale protocol"):
        evaluate(model, [(photo, 0)], "center", batchnorm_per_scale=made, progress=False)


def test_train_folder_and_seeded_photos(tmp_path: Path) -> None:
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    assert train_folder_of(tmp_path / "data" / "val") == tmp_path / "data" / "train"
    assert train_folder_of(tmp_path / "data") == tmp_path / "data" / "train"
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        train_folder_of(tmp_path / "data" / "train" / "a")
    with pytest.raises(ValueError, match="positive number"):
        training_photos(tmp_path / "data" / "train", 0)


# --- the shipped ResNet-18 on real photos ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imagenette() -> Path:
    folder = datasets_root() / "imagenette"
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        skip_without_data(f"Imagenette not found at {folder}; set RESNETS_DATASETS to the folder holding imagenette/")
    return folder


@pytest.mark.usefixtures("one_thread")
def test_corrupted_statistics_come_back_near_the_trained_ones(imagenette: Path) -> None:
    """The statistics the shipped net's training accumulated (at 112 px, random crops) are the reference: with
    every running variance x100 and mean shifted, the net no longer agrees with itself; 64 training photos at the
    centre view bring the statistics back near the trained ones and the predictions with them."""
    model = resnets.create_model("resnet18", pretrained="imagenette").eval()
    trained = batchnorm_state(model)
    record = preprocessing_of(model)
    val = open_image_folder(imagenette / "val")
    chosen = range(0, len(val), len(val) // 40)[:40]  # 4 photos of each class
    labels = torch.tensor([val.samples[i][1] for i in chosen])
    batch = torch.stack([record.normalize(torch.nn.functional.interpolate(
        val.load(i)[0][None].float() / 255, size=112, mode="bilinear", antialias=True)[0]) for i in chosen])
    with torch.no_grad():
        reference = model(batch).argmax(1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var *= 100
                module.running_mean += 0.5
        corrupted = model(batch).argmax(1)
    photos = training_photos(imagenette / "train", 64)
    recalibrate_batchnorm(model, photos, record.resize, crop=record.crop, normalize=record.normalize)
    with torch.no_grad():
        recalibrated = model(batch).argmax(1)
    # measured: agreement with the trained statistics' predictions 10% corrupted, 92.5% recalibrated; error on
    # these 40 whole photos at 112 px 30% trained, 90% corrupted, 30% recalibrated
    assert float((corrupted == reference).float().mean()) < 0.5
    assert float((recalibrated == reference).float().mean()) >= 0.85
    error = {name: float((found != labels).float().mean()) for name, found in
             (("trained", reference), ("corrupted", corrupted), ("recalibrated", recalibrated))}
    assert error["corrupted"] >= 0.7 and error["recalibrated"] <= error["trained"] + 0.1, error
    # per layer: the re-estimated variances within a factor 3 of the trained ones (the corruption was 100x;
    # measured medians 0.58 to 1.01)
    for name, value in batchnorm_state(model).items():
        if name.endswith("running_var"):
            ratio = (value / trained[name]).median()
            assert 1 / 3 < float(ratio) < 3, (name, float(ratio))


@pytest.mark.usefixtures("one_thread")
def test_eval_recalibrates_before_testing_and_refuses_what_it_cannot(imagenette: Path) -> None:
    result = evaluate_checkpoint("resnet18.imagenette", dataset="imagenette", protocol="center", recalibrate_bn=16,
                                 eval_subset=20, batch_size=20, num_workers=0, progress=False)
    assert result["recalibrate_bn"] == 16 and result["images"] == 20
    with pytest.raises(ValueError, match="--backend none"):
        evaluate_checkpoint("resnet18.imagenette", dataset="imagenette", protocol="multiscale", recalibrate_bn=16,
                            prepare=lambda model: model, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="image-folder protocols"):
        evaluate_checkpoint("resnet20.fast", recalibrate_bn=16)


@pytest.mark.usefixtures("one_thread")
def test_shipping_recalibrated_weights_changes_only_the_statistics(imagenette: Path, tmp_path: Path) -> None:
    """`resnets analyze ship MODEL.TAG --recalibrate-bn N --bn-sides ...` on a small copy of Imagenette: every weight
    is the source's bit for bit; the first BN layer's running mean is the mean of conv1's outputs over the pooled
    views, computed here by hand; the .json's error is what a loop of create_model + preprocess measures."""
    data = tmp_path / "nette"
    for split, per_class in (("train", 1), ("val", 2)):
        source = open_image_folder(imagenette / split)
        for path, _ in source.samples[::len(source) // (10 * per_class)][:10 * per_class]:
            target = data / split / Path(path).parent.name / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(path).read_bytes())
    weights = tmp_path / "weights"
    weights.mkdir()
    sides = (96, 144)
    path = ship_recalibrated("resnet18.imagenette-fast", 6, sides, "test-recal", weights_dir=weights, data=data,
                             device="cpu")
    assert path == weights / "resnet18-test-recal.pt"
    source = resnets.create_model("resnet18.imagenette-fast").eval()
    shipped = resnets.create_model("resnet18", pretrained=path).eval()
    statistics = {name for name in batchnorm_state(source) if not name.endswith("num_batches_tracked")}
    for name, value in source.state_dict().items():
        if name not in statistics and not name.endswith("num_batches_tracked"):
            assert torch.equal(value, shipped.state_dict()[name]), name
    # by hand: the photos recalibration drew, each resized whole to every side, normalised per channel
    record = preprocessing_of(source)
    channel = Normalize(mean=record.mean, std=record.std)
    views = [channel(torch.nn.functional.interpolate(photo[None].float() / 255, size=(side, side), mode="bilinear",
                                                     antialias=True)[0])
             for photo in training_photos(data / "train", 6) for side in sides]
    with torch.no_grad():  # each view's per-channel mean, averaged with equal weight per view
        by_hand = torch.stack([source.conv1(view[None]).mean((0, 2, 3)) for view in views]).mean(0)
    assert torch.allclose(shipped.bn1.running_mean, by_hand, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(source.bn1.running_mean, by_hand, atol=2e-3, rtol=2e-3)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["pretrained"] == "test-recal" and meta["batchnorm"]["recalibrated_from"] == "resnet18.imagenette-fast"
    assert meta["batchnorm"]["sides"] == list(sides) and meta["batchnorm"]["training_photos"] == 6
    assert meta["batchnorm"]["command"] == ("resnets analyze ship resnet18.imagenette-fast --recalibrate-bn 6 "
                                            "--bn-sides 96 144 --tag test-recal")
    val = open_image_folder(data / "val", class_to_idx={c: i for i, c in enumerate(meta["classes"])})
    with torch.no_grad():
        scores = shipped(resnets.preprocess(shipped, [val.load(i)[0] for i in range(len(val))]))
    labels = torch.tensor([label for _, label in val.samples])
    assert meta["test_top1_error"] == pytest.approx(100 * float((scores.argmax(1) != labels).float().mean()))
    assert meta["test_images"] == len(val) == 20
    with pytest.raises(ValueError, match="not shipped Imagenette weights"):
        ship_recalibrated("resnet20.fast", 6, sides, "x", weights_dir=weights, data=data)
    with pytest.raises(ValueError, match="a new tag"):
        ship_recalibrated("resnet18.imagenette-fast", 6, sides, "imagenette-fast", weights_dir=weights, data=data)


def test_ship_recalibrate_bn_needs_a_new_tag(capsys: pytest.CaptureFixture[str]) -> None:
    from resnets.cli import main

    assert main(["analyze", "ship", "resnet18.imagenette-fast", "--recalibrate-bn", "6"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("resnets analyze: error: --recalibrate-bn ships MODEL.TAG again under a new name: give --tag "
                     "(e.g. --tag imagenette-fast-recal) and no --name")
