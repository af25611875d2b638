"""The paper's ImageNet transforms (Sec. 3.4): per image on uint8 CHW tensors, and batched (`ScaleCropFlip`; beyond
the paper, `RandomResizedCropFlip`).

Training: shorter side resized to a random integer in [256, 480], a random 224x224 crop, a random
horizontal flip, conversion to float in [0, 1], AlexNet's PCA lighting noise, mean subtraction.
Evaluation: shorter side resized to S, centre 224 crop. Resizing, cropping and flipping use
torchvision.transforms.v2.functional on uint8 tensors (fast, antialiased); only the lighting noise and
the mean image are written here. Every random draw goes through an optional `torch.Generator`.

Randomness in DataLoader workers: with `generator=None` the transforms draw from torch's global RNG,
which the DataLoader seeds differently in every worker (base_seed + worker_id). An explicit generator is
copied into every worker with the same state, so it would repeat the same augmentations in each worker:
reseed it in a `worker_init_fn` (e.g. `transform.generator.manual_seed(torch.initial_seed())`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .folder import BadImageError, ImageFolderDataset, read_image

logger = logging.getLogger(__name__)

# AlexNet / fb.resnet.torch lighting constants: ImageNet RGB pixel covariance, pixels in [0, 1].
IMAGENET_LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_LIGHTING_EIGVEC = (  # rows are R, G, B; columns are the principal components
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# torchvision's per-channel statistics; the weights imported from torchvision expect them.
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)


def resize_shorter_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (..., H, W) so that min(H, W) == size, keeping the aspect ratio (longer side truncated)."""
    return TF.resize(image, [size], antialias=True)


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32 unchanged."""
    return image.float().div_(255) if image.dtype == torch.uint8 else image.float()


class Normalize:
    """Mean subtraction (and optional division by a per-channel std) of float images in [0, 1].

    `mean` is either per-channel, shape (3,), or a per-pixel mean image, shape (3, H, W) (the paper's
    choice, see `compute_mean_image`). A mean image only fits inputs of its own size: for any other size
    (multi-scale testing of whole images) its per-channel average is subtracted instead.
    """

    def __init__(self, mean: torch.Tensor | Sequence[float] = IMAGENET_RGB_MEAN,
                 std: torch.Tensor | Sequence[float] | None = IMAGENET_RGB_STD) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        if self.mean.shape != (3,) and (self.mean.dim() != 3 or self.mean.shape[0] != 3):
            raise ValueError(f"mean must have shape (3,) or (3, H, W), got {tuple(self.mean.shape)}")
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32)
        if self.std is not None and (self.std.shape != (3,) or bool((self.std <= 0).any())):
            raise ValueError(f"std must be 3 positive numbers, got {self.std.tolist()}")
        self._channel_mean = self.mean if self.mean.dim() == 1 else self.mean.mean(dim=(1, 2))

    @property
    def per_pixel(self) -> bool:
        return self.mean.dim() == 3

    @property
    def channel_mean(self) -> torch.Tensor:
        """(3,): the per-channel mean, or the per-channel average of the mean image."""
        return self._channel_mean

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) float in [0, 1] -> normalised float (a new tensor)."""
        if not image.is_floating_point():
            raise TypeError(f"Normalize expects float images in [0, 1], got {image.dtype}; convert with to_float")
        if self.per_pixel and tuple(image.shape[-2:]) == tuple(self.mean.shape[-2:]):
            out = image - self.mean.to(image.device, image.dtype)
        else:
            out = image - self._channel_mean.to(image.device, image.dtype)[:, None, None]
        if self.std is not None:
            out = out / self.std.to(image.device, image.dtype)[:, None, None]
        return out

    def __repr__(self) -> str:
        mean = f"mean image {tuple(self.mean.shape)}" if self.per_pixel else f"mean={_rounded(self.mean)}"
        std = "" if self.std is None else f", std={_rounded(self.std)}"
        return f"Normalize({mean}{std})"


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(v, 4) for v in values.tolist()]


