"""Batched augmentation: torchvision's parameter ranges and semantics, drawn per sample."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf

from ablate.augment import adjust_hue, color_jitter, crop_boxes, gaussian_blur, jitter_factors, two_views

AUG = OmegaConf.create(dict(crop_scale=[0.08, 1.0], crop_ratio=[0.75, 4 / 3], flip_p=0.5, jitter_p=0.8,
                            brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, gray_p=0.2,
                            blur_p=[1.0, 0.1], blur_sigma=[0.1, 2.0], solarize_p=[0.0, 0.2]))


def test_crop_boxes_follow_random_resized_crop():
    i, j, h, w = crop_boxes(20000, 32, 32, (0.08, 1.0), (0.75, 4 / 3), "cpu")
    area = h * w / (32 * 32)
    assert (h >= 1).all() and (w >= 1).all() and (i >= 0).all() and (j >= 0).all()
    assert (i + h <= 32).all() and (j + w <= 32).all()
    # rounding to whole pixels stretches the ranges by about one pixel
    assert area.min() >= 0.06 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= 0.75 * 0.85 and ratio.max() <= 4 / 3 / 0.85
    # torchvision draws the area uniformly: its mean is near (0.08 + 1) / 2 (lower where draws are refused)
    assert 0.45 < area.mean().item() < 0.56
    assert torch.unique(torch.stack([i, j, h, w], 1), dim=0).shape[0] > 1000  # per-sample parameters


def test_crop_boxes_match_torchvision_in_distribution():
    import torchvision.transforms as T

    img = torch.zeros(3, 32, 32)
    tv = torch.tensor([T.RandomResizedCrop.get_params(img, [0.2, 1.0], [0.75, 4 / 3]) for _ in range(4000)]).float()
    i, j, h, w = crop_boxes(4000, 32, 32, (0.2, 1.0), (0.75, 4 / 3), "cpu")
    ours = torch.stack([i, j, h, w], 1)
    for col in range(4):
        assert ours[:, col].mean().item() == pytest.approx(tv[:, col].mean().item(), abs=0.6)
        assert ours[:, col].std().item() == pytest.approx(tv[:, col].std().item(), rel=0.1)


def test_jitter_factor_ranges_and_order_are_per_sample():
    b, c, s, h, order = jitter_factors(5000, AUG, "cpu")
    for f, lo, hi in ((b, 0.6, 1.4), (c, 0.6, 1.4), (s, 0.8, 1.2), (h, -0.1, 0.1)):
        assert f.min() >= lo and f.max() <= hi
        assert f.min() < lo + 0.01 and f.max() > hi - 0.01  # the whole range is used
    assert torch.unique(order, dim=0).shape[0] == 24  # all 24 op orders occur
    assert (order.sort(1).values == torch.arange(4)).all()


def test_color_jitter_equals_torchvision_per_image():
    torch.manual_seed(0)
    x = torch.rand(12, 3, 8, 8)
    b, c, s, h, order = jitter_factors(12, AUG, "cpu")
    apply = torch.rand(12) < 0.7
    ours = color_jitter(x, (b, c, s, h, order), apply)
    for n in range(12):
        y = x[n]
        if apply[n]:
            for op in order[n].tolist():
                y = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue][op](
                    y, float([b, c, s, h][op][n]))
        assert torch.allclose(ours[n], y, atol=1e-4)


def test_hue_matches_torchvision():
    x = torch.rand(6, 3, 5, 5)
    shift = torch.tensor([-0.5, -0.2, 0.0, 0.05, 0.3, 0.5])
    ref = torch.stack([TF.adjust_hue(x[n], float(shift[n])) for n in range(6)])
    assert torch.allclose(adjust_hue(x, shift), ref, atol=1e-5)


def test_blur_matches_torchvision_kernel():
    x = torch.rand(3, 3, 16, 16)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    ours = gaussian_blur(x, sigma, torch.tensor([True, True, False]), 5)
    for n in range(2):
        assert torch.allclose(ours[n], TF.gaussian_blur(x[n], [5, 5], [float(sigma[n])] * 2), atol=1e-5)
    assert torch.equal(ours[2], x[2])


def test_two_views_statistics():
    torch.manual_seed(0)
    images = (torch.rand(512, 3, 32, 32) * 255).to(torch.uint8)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    v1, v2 = two_views(images, AUG, 32, mean, std)
    assert v1.shape == v2.shape == (512, 3, 32, 32)
    assert not torch.allclose(v1, v2)
    x1 = v1 * 0.25 + 0.5  # back to [0, 1]
    assert x1.min() >= -1e-5 and x1.max() <= 1 + 1e-5
    gray = (x1[:, 0] == x1[:, 1]).flatten(1).all(1) & (x1[:, 1] == x1[:, 2]).flatten(1).all(1)
    # grayscale with p = 0.2 (jitter cannot make a colour image exactly grey)
    assert gray.float().mean().item() == pytest.approx(0.2, abs=0.06)


def test_solarize_probability_per_view():
    torch.manual_seed(0)
    images = torch.full((2000, 3, 8, 8), 230, dtype=torch.uint8)  # bright: solarize makes it dark
    cfg = OmegaConf.merge(AUG, dict(crop_scale=[1.0, 1.0], jitter_p=0.0, gray_p=0.0, blur_p=[0.0, 0.0],
                                    flip_p=0.0, solarize_p=[0.0, 0.2]))
    mean, std = torch.zeros(3), torch.ones(3)
    v1, v2 = two_views(images, cfg, 8, mean, std)
    assert (v1.mean((1, 2, 3)) > 0.5).all()
    assert (v2.mean((1, 2, 3)) < 0.5).float().mean().item() == pytest.approx(0.2, abs=0.03)


def test_flip_mirrors_half_the_batch():
    torch.manual_seed(0)
    img = torch.zeros(1000, 3, 8, 8, dtype=torch.uint8)
    img[..., :4] = 255  # left half white
    cfg = OmegaConf.merge(AUG, dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], jitter_p=0.0, gray_p=0.0,
                                    blur_p=[0.0, 0.0], solarize_p=[0.0, 0.0]))
    v, _ = two_views(img, cfg, 8, torch.zeros(3), torch.ones(3))
    flipped = v[:, 0, 4, 0] < 0.5
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.06)
    assert math.isclose(v[~flipped, 0, 4, 0].min().item(), 1.0, abs_tol=1e-5)
