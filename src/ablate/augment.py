"""Batched two-view augmentation on the training device, with per-sample random parameters.

Each op follows torchvision's per-image transform of the same name (RandomResizedCrop, RandomHorizontalFlip,
ColorJitter with a random op order per image, RandomGrayscale, GaussianBlur, RandomSolarize, Normalize),
but draws its parameters for the whole batch at once and runs as a handful of tensor kernels.
Images enter as uint8 [N, C, H, W] and leave as normalized float [N, C, S, S].
"""

import math

import torch
import torch.nn.functional as F

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _u(n, lo, hi, device):
    return torch.empty(n, device=device).uniform_(lo, hi)


def crop_boxes(n, height, width, scale, ratio, device, attempts: int = 10):
    """RandomResizedCrop.get_params for n images at once: up to ``attempts`` draws of (area, log-ratio)
    per image, the first that fits is kept, else the centre crop at the clamped ratio. Returns (i, j, h, w)
    as float tensors (top, left, height, width in pixels)."""
    area = height * width
    target = area * _u(n * attempts, scale[0], scale[1], device).view(n, attempts)
    log_r = _u(n * attempts, math.log(ratio[0]), math.log(ratio[1]), device).view(n, attempts)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = ok.any(dim=1)
    # fallback: whole image at the ratio clamped into range (torchvision's centre crop)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    # torch.randint(0, H - h + 1) per sample
    i = torch.floor(torch.rand(n, device=device) * (height - h + 1))
    j = torch.floor(torch.rand(n, device=device) * (width - w + 1))
    i = torch.where(found, i, torch.div(height - h, 2, rounding_mode="floor"))
    j = torch.where(found, j, torch.div(width - w, 2, rounding_mode="floor"))
    return i, j, h, w


def resized_crop_flip(x, boxes, flip, size: int):
    """Crop each box, resize it bilinearly to size x size and mirror where ``flip``: one grid_sample."""
    n, _, height, width = x.shape
    i, j, h, w = boxes
    sx = (w / width) * torch.where(flip, -1.0, 1.0)
    sy = h / height
    tx = (2 * j + w) / width - 1
    ty = (2 * i + h) / height - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x):
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _blend(a, b, factor):
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp(0, 1)


def adjust_hue(x, shift):
    """Rotate hue by ``shift`` (fraction of a turn, per sample) through HSV, as torchvision's adjust_hue."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    dc = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h6 = ((h + shift.view(-1, 1, 1)) % 1.0) * 6.0
    # HSV -> RGB as f(n) = V - V S max(0, min(k, 4 - k, 1)), k = (n + 6 H) mod 6, with V S = delta
    chans = [maxc - delta * torch.minimum((n + h6) % 6.0, 4.0 - (n + h6) % 6.0).clamp(0, 1)
             for n in (5.0, 3.0, 1.0)]
    return torch.stack(chans, 1)


def jitter_factors(n, cfg, device):
    """ColorJitter.get_params per sample: brightness, contrast, saturation in [max(0, 1 - s), 1 + s],
    hue in [-h, h], and a random order of the four ops."""
    b = _u(n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, device)
    c = _u(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, device)
    s = _u(n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, device)
    h = _u(n, -cfg.hue, cfg.hue, device)
    order = torch.rand(n, 4, device=device).argsort(dim=1)
    return b, c, s, h, order


def color_jitter(x, factors, apply):
    """Brightness, contrast, saturation and hue in each sample's own random order (torchvision's
    ColorJitter). Brightness, contrast and saturation are each a clamped blend f * x + (1 - f) * target with
    target black, the mean grey level or the per-pixel grey, so one blend per position in the order serves
    all three; hue, the costly op, runs once between the blends before and after it."""
    b, c, s, h, order = factors
    one = torch.ones_like(b)
    fac = torch.stack([b, c, s, one], 1)
    fac = torch.where(apply.view(-1, 1), fac, torch.ones_like(fac))  # not jittered: every op the identity
    hue_at = (order == 3).float().argmax(1)

    def blend(y, step, active):
        op = order[:, step]
        f = torch.where(active & (op != 3), fac.gather(1, op.view(-1, 1)).squeeze(1), one).view(-1, 1, 1, 1)
        gray = _gray(y)
        target = torch.where((op == 0).view(-1, 1, 1, 1), torch.zeros_like(gray),
                             torch.where((op == 1).view(-1, 1, 1, 1), gray.mean(dim=(1, 2, 3), keepdim=True),
                                         gray))
        return (f * y + (1 - f) * target).clamp(0, 1)

    out = x
    for step in range(3):
        out = blend(out, step, step < hue_at)
    out = adjust_hue(out, torch.where(apply, h, torch.zeros_like(h)))
    for step in range(1, 4):
        out = blend(out, step, step > hue_at)
    return out


def gaussian_blur(x, sigma, apply, kernel_size: int):
    """Per-sample Gaussian blur (separable, reflect padding); sigma per sample."""
    n, ch, hgt, wid = x.shape
    half = kernel_size // 2
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # [N*C, K]
    y = x.reshape(1, n * ch, hgt, wid)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), k.view(n * ch, 1, 1, -1), groups=n * ch)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), k.view(n * ch, 1, -1, 1), groups=n * ch)
    return torch.where(apply.view(-1, 1, 1, 1), y.view(n, ch, hgt, wid), x)


def augment_view(images, cfg, view: int, size: int, mean, std):
    """One augmented view of a uint8 batch [N, C, H, W] (on any device); cfg is the ``aug`` node."""
    n, _, height, width = images.shape
    dev = images.device
    x = images.float().div_(255)
    boxes = crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, dev)
    flip = torch.rand(n, device=dev) < cfg.flip_p
    x = resized_crop_flip(x, boxes, flip, size)
    if cfg.jitter_p > 0:
        x = color_jitter(x, jitter_factors(n, cfg, dev), torch.rand(n, device=dev) < cfg.jitter_p)
    if cfg.gray_p > 0:
        x = torch.where((torch.rand(n, device=dev) < cfg.gray_p).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    if cfg.blur_p[view] > 0:
        kernel = 2 * int(0.05 * size) + 1  # about 10% of the image side, odd
        sigma = _u(n, cfg.blur_sigma[0], cfg.blur_sigma[1], dev)
        x = gaussian_blur(x, sigma, torch.rand(n, device=dev) < cfg.blur_p[view], kernel)
    if cfg.solarize_p[view] > 0:
        sol = (torch.rand(n, device=dev) < cfg.solarize_p[view]).view(-1, 1, 1, 1)
        x = torch.where(sol & (x >= 0.5), 1 - x, x)
    return normalize_float(x, mean, std)


def normalize_float(x, mean, std):
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def two_views(images, cfg, size, mean, std):
    return augment_view(images, cfg, 0, size, mean, std), augment_view(images, cfg, 1, size, mean, std)


def eval_view(images, size, mean, std):
    """Deterministic view for diagnostics: resize to ``size`` when needed, normalize."""
    x = images.float().div(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize_float(x, mean, std)
