from .pretrained import Pretrained, list_pretrained, resolve_pretrained
from .registry import create_model, list_models, load_model, model_spec, stored_architecture
from .resnet import ResNet, model_config, model_from_config
from .specs import ResNetSpec
from .weights import import_state_dict, infer_spec, save_weights

__all__ = [
    "Pretrained",
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
    "resolve_pretrained",
    "save_weights",
    "stored_architecture",
]
