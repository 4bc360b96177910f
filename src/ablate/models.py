"""Backbones and heads. Heads are built from a list of blocks, so BN on or off is one argument."""

import torch
from torch import nn

from .stages import stage

BACKBONES = ("small_cnn", "resnet18_cifar", "resnet18", "resnet50")


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages (the last three stride 2) and global average pooling."""

    def __init__(self, widths=(32, 64, 128, 256)):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in

    def forward(self, x):
        return self.features(x)


def build_backbone(cfg) -> nn.Module:
    """Return a module mapping images to features, with ``out_dim`` set."""
    name = cfg.name
    if name == "small_cnn":
        return SmallCNN(tuple(cfg.get("widths", (32, 64, 128, 256))))
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")
    import torchvision  # here: the small CNN, and a config error, need not wait for its import (about 1.5 s)

    net = getattr(torchvision.models, name.removesuffix("_cifar"))(weights=None)
    if name.endswith("_cifar"):  # 3x3 stride-1 stem, no max-pool (SimSiam / solo-learn CIFAR)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def mlp(dims, batchnorm: bool, output_bn: bool = False, last_bias: bool = True) -> nn.Sequential:
    """Linear layers through ``dims`` ([in, hidden..., out]): BN and ReLU after every layer but the last;
    the last gets a non-affine BN when ``output_bn`` (SimSiam's projector), never a ReLU, and a bias only
    when ``last_bias`` (VICReg's and SimSiam's expanders end in a bias-free Linear)."""
    blocks = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        bn = (output_bn if last else True) and batchnorm
        blocks.append(nn.Linear(d_in, d_out, bias=not bn and (last_bias or not last)))
        if bn:
            blocks.append(nn.BatchNorm1d(d_out, affine=not last))
        if not last:
            blocks.append(nn.ReLU(inplace=True))
    return nn.Sequential(*blocks)


class Encoder(nn.Module):
    """Backbone followed by the projector ("expander"): returns features h and embeddings z of width ``dim``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector
        self.dim = [m for m in projector.modules() if isinstance(m, nn.Linear)][-1].out_features

    def forward(self, x):
        with stage("backbone"):
            h = self.backbone(x)
        with stage("heads"):
            return h, self.projector(h)


def scaled(width: int, mult: float) -> int:
    return max(8, int(round(width * mult)))


def build_encoder(backbone_cfg, method_cfg, batchnorm_cfg, width_mult: float) -> Encoder:
    backbone = build_backbone(backbone_cfg)
    dims = [backbone.out_dim] + [scaled(w, width_mult) for w in method_cfg.projector]
    output_bn = bool(batchnorm_cfg and batchnorm_cfg.projector_output)
    head = mlp(dims, batchnorm=batchnorm_cfg is not None, output_bn=output_bn,
               last_bias=method_cfg.projector_last_bias)
    return Encoder(backbone, head)


def build_predictor(predictor_cfg, batchnorm_cfg, dim: int, width_mult: float) -> nn.Module:
    return mlp([dim, scaled(predictor_cfg.hidden, width_mult), dim], batchnorm=batchnorm_cfg is not None)


def count_bn(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


# Images per forward of an eval-mode embedding on a CPU: larger batches spill the first layers' activations out
# of the cache (docs/performance.md, "Evaluation in chunks").
CPU_EVAL_CHUNK = 256


@torch.no_grad()
def embed(encoder: Encoder, images, normalize, batch_size: int = 1024, batch_stats: bool = False,
          project: bool = True):
    """Features and embeddings of uint8 images, batch by batch, kept on the device: in eval mode, or with
    ``batch_stats`` in train mode (batch norm normalizes each batch by its own statistics and updates its
    running ones). Without ``project`` the projector does not run and the embeddings are None. In eval mode
    each image is computed on its own, so a CPU runs the batches ``CPU_EVAL_CHUNK`` images at a time."""
    was_training = encoder.training
    encoder.train(batch_stats)
    if not batch_stats and images.device.type == "cpu":
        batch_size = min(batch_size, CPU_EVAL_CHUNK)
    hs, zs = [], []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size])
        if project:
            h, z = encoder(x)
            zs.append(z.float())
        else:
            h = encoder.backbone(x)
        hs.append(h.float())
    encoder.train(was_training)
    return torch.cat(hs), (torch.cat(zs) if project else None)
