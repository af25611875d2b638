"""CIFAR flip test-time augmentation (`resnets eval --protocol flip`, beyond the paper): the 32x32 view and its mirror
image, softmaxes averaged; checked against a loop written here from `create_model` and `preprocess` only."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from resnets import create_model, preprocess
from resnets.data.cifar import load_cifar
from resnets.data.decoded import spread_indices

from .test_train import run_cli

IMAGES = 500


def eval_json(*args: str) -> dict:
    return json.loads(run_cli("eval", "--pretrained", "resnet20.fast", "--eval-subset", str(IMAGES), "--backend",
                              "none", "--json", *args).stdout.strip().splitlines()[-1])


def test_flip_averages_the_softmax_of_the_view_and_its_mirror(cifar10_jpeg_dir: Path) -> None:
    model = create_model("resnet20.fast").eval()
    test = load_cifar(cifar10_jpeg_dir, "cifar10", "test")
    chosen = spread_indices(len(test), IMAGES)
    inputs, labels = preprocess(model, test.images[chosen]), test.labels[chosen]
    with torch.no_grad():
        single = model(inputs).softmax(1)
        mirrored = model(inputs.flip(-1)).softmax(1)
    expected_single = 100 * float((single.argmax(1) != labels).float().mean())
    expected_flip = 100 * float(((single + mirrored).argmax(1) != labels).float().mean())
    assert expected_flip != expected_single  # the check can tell the two apart on these images
    flip = eval_json("--protocol", "flip", "--data", str(cifar10_jpeg_dir))
    center = eval_json("--data", str(cifar10_jpeg_dir))
    assert flip["protocol"] == "flip" and center["protocol"] == "center"
    assert abs(flip["top1_error"] - expected_flip) <= 0.2 and abs(center["top1_error"] - expected_single) <= 0.2


def test_flip_is_refused_for_image_folder_nets_and_imagenet_protocols_for_cifar() -> None:
    result = run_cli("eval", "--pretrained", "resnet18.imagenette", "--protocol", "flip", check=False)
    assert result.returncode != 0 and "--protocol flip is for CIFAR nets" in result.stderr.strip().splitlines()[-1]
    result = run_cli("eval", "--pretrained", "resnet20.fast", "--protocol", "10crop", check=False)
    assert result.returncode != 0 and "10crop is an ImageNet protocol" in result.stderr.strip().splitlines()[-1]
