from .registry import create_model, list_models, model_spec
from .resnet import ResNet, model_config, model_from_config
from .specs import ResNetSpec
from .weights import import_state_dict, infer_spec, list_pretrained, load_model, save_weights

__all__ = [
    "ResNet",
    "ResNetSpec",
    "create_model",
    "import_state_dict",
    "infer_spec",
    "list_models",
    "list_pretrained",
    "load_model",
    "model_config",
    "model_from_config",
    "model_spec",
    "save_weights",
]
