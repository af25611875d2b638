"""resnets: Deep Residual Learning for Image Recognition (He et al., CVPR 2016) on PyTorch."""

from .analysis.complexity import Complexity, complexity
from .data.preprocess import Preprocessing, preprocess, preprocessing_of
from .deploy.fuse import fuse_for_inference
from .deploy.optimize import optimize_for_inference
from .models import (
    Pretrained,
    ResNet,
    ResNetSpec,
    create_model,
    import_state_dict,
    infer_spec,
    list_models,
    list_pretrained,
    load_model,
    model_config,
    model_from_config,
    model_spec,
    resolve_pretrained,
    save_weights,
)
from .version import __version__

__all__ = [
    "Complexity",
    "Preprocessing",
    "Pretrained",
    "ResNet",
    "ResNetSpec",
    "__version__",
    "complexity",
    "create_model",
    "fuse_for_inference",
    "import_state_dict",
    "infer_spec",
    "list_models",
    "list_pretrained",
    "load_model",
    "model_config",
    "model_from_config",
    "model_spec",
    "optimize_for_inference",
    "preprocess",
    "preprocessing_of",
    "resolve_pretrained",
    "save_weights",
]
