import pytest
import torch
from omegaconf import OmegaConf

from ablate.models import BACKBONES, build_backbone, mlp


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_map_images_to_features(name):
    net = build_backbone(OmegaConf.create({"name": name, "widths": [4, 8, 8, 16]})).eval()
    with torch.no_grad():
        h = net(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, net.out_dim)
    assert net.out_dim == {"small_cnn": 16, "resnet18_cifar": 512, "resnet18": 512, "resnet50": 2048}[name]


def test_cifar_stem_is_3x3_stride1_without_maxpool():
    net = build_backbone(OmegaConf.create({"name": "resnet18_cifar"}))
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_mlp_blocks():
    # hidden layers: Linear-BN-ReLU; output: Linear (+ non-affine BN when asked), never ReLU
    m = mlp([8, 16, 4], batchnorm=True, output_bn=True)
    kinds = [type(b).__name__ for b in m]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert m[1].affine and not m[4].affine
    assert [type(b).__name__ for b in mlp([8, 16, 4], batchnorm=False, output_bn=True)] == ["Linear", "ReLU", "Linear"]