class PCALighting:
    """AlexNet's colour augmentation: add eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, alpha_std^2).

    Pixels are floats in [0, 1]; no clamping (as fb.resnet.torch), so the shift is exactly one RGB vector.
    """

    def __init__(self, alpha_std: float = 0.1, eigval: Sequence[float] | torch.Tensor = IMAGENET_LIGHTING_EIGVAL,
                 eigvec: Sequence[Sequence[float]] | torch.Tensor = IMAGENET_LIGHTING_EIGVEC) -> None:
        self.alpha_std = float(alpha_std)
        self.eigval = torch.as_tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.as_tensor(eigvec, dtype=torch.float32)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError(f"eigval must be (3,) and eigvec (3, 3), got {tuple(self.eigval.shape)} "
                             f"and {tuple(self.eigvec.shape)}")

    def sample_alpha(self, generator: torch.Generator | None = None, batch: int | None = None) -> torch.Tensor:
        """alpha ~ N(0, alpha_std^2): shape (3,), or (batch, 3) for one draw per image of a batch."""
        shape = (3,) if batch is None else (batch, 3)
        return torch.randn(shape, generator=generator) * self.alpha_std

    def rgb_shift(self, alpha: torch.Tensor) -> torch.Tensor:
        """eigvec @ (alpha * eigval) for alpha (3,) or (N, 3) -> (3,) or (N, 3)."""
        alpha = torch.as_tensor(alpha, dtype=torch.float32)
        return (alpha * self.eigval.to(alpha.device)) @ self.eigvec.to(alpha.device).T

    def __call__(self, image: torch.Tensor, alpha: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(3, H, W), or (N, 3, H, W) with one alpha per image; returns a new tensor."""
        batch = image.shape[0] if image.dim() == 4 else None
        if alpha is None:
            alpha = self.sample_alpha(generator, batch)
        shift = self.rgb_shift(alpha.cpu()).to(image.device, image.dtype)
        return image + shift[..., :, None, None]


@dataclass(frozen=True)
class TrainViewParams:
    """One draw of the training augmentation for an image of a given size."""

    shorter_side: int  # the image is resized so that min(H, W) == shorter_side
    top: int  # crop position in the resized image
    left: int
    flip: bool
    alpha: tuple[float, float, float]  # PCA lighting coefficients (zeros when lighting is off)


class PaperTrainTransform:
    """Sec. 3.4 training augmentation: uint8 (3, H, W) -> float (3, crop, crop), normalised.

    `scale` bounds the random shorter side (inclusive integers); `lighting_std=0` turns the PCA noise off.
    The paper subtracts the per-pixel mean: pass `normalize=Normalize(compute_mean_image(train_set), std=None)`;
    the default (None) is torchvision's per-channel mean/std, so the pipeline works before a mean image exists.

    `uint8_output=True` splits the work: called per image (in DataLoader workers) it returns only the uint8
    resize/crop/flip, and `finish_batch` then adds lighting and subtracts the mean on the collated batch, on
    the training device. Workers then ship 4x fewer bytes and the float work runs on the GPU.
    """

    def __init__(self, scale: tuple[int, int] = (256, 480), crop_size: int = 224, flip_prob: float = 0.5,
                 lighting_std: float = 0.1, eigval: Sequence[float] | torch.Tensor = IMAGENET_LIGHTING_EIGVAL,
                 eigvec: Sequence[Sequence[float]] | torch.Tensor = IMAGENET_LIGHTING_EIGVEC,
                 normalize: Normalize | None = None, generator: torch.Generator | None = None,
                 uint8_output: bool = False) -> None:
        low, high = int(scale[0]), int(scale[1])
        if not crop_size <= low <= high:
            raise ValueError(f"scale must satisfy crop_size ({crop_size}) <= low <= high, got {scale}")
        self.scale = (low, high)
        self.crop_size = int(crop_size)
        self.flip_prob = float(flip_prob)
        self.lighting = PCALighting(lighting_std, eigval, eigvec) if lighting_std > 0 else None
        self.normalize = Normalize() if normalize is None else normalize
        self.generator = generator
        self.uint8_output = uint8_output

    def sample_params(self, height: int, width: int) -> TrainViewParams:
        g = self.generator
        shorter = int(torch.randint(self.scale[0], self.scale[1] + 1, (1,), generator=g))
        new_h, new_w = _resized_size(height, width, shorter)
        top = int(torch.randint(0, new_h - self.crop_size + 1, (1,), generator=g))
        left = int(torch.randint(0, new_w - self.crop_size + 1, (1,), generator=g))
        flip = bool(torch.rand(1, generator=g) < self.flip_prob)
        alpha = (0.0, 0.0, 0.0) if self.lighting is None else tuple(self.lighting.sample_alpha(g).tolist())
        return TrainViewParams(shorter, top, left, flip, alpha)  # type: ignore[arg-type]

    def geometry(self, image: torch.Tensor, params: TrainViewParams) -> torch.Tensor:
        """The uint8 resize + crop + flip part of `apply`."""
        image = resize_shorter_side(image, params.shorter_side)
        image = image[..., params.top:params.top + self.crop_size, params.left:params.left + self.crop_size]
        return TF.horizontal_flip(image) if params.flip else image

    def apply(self, image: torch.Tensor, params: TrainViewParams) -> torch.Tensor:
        out = to_float(self.geometry(image, params))
        if self.lighting is not None:
            out = self.lighting(out, alpha=torch.tensor(params.alpha))
        return self.normalize(out)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        params = self.sample_params(image.shape[-2], image.shape[-1])
        return self.geometry(image, params) if self.uint8_output else self.apply(image, params)

    def finish_batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, 3, crop, crop) from `uint8_output` calls, on any device -> float, lighting, normalised.

        One lighting alpha per image, drawn on the CPU from `generator` (default: the global RNG)."""
        out = to_float(images)
        if self.lighting is not None:
            out = self.lighting(out, generator=generator)
        return self.normalize(out)

    def __repr__(self) -> str:
        lighting = 0.0 if self.lighting is None else self.lighting.alpha_std
        return (f"PaperTrainTransform(scale={self.scale}, crop_size={self.crop_size}, flip_prob={self.flip_prob}, "
                f"lighting_std={lighting}, normalize={self.normalize!r})")


class ScaleCropFlip:
    """`PaperTrainTransform` for a batch of equal-size images held whole on the training device (a `BatchAugment`
    of `loader.TensorBatchLoader`): random shorter side in `scale`, random `crop_size` crop, flip, PCA lighting,
    mean subtraction; no per-image Python work.

    Resizing the whole image to shorter side s and cropping c x c at (top, left) reads the source box
    [left, left + c] x [top, top + c] scaled by (source size / resized size). So resize, crop and flip are one
    bilinear `grid_sample` over the batch, each image with its own affine grid (the box; a flip is its x axis
    negated). Against the per-image path (antialiased resize) the views of 10 Imagenette photos differ by 0.3-6
    grey levels (of 255) on average: bilinear sampling aliases a little at the strongest downscale (shorter side
    128 from 224). `torchvision.ops.roi_align` averages more samples but runs single-threaded on the CPU: 108 ms
    against grid_sample's 33 ms for a batch of 128 on 2 cores. Crop positions are drawn as integers of the resized
    image, exactly as `PaperTrainTransform.sample_params` draws them.
    """

    def __init__(self, image_size: tuple[int, int], scale: tuple[int, int] = (256, 480), crop_size: int = 224,
                 lighting_std: float = 0.1, eigval: Sequence[float] | torch.Tensor = IMAGENET_LIGHTING_EIGVAL,
                 eigvec: Sequence[Sequence[float]] | torch.Tensor = IMAGENET_LIGHTING_EIGVEC,
                 normalize: Normalize | None = None) -> None:
        low, high = int(scale[0]), int(scale[1])
        if not crop_size <= low <= high:
            raise ValueError(f"scale must satisfy crop_size ({crop_size}) <= low <= high, got {scale}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.scale, self.crop_size = (low, high), int(crop_size)
        self.output_size = (self.crop_size, self.crop_size)
        self.lighting = PCALighting(lighting_std, eigval, eigvec) if lighting_std > 0 else None
        self.normalize = Normalize() if normalize is None else normalize
        # (height, width) of the image resized to each possible shorter side, as the per-image resize makes it
        self._resized = torch.tensor([_resized_size(*self.image_size, shorter) for shorter in range(low, high + 1)],
                                     dtype=torch.float64)

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per image: the view as `PaperTrainTransform` draws it (shorter side, top, left, flip), its source box
        (x1, y1, x2, y2) and the lighting alpha."""
        height, width = self.image_size
        shorter = torch.randint(self.scale[0], self.scale[1] + 1, (count,), generator=generator)
        new_h, new_w = self._resized[shorter - self.scale[0]].unbind(1)
        top = (torch.rand(count, generator=generator) * (new_h - self.crop_size + 1)).floor()
        left = (torch.rand(count, generator=generator) * (new_w - self.crop_size + 1)).floor()
        flips = torch.rand(count, generator=generator) < 0.5
        alpha = (self.lighting.sample_alpha(generator, count) if self.lighting is not None
                 else torch.zeros(count, 3))
        y_scale, x_scale = height / new_h, width / new_w
        boxes = torch.stack([left * x_scale, top * y_scale, (left + self.crop_size) * x_scale,
                             (top + self.crop_size) * y_scale], dim=1)
        return {"shorter": shorter, "top": top.long(), "left": left.long(), "flips": flips, "boxes": boxes.float(),
                "alpha": alpha}

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor],
                 output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1] -> normalised (N, 3, crop, crop) (or `output_size`)."""
        height, width = images.shape[-2:]
        x1, y1, x2, y2 = params["boxes"].to(images.device, torch.float32).unbind(1)
        mirror = 1.0 - 2.0 * params["flips"].to(images.device, torch.float32)
        zero = torch.zeros_like(x1)
        # normalised output coordinates [-1, 1] -> the box in normalised input coordinates (align_corners=False)
        theta = torch.stack([torch.stack([mirror * (x2 - x1) / width, zero, (x1 + x2) / width - 1], dim=1),
                             torch.stack([zero, (y2 - y1) / height, (y1 + y2) / height - 1], dim=1)], dim=1)
        grid = F.affine_grid(theta, [len(images), images.shape[1], *(output_size or self.output_size)],
                             align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.lighting is not None:
            out = out + self.lighting.rgb_shift(params["alpha"]).to(out.device, out.dtype)[:, :, None, None]
        return self.normalize(out)

    def __repr__(self) -> str:
        lighting = 0.0 if self.lighting is None else self.lighting.alpha_std
        return (f"ScaleCropFlip(image_size={self.image_size}, scale={self.scale}, crop_size={self.crop_size}, "
                f"lighting_std={lighting}, normalize={self.normalize!r})")


class RandomResizedCropFlip(ScaleCropFlip):
    """Random-resized crops (Inception / torchvision `RandomResizedCrop`) for a batch held on the device: per image a
    box of `area` x the image area (uniform) and aspect ratio w/h log-uniform in `ratio`, at a uniform position,
    resized to `crop_size` and flipped half the time, by the one `grid_sample` of `ScaleCropFlip`. Where torchvision
    retries a box that does not fit 10 times and then falls back to the centre, a box is clipped to the image here
    (a side longer than the image becomes the image's side), so that drawing stays a few batch-wide tensor ops.

    Multi-size training (beyond the paper): with `sizes`, every batch of `batch_size` consecutive places of the
    epoch is resized to one side drawn uniformly from `sizes` (the same for all DDP ranks at a step), so that BN
    statistics and the last stage's border-dominated maps meet every test size in training."""

    host_params = frozenset({"side"})  # read as a number per batch: kept off the device (no sync per step)

    def __init__(self, image_size: tuple[int, int], area: tuple[float, float] = (0.25, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), crop_size: int = 112, lighting_std: float = 0.0,
                 eigval: Sequence[float] | torch.Tensor = IMAGENET_LIGHTING_EIGVAL,
                 eigvec: Sequence[Sequence[float]] | torch.Tensor = IMAGENET_LIGHTING_EIGVEC,
                 normalize: Normalize | None = None, sizes: Sequence[int] = (), batch_size: int = 0) -> None:
        if not (len(area) == 2 and 0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"crop area must be two fractions 0 < low <= high <= 1 and ratio 0 < low <= high, got "
                             f"area {tuple(area)}, ratio {tuple(ratio)}; fix --set crop_area=LOW,HIGH")
        if sizes and (batch_size < 1 or min(sizes) < 1):
            raise ValueError(f"multi-size crops need positive sides and the global batch size, got sizes "
                             f"{tuple(sizes)}, batch_size {batch_size}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.area, self.ratio = (float(area[0]), float(area[1])), (float(ratio[0]), float(ratio[1]))
        self.crop_size = int(crop_size)
        self.output_size = (self.crop_size, self.crop_size)
        self.sizes, self.batch_size = tuple(int(side) for side in sizes), int(batch_size)
        self.lighting = PCALighting(lighting_std, eigval, eigvec) if lighting_std > 0 else None
        self.normalize = Normalize() if normalize is None else normalize

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per image: its source box (x1, y1, x2, y2) in pixels, flip and lighting alpha."""
        height, width = self.image_size
        area = height * width * (self.area[0] + (self.area[1] - self.area[0]) * torch.rand(count, generator=generator))
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(count, generator=generator))
        box_w = torch.sqrt(area * aspect).clamp(max=width)
        box_h = torch.sqrt(area / aspect).clamp(max=height)
        left = torch.rand(count, generator=generator) * (width - box_w)
        top = torch.rand(count, generator=generator) * (height - box_h)
        flips = torch.rand(count, generator=generator) < 0.5
        alpha = (self.lighting.sample_alpha(generator, count) if self.lighting is not None
                 else torch.zeros(count, 3))
        boxes = torch.stack([left, top, left + box_w, top + box_h], dim=1)
        drawn = {"flips": flips, "boxes": boxes.float(), "alpha": alpha}
        if self.sizes:  # one side per global batch, repeated for each of its places
            steps = -(-count // self.batch_size)
            side = torch.tensor(self.sizes)[torch.randint(len(self.sizes), (steps,), generator=generator)]
            drawn["side"] = side.repeat_interleave(self.batch_size)[:count]
        return drawn

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor],
                 output_size: tuple[int, int] | None = None) -> torch.Tensor:
        if "side" in params and output_size is None:
            side = int(params["side"][0])  # every place of a batch holds its batch's side (a host tensor)
            output_size = (side, side)
        return super().__call__(images, params, output_size)

    def __repr__(self) -> str:
        lighting = 0.0 if self.lighting is None else self.lighting.alpha_std
        sizes = f", sizes={self.sizes}, batch_size={self.batch_size}" if self.sizes else ""
        return (f"RandomResizedCropFlip(image_size={self.image_size}, area={self.area}, ratio={self.ratio}, "
                f"crop_size={self.crop_size}{sizes}, lighting_std={lighting}, normalize={self.normalize!r})")


class EvalTransform:
    """Single-view evaluation: shorter side -> `resize`, centre `crop_size` crop, float, normalise."""

    def __init__(self, resize: int = 256, crop_size: int = 224, normalize: Normalize | None = None) -> None:
        if resize < crop_size:
            raise ValueError(f"resize ({resize}) must be >= crop_size ({crop_size})")
        self.resize, self.crop_size = int(resize), int(crop_size)
        self.normalize = Normalize() if normalize is None else normalize

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 resize + centre crop (what the `center` test protocol feeds the network)."""
        return TF.center_crop(resize_shorter_side(image, self.resize), [self.crop_size])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.normalize(to_float(self.geometry(image)))


def _resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """Output size of `resize_shorter_side` (torchvision truncates the longer side)."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


ImageSource = ImageFolderDataset | Sequence[str | os.PathLike]


def _iter_center_views(source: ImageSource, max_images: int | None, resize: int, size: int) -> Iterator[torch.Tensor]:
    """Float [0, 1] centre crops of up to `max_images` images spread evenly over `source`."""
    if isinstance(source, ImageFolderDataset):
        paths = [path for path, _ in source.samples]
        skip_bad = source.on_bad_image == "skip"
    else:
        paths = [os.fspath(p) for p in source]
        skip_bad = False
    if not paths:
        raise ValueError("no images to compute statistics from")
    count = len(paths) if max_images is None else min(max_images, len(paths))
    # Evenly spaced indices: the folder is sorted by class, so a subset still covers the classes.
    indices = torch.linspace(0, len(paths) - 1, count).round().long().unique().tolist()
    geometry = EvalTransform(resize, size, Normalize((0.0, 0.0, 0.0), None)).geometry
    for index in indices:
        try:
            image = read_image(paths[index])
        except BadImageError as exc:
            if not skip_bad:
                raise
            logger.warning("skipping unreadable image while computing statistics: %s", exc)
            continue
        yield to_float(geometry(image))


def compute_mean_image(source: ImageSource, size: int = 224, resize: int = 256,
                       max_images: int | None = 10_000) -> torch.Tensor:
    """Per-pixel mean (3, size, size), pixels in [0, 1], of `resize`-shorter-side centre crops of training images.

    `source` is an ImageFolderDataset (its transform is ignored) or a list of image paths. Store the result
    with the run (as `data.preprocess.Preprocessing.mean_image`); it is a plain tensor.
    """
    total = torch.zeros(3, size, size, dtype=torch.float64)
    count = 0
    for view in _iter_center_views(source, max_images, resize, size):
        total += view
        count += 1
    if count == 0:
        raise ValueError("every image was unreadable; cannot compute a mean image")
    return (total / count).float()


def compute_pca_lighting(source: ImageSource, max_images: int | None = 10_000, resize: int = 256,
                         size: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """`pixel_pca` of the same image subset and crops as `compute_mean_image`."""
    return pixel_pca(_iter_center_views(source, max_images, resize, size))


def pixel_pca(views: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (3,), descending, and eigenvectors (3, 3) as columns of the RGB pixel covariance in [0, 1] of
    `views`: float (3, H, W) images in [0, 1] or uint8 (N, 3, H, W) batches.

    The sign of an eigenvector is arbitrary (the lighting noise is symmetric); each is oriented like the matching
    column of AlexNet's IMAGENET_LIGHTING_EIGVEC.
    """
    total = torch.zeros(3, dtype=torch.float64)
    outer = torch.zeros(3, 3, dtype=torch.float64)
    pixels = 0
    for view in views:
        flat = (to_float(view).transpose(0, 1) if view.dim() == 4 else view).reshape(3, -1).double()
        total += flat.sum(dim=1)
        outer += flat @ flat.T
        pixels += flat.shape[1]
    if pixels == 0:
        raise ValueError("every image was unreadable; cannot compute lighting statistics")
    mean = total / pixels
    covariance = outer / pixels - torch.outer(mean, mean)
    eigval, eigvec = torch.linalg.eigh(covariance)  # ascending
    eigval, eigvec = eigval.flip(0), eigvec.flip(1)
    reference = torch.tensor(IMAGENET_LIGHTING_EIGVEC, dtype=torch.float64)
    eigvec = eigvec * torch.where((eigvec * reference).sum(dim=0) < 0, -1.0, 1.0)
    return eigval.clamp_min(0).float(), eigvec.float()
