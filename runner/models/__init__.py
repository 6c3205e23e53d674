"""Models: `python -m runner model=NAME` (linear, mlp, lenet, convnet, resnet18, resnet50, timm, torchvision).

Each config's `_target_` names one builder re-exported here (`runner.models.convnet`, ...; saved
checkpoints name them too); `build(cfg.model)` instantiates it. Every model maps (batch, channels,
height, width) to (batch, num_classes) logits, its last layer is reachable through
`output_layer(model)` (freezing, bias init, fine-tuning stages), and it carries what it started
from as `model.pretrained_weights` (runner/models/weights.py; None from scratch).
    own.py                runner's own models          timm_models.py / torchvision_models.py   by name
    weights.py            files, hub caches, records   preprocessing.py   the weights' mean/std/size
    names.py              names, weights enums         validation.py      the settings, before any run
"""

from runner.models.building import (
    batch_norm_layers,
    build,
    count_parameters,
    has_batch_norm,
    output_layer,
    set_output_bias_to_prior,
    without_pretrained_weights,
)
from runner.models.own import (
    CheckpointedSequential,
    ConvNet,
    ResidualBlock,
    convnet,
    lenet,
    linear,
    mlp,
)
from runner.models.timm_models import timm_model
from runner.models.torchvision_models import resnet, torchvision_model

__all__ = ["CheckpointedSequential", "ConvNet", "ResidualBlock", "batch_norm_layers", "build", "convnet",
           "count_parameters", "has_batch_norm", "lenet", "linear", "mlp", "output_layer", "resnet",
           "set_output_bias_to_prior", "timm_model", "torchvision_model", "without_pretrained_weights"]
