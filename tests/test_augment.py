"""Batched augmentation: torchvision's parameter ranges and semantics, drawn per sample."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf

from ablate.augment import (
    GRAY,
    adjust_hue,
    augment_view,
    color_jitter,
    compiled_colour_ops,
    crop_boxes,
    crop_grid,
    gaussian_blur,
    jitter_factors,
    resized_crop_flip,
    two_views,
)

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
    for subset in (True, False):
        ours = color_jitter(x, (b, c, s, h, order), apply, subset)
        for n in range(12):
            if not apply[n]:  # RandomApply skips ColorJitter altogether: not even the HSV round trip
                assert torch.equal(ours[n], x[n])
                continue
            y = x[n]
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


def _only(**kw):
    """The recipe with every op off except those given (identity crop, no flip)."""
    off = dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0, jitter_p=0.0, gray_p=0.0,
               blur_p=[0.0, 0.0], solarize_p=[0.0, 0.0])
    return OmegaConf.merge(AUG, {**off, **kw})


def test_identity_recipe_returns_the_images():
    img = (torch.rand(8, 3, 16, 16) * 255).to(torch.uint8)
    v1, v2 = two_views(img, _only(), 16, torch.zeros(3), torch.ones(3))
    assert torch.allclose(v1, img.float() / 255, atol=1e-5) and torch.allclose(v2, v1)


def test_crop_and_flip_sample_each_box_per_sample():
    # coordinate ramps: bilinear sampling of a linear ramp is exact, so each output pixel tells where it came from
    n, size, out = 64, 32, 8
    xs = torch.arange(size, dtype=torch.float32)
    ramp = torch.stack([xs.view(1, -1).expand(size, size), xs.view(-1, 1).expand(size, size)]).expand(n, 2, size, size)
    boxes = crop_boxes(n, size, size, (0.08, 1.0), (0.75, 4 / 3), "cpu")
    flip = torch.rand(n) < 0.5
    y = resized_crop_flip(ramp.contiguous(), boxes, flip, out)
    i, j, h, w = boxes
    c = torch.arange(out, dtype=torch.float32) + 0.5
    col = torch.where(flip.view(-1, 1), c.flip(0).view(1, -1), c.view(1, -1))
    want_x = (j.view(-1, 1) + col * w.view(-1, 1) / out - 0.5).clamp(0, size - 1)
    want_y = (i.view(-1, 1) + c.view(1, -1) * h.view(-1, 1) / out - 0.5).clamp(0, size - 1)
    assert torch.allclose(y[:, 0, 0, :], want_x, atol=1e-3)
    assert torch.allclose(y[:, 1, :, 0], want_y, atol=1e-3)
    assert flip.any() and not flip.all()


def test_crop_grid_is_affine_grid_of_the_crop_theta_to_the_bit():
    n, size = 512, 32
    for out in (32, 24, 7):
        boxes = crop_boxes(n, size, size, (0.08, 1.0), (0.75, 4 / 3), "cpu")
        flip = torch.rand(n) < 0.5
        i, j, h, w = boxes
        sx, sy = (w / size) * torch.where(flip, -1.0, 1.0), h / size
        tx, ty, zero = (2 * j + w) / size - 1, (2 * i + h) / size - 1, torch.zeros(n)
        theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
        want = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
        assert torch.equal(crop_grid(boxes, flip, size, size, out), want)


def test_grayscale_probability_is_per_sample():
    torch.manual_seed(0)
    img = (torch.rand(1, 3, 8, 8) * 255).to(torch.uint8).expand(4000, 3, 8, 8).contiguous()
    for p in (0.2, 0.5):
        v, _ = two_views(img, _only(gray_p=p), 8, torch.zeros(3), torch.ones(3))
        gray = (v[:, 0] == v[:, 1]).flatten(1).all(1) & (v[:, 1] == v[:, 2]).flatten(1).all(1)
        assert gray.float().mean().item() == pytest.approx(p, abs=0.03)
        # the grey images are the luma of the input, the others the input itself
        assert torch.allclose(v[gray][:, 0], (img[:1].float() / 255 * torch.tensor(GRAY).view(1, 3, 1, 1)).sum(1)
                              .expand(int(gray.sum()), 8, 8), atol=1e-5)
        assert torch.allclose(v[~gray], img[~gray].float() / 255, atol=1e-6)


def test_jitter_probability_and_per_sample_factors():
    torch.manual_seed(0)
    img = (torch.rand(1, 3, 8, 8) * 200 + 20).to(torch.uint8).expand(4000, 3, 8, 8).contiguous()
    v, _ = two_views(img, _only(jitter_p=0.8), 8, torch.zeros(3), torch.ones(3))
    changed = (v - img.float() / 255).abs().flatten(1).amax(1) > 1e-4
    assert changed.float().mean().item() == pytest.approx(0.8, abs=0.03)
    # per-sample factors: the jittered copies of one image all differ from each other
    assert torch.unique(v[changed].flatten(1).mean(1)).numel() > 0.95 * changed.sum().item()


def test_blur_sigma_range_and_probability_per_view():
    # an impulse: the neighbour / centre ratio of a blurred copy is exp(-1 / (2 sigma^2))
    torch.manual_seed(0)
    n, size = 2000, 32
    img = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    img[:, :, 16, 16] = 255
    cfg = _only(blur_p=[1.0, 0.1], blur_sigma=[0.1, 2.0])
    for v, p in zip(two_views(img, cfg, size, torch.zeros(3), torch.ones(3)), (1.0, 0.1)):
        centre, right = v[:, 0, 16, 16].double(), v[:, 0, 16, 17].double()
        blurred = right > 0
        assert blurred.float().mean().item() == pytest.approx(p, abs=0.02)
        sigma = torch.sqrt(-1 / (2 * torch.log(right[blurred] / centre[blurred])))
        assert sigma.min() >= 0.1 - 1e-3 and sigma.max() <= 2.0 + 1e-3
        assert sigma.min() < 0.2 and sigma.max() > 1.9  # uniform over the whole range
        assert sigma.mean().item() == pytest.approx(1.05, abs=0.08)
        assert torch.unique(sigma.float()).numel() > 0.9 * blurred.sum().item()  # drawn per sample
        assert torch.allclose(v[~blurred], img[~blurred].float() / 255, atol=1e-6)


def test_solarize_each_view_is_per_sample_and_exact():
    torch.manual_seed(0)
    img = (torch.rand(1, 3, 8, 8) * 255).to(torch.uint8).expand(3000, 3, 8, 8).contiguous()
    x = img[0].float() / 255
    v1, v2 = two_views(img, _only(solarize_p=[0.1, 0.5]), 8, torch.zeros(3), torch.ones(3))
    for v, p in ((v1, 0.1), (v2, 0.5)):
        sol = (v - x).abs().flatten(1).amax(1) > 1e-6
        assert sol.float().mean().item() == pytest.approx(p, abs=0.03)
        assert torch.allclose(v[sol], torch.where(x >= 0.5, 1 - x, x).expand(int(sol.sum()), 3, 8, 8), atol=1e-6)


def test_two_views_match_torchvision_pipeline_statistics():
    """Same images through torchvision's per-image PIL pipeline of the same recipe and through ours: per-channel
    mean and std of the outputs, and the share of grey outputs, agree."""
    from PIL import Image

    from ablate.bench import torchvision_views
    from ablate.data import make_shapes

    torch.manual_seed(0)
    img, _ = make_shapes(256, seed=3)
    mean, std = torch.tensor([0.3, 0.3, 0.3]), torch.tensor([0.25, 0.25, 0.25])
    tv1, tv2 = torchvision_views(AUG, 32, mean, std)
    pil = [Image.fromarray(a) for a in img.permute(0, 2, 3, 1).numpy()]
    ref = [torch.stack([t(p) for p in pil]) for t in (tv1, tv2)]
    ours = two_views(img, AUG, 32, mean, std)
    for r, o in zip(ref, ours):
        assert torch.allclose(o.mean(dim=(0, 2, 3)), r.mean(dim=(0, 2, 3)), atol=0.08)
        assert torch.allclose(o.std(dim=(0, 2, 3)), r.std(dim=(0, 2, 3)), rtol=0.08)
        grey = lambda t: ((t[:, 0] - t[:, 1]).abs().flatten(1).amax(1) < 0.02).float().mean().item()  # noqa: E731
        assert grey(o) == pytest.approx(grey(r), abs=0.06)


def test_jitter_on_the_changed_samples_only_equals_the_full_batch_to_the_bit():
    torch.manual_seed(3)
    x = torch.rand(64, 3, 16, 16)
    cfg = OmegaConf.create({"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1})
    factors = jitter_factors(64, cfg, "cpu")
    apply = torch.rand(64) < 0.8
    full = color_jitter(x, factors, apply, subset=False)
    assert torch.equal(color_jitter(x, factors, apply, subset=True), full)
    assert torch.equal(color_jitter(x, factors, apply), full)  # the CPU default
    none = torch.zeros(64, dtype=torch.bool)
    assert torch.equal(color_jitter(x, factors, none, subset=True), color_jitter(x, factors, none, subset=False))


def test_compiled_colour_ops_match_eager_and_repeat_exactly():
    """train.compile_aug: the same random draws (made outside the compiled ops), the same views to float
    rounding, and the same views again on a second call."""
    img = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    for view in (0, 1):  # view 1: blur and solarize as well
        outs = []
        for colour in (None, compiled_colour_ops(), compiled_colour_ops()):
            torch.manual_seed(3)
            outs.append(augment_view(img, AUG, view, 32, mean, std, *(colour,) if colour else ()))
        eager, compiled, again = outs
        assert torch.allclose(eager, compiled, atol=1e-4) and not torch.equal(eager, img.float())
        assert torch.equal(compiled, again)
