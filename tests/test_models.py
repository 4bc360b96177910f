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


def test_embed_without_the_projector_gives_the_same_features_and_skips_it():
    from ablate.models import Encoder, embed

    torch.manual_seed(0)
    enc = Encoder(build_backbone(OmegaConf.create({"name": "small_cnn", "widths": [4, 8, 8, 16]})),
                  mlp([16, 32, 8], batchnorm=True))
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    norm = lambda x: x.float() / 255  # noqa: E731
    h, z = embed(enc, images, norm, batch_size=16)
    calls = []
    enc.projector.register_forward_hook(lambda *a: calls.append(1))
    h_only, none = embed(enc, images, norm, batch_size=16, project=False)
    assert torch.equal(h_only, h) and none is None and not calls and z.shape == (40, 8)
    assert enc.training  # restored


def test_eval_mode_embedding_runs_in_cache_sized_chunks_on_a_cpu_and_batch_stats_in_whole_batches():
    from ablate.models import CPU_EVAL_CHUNK, Encoder, embed

    torch.manual_seed(0)
    enc = Encoder(build_backbone(OmegaConf.create({"name": "small_cnn", "widths": [4, 8, 8, 16]})),
                  mlp([16, 32, 8], batchnorm=True))
    n = 2 * CPU_EVAL_CHUNK + 40
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
    norm = lambda x: x.float() / 255  # noqa: E731
    sizes = []
    enc.backbone.register_forward_hook(lambda m, args, out: sizes.append(len(args[0])))
    h, z = embed(enc, images, norm, batch_size=1024)
    assert sizes == [CPU_EVAL_CHUNK, CPU_EVAL_CHUNK, 40]
    h1, z1 = embed(enc, images[:40], norm, batch_size=1)  # one image at a time: eval mode is per image
    assert torch.allclose(h[:40], h1, atol=1e-6) and torch.allclose(z[:40], z1, atol=1e-6)
    sizes.clear()
    embed(enc, images, norm, batch_size=1024, batch_stats=True)  # batch statistics: the batch is the unit
    assert sizes == [n]
