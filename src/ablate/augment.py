"""Batched two-view augmentation on the training device, with per-sample random parameters.

Each op follows torchvision's per-image transform of the same name (RandomResizedCrop, RandomHorizontalFlip,
ColorJitter with a random op order per image, RandomGrayscale, GaussianBlur, RandomSolarize, Normalize),
but draws its parameters for the whole batch at once and runs as a handful of tensor kernels.
Images enter as uint8 [N, C, H, W] and leave as normalized float [N, C, S, S].
"""

import functools
import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, made once per device and dtype: ``torch.tensor([...], device=cuda)`` is a
    blocking host-to-device copy, which would stop the host from queueing work ahead of the GPU every view.
    Inside a compiled function it is a graph constant instead (no copy at run time)."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, device=device, dtype=dtype)
    return _cached_constant(values, torch.device(device), dtype)


@functools.cache
def _cached_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


def _u(n, lo, hi, device):
    return torch.empty(n, device=device).uniform_(lo, hi)


class CropDraws(NamedTuple):
    """The random numbers of ``crop_boxes`` for n images, in the order it draws them: ``attempts`` (area
    fraction, log aspect ratio) pairs per image and two uniforms that place the box."""
    area: torch.Tensor       # [n, attempts], uniform in the scale range
    log_ratio: torch.Tensor  # [n, attempts], uniform in the log ratio range
    top: torch.Tensor        # [n], uniform in [0, 1)
    left: torch.Tensor       # [n]
    ratio: tuple             # the ratio range, for the fallback box


def crop_draws(n, scale, ratio, device, attempts: int = 10) -> CropDraws:
    """Every random number ``crop_boxes`` needs, drawn now; the arithmetic waits for ``boxes_from``."""
    area = _u(n * attempts, scale[0], scale[1], device).view(n, attempts)
    log_r = _u(n * attempts, math.log(ratio[0]), math.log(ratio[1]), device).view(n, attempts)
    return CropDraws(area, log_r, torch.rand(n, device=device), torch.rand(n, device=device), tuple(ratio))


def boxes_from(d: CropDraws, height: int, width: int):
    """RandomResizedCrop.get_params on the draws ``d``: of each image's attempts the first that fits is kept,
    else the centre crop at the clamped ratio. Returns (i, j, h, w) as float tensors (top, left, height,
    width in pixels)."""
    ratio = d.ratio
    target = (height * width) * d.area
    aspect = torch.exp(d.log_ratio)
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
    i = torch.floor(d.top * (height - h + 1))
    j = torch.floor(d.left * (width - w + 1))
    i = torch.where(found, i, torch.div(height - h, 2, rounding_mode="floor"))
    j = torch.where(found, j, torch.div(width - w, 2, rounding_mode="floor"))
    return i, j, h, w


def crop_boxes(n, height, width, scale, ratio, device, attempts: int = 10):
    """RandomResizedCrop.get_params for n images at once (``boxes_from`` of fresh ``crop_draws``)."""
    return boxes_from(crop_draws(n, scale, ratio, device, attempts), height, width)


def crop_grid(boxes, flip, height: int, width: int, size: int, dtype=torch.float32):
    """The grid_sample grid (n, size, size, 2) that maps each box, mirrored where ``flip``, onto size x size
    pixels: ``F.affine_grid`` of theta = [[sx, 0, tx], [0, sy, ty]], to the bit, built per axis (a scale and
    a shift) instead of through affine_grid's batched 3x2 matrix products, which take ten times as long on a CPU."""
    i, j, h, w = boxes
    sx = (w / width) * torch.where(flip, -1.0, 1.0)
    sy = h / height
    tx = (2 * j + w) / width - 1
    ty = (2 * i + h) / height - 1
    centres = torch.linspace(-1, 1, size, device=sx.device, dtype=dtype) * (size - 1) / size  # align_corners=False
    gx = centres * sx[:, None].to(dtype) + tx[:, None].to(dtype)
    gy = centres * sy[:, None].to(dtype) + ty[:, None].to(dtype)
    n = len(sx)
    return torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], -1)


def resized_crop_flip(x, boxes, flip, size: int):
    """Crop each box, resize it bilinearly to size x size and mirror where ``flip``: one grid_sample."""
    grid = crop_grid(boxes, flip, x.shape[2], x.shape[3], size, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x):
    """ITU-R 601-2 luma of [N, 3, H, W] as [N, 1, H, W] (a 1x1 convolution is far slower on CPU)."""
    r, g, b = x.split(1, dim=1)
    return (r * GRAY[0]).add_(g, alpha=GRAY[1]).add_(b, alpha=GRAY[2])


def _pick(x, y, mask):
    """y where the per-sample bool ``mask`` is set, else x, exactly (x (1 - m) + y m with m in {0, 1}):
    on CPU this is several times faster than torch.where over the whole batch."""
    m = mask.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return torch.addcmul(x * (1 - m), y, m)


def adjust_hue(x, shift, out=None):
    """Rotate hue by ``shift`` (fraction of a turn, per sample) through HSV, as torchvision's adjust_hue.
    Written with few full-size kernels: on CPU, torch.where and max(dim) cost several times an add. ``out``
    may be ``x`` itself (it is read before the result is written)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    dc = delta.clamp_min(1e-12)  # grey pixels (delta = 0) come back as maxc whatever their hue
    # hue in sextants (torchvision's 6 * h before the mod)
    h = torch.where(maxc == r, g - b, torch.where(maxc == g, 2.0 * dc + b - r, 4.0 * dc + r - g)) / dc
    h = h + 6.0 * shift.view(-1, 1, 1)
    # HSV -> RGB as f(n) = V - V S clamp(min(k, 4 - k), 0, 1), k = (n + 6 H) mod 6, with V S = delta,
    # for the three channels at once (n = 5, 3, 1)
    k = h.unsqueeze(1) + _constant((5.0, 3.0, 1.0), x.device, x.dtype).view(1, 3, 1, 1)
    k = k.remainder_(6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return torch.addcmul(maxc.unsqueeze(1), delta.unsqueeze(1), k, value=-1.0, out=out)


def jitter_factors(n, cfg, device):
    """ColorJitter.get_params per sample: brightness, contrast, saturation in [max(0, 1 - s), 1 + s],
    hue in [-h, h], and a random order of the four ops."""
    b = _u(n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, device)
    c = _u(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, device)
    s = _u(n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, device)
    h = _u(n, -cfg.hue, cfg.hue, device)
    order = torch.rand(n, 4, device=device).argsort(dim=1)
    return b, c, s, h, order


def _blend_coefs(f, op):
    """The per-sample (f, a, c) of ``_blend`` for op ``op`` at factor ``f`` (any shape), each with three
    trailing unit dimensions to broadcast over an image: clamp(f y + (1 - f) target) with target black (op 0,
    brightness), the image's mean grey (op 1, contrast: c = 1 - f) or the pixel's grey (op 2, saturation:
    a = 1 - f)."""
    shape = (*f.shape, 1, 1, 1)
    return f.view(shape), ((1 - f) * (op == 2)).view(shape), ((1 - f) * (op == 1)).view(shape)


def _blend(y, f, a, c, out=None):
    """clamp(f y + a grey + c mean grey) per sample of y [N, 3, H, W], coefficients from ``_blend_coefs``.
    ``out`` may be ``y`` itself."""
    gray = _gray(y)
    mean = c * gray.mean(dim=(1, 2, 3), keepdim=True)
    return torch.addcmul(torch.addcmul(mean, a, gray), f, y, out=out).clamp_(0, 1)


def color_jitter(x, factors, apply, subset: bool | None = None):
    """Brightness, contrast, saturation and hue in each sample's own random order (torchvision's
    ColorJitter), on the samples where ``apply`` is set; the others come back unchanged. Brightness, contrast
    and saturation are each a clamped blend f * x + (1 - f) * target with target black, the mean grey level
    or the per-pixel grey, so one blend per position in the order serves all three: clamp(f x + a grey + c)
    with per-sample a and c. Hue, the costly op, runs once between the blends before and after it.
    ``subset`` (default: on a CPU) computes each op only on the samples it changes (``_jitter_rows``), with
    the same result to the bit."""
    b, c, s, h, order = factors
    fac = torch.stack([b, c, s, torch.ones_like(b)], 1)
    hue_at = (order == 3).float().argmax(1)
    if subset is None:  # finding the samples an op changes syncs a GPU; on a CPU it pays
        subset = x.device.type == "cpu"
    if subset:
        return _jitter_rows(x, fac, order, hue_at, h, apply)

    def blend(y, step, active):
        op = order[:, step]
        f = fac.gather(1, op.view(-1, 1)).squeeze(1)
        # elsewhere the blend is the identity (f = 1): y exactly
        return _blend(y, *_blend_coefs(torch.where(active & (op != 3) & apply, f, fac[:, 3]), op))

    out = x
    for step in range(3):
        out = blend(out, step, step < hue_at)
    out = _pick(out, adjust_hue(out, h), apply)
    for step in range(1, 4):
        out = blend(out, step, step > hue_at)
    return out


def _jitter_rows(x, fac, order, hue_at, h, apply):
    """``color_jitter`` with the samples sorted by where their hue falls in their order (hue last first, the
    samples left alone last), so that each blend position and the hue act on one contiguous block of rows, in
    place, with each blend's per-sample coefficients computed once for all positions."""
    key = torch.where(apply, 3 - hue_at, 4)
    perm = key.argsort(stable=True)
    ends = torch.bincount(key, minlength=5).cumsum(0).tolist()  # ends[k]: how many rows have key <= k
    out, order = x.index_select(0, perm), order[perm]
    # [n, position, 1, 1, 1]: each position's coefficients (the identity's at the hue's position, f = 1)
    f, a, c = _blend_coefs(fac[perm].gather(1, order), order)

    def blend(lo, hi, step):
        if hi > lo:
            rows = out[lo:hi]
            _blend(rows, f[lo:hi, step], a[lo:hi, step], c[lo:hi, step], out=rows)

    for step in range(3):  # before the hue: the rows whose hue comes later than position step
        blend(0, ends[2 - step], step)
    rows = out[:ends[3]]
    adjust_hue(rows, h[perm[:ends[3]]], out=rows)
    for step in range(1, 4):  # after it: the rows whose hue came earlier
        blend(ends[3 - step], ends[3], step)
    return out.index_select(0, perm.argsort())


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
    return _pick(x, y.view(n, ch, hgt, wid), apply)


def draw_view(n: int, cfg, view: int, device) -> dict:
    """Every random number of one view of n images, drawn in one fixed order (the pixel ops draw none, so
    eager and compiled ops see the same draws). Only the draws happen here: ``apply_view`` does the
    arithmetic, so a caller can draw in order on one thread and augment on others."""
    p = {"crop": crop_draws(n, cfg.crop_scale, cfg.crop_ratio, device),
         "flip": torch.rand(n, device=device) < cfg.flip_p}
    if cfg.jitter_p > 0:
        p["jitter"] = jitter_factors(n, cfg, device)
        p["jitter_on"] = torch.rand(n, device=device) < cfg.jitter_p
    if cfg.gray_p > 0:
        p["gray"] = torch.rand(n, device=device) < cfg.gray_p
    if cfg.blur_p[view] > 0:
        p["sigma"] = _u(n, cfg.blur_sigma[0], cfg.blur_sigma[1], device)
        p["blur"] = torch.rand(n, device=device) < cfg.blur_p[view]
    if cfg.solarize_p[view] > 0:
        p["solarize"] = torch.rand(n, device=device) < cfg.solarize_p[view]
    return p


def colour_ops(x, p: dict, mean, std, subset: bool | None = None):
    """The ops after the crop, on float [N, C, S, S] in [0, 1] with the parameters of ``draw_view``: colour
    jitter, grayscale, blur, solarize, normalize. Elementwise but for the blur, so ``torch.compile`` fuses
    them into a few loops (``compiled_colour_ops``)."""
    if "jitter" in p:
        x = color_jitter(x, p["jitter"], p["jitter_on"], subset)
    if "gray" in p:
        x = _pick(x, _gray(x), p["gray"])
    if "blur" in p:
        kernel = 2 * int(0.05 * x.shape[-1]) + 1  # about 10% of the image side, odd
        x = gaussian_blur(x, p["sigma"], p["blur"], kernel)
    if "solarize" in p:
        # solarize at 0.5 maps x >= 0.5 to 1 - x, i.e. min(x, 1 - x)
        x = _pick(x, torch.minimum(x, 1 - x), p["solarize"])
    return normalize_float(x, mean, std)


@functools.cache
def compiled_colour_ops():
    """``colour_ops`` through ``torch.compile`` (inductor; on a CPU it needs a C++ compiler): one fused loop
    instead of some forty full-size kernels. Every blend runs on the whole batch (``subset=False``), so the
    shapes stay fixed; results match eager ones to float rounding, not to the bit."""
    # a CPU-only machine would otherwise print torch's "No CUDA runtime is found" at the first compile
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(functools.partial(colour_ops, subset=False), dynamic=False)


def augment_view(images, cfg, view: int, size: int, mean, std, colour=colour_ops):
    """One augmented view of a uint8 batch [N, C, H, W] (on any device); cfg is the ``aug`` node, ``colour``
    ``colour_ops`` or its compiled form."""
    return apply_view(images, draw_view(len(images), cfg, view, images.device), size, mean, std, colour)


def apply_view(images, p: dict, size: int, mean, std, colour=colour_ops):
    """The view that the parameters ``p`` of ``draw_view`` describe (no random numbers drawn)."""
    boxes = boxes_from(p["crop"], images.shape[2], images.shape[3])
    x = resized_crop_flip(images.float().div_(255), boxes, p["flip"], size)
    return colour(x, p, mean, std)


def normalize_float(x, mean, std):
    """(x - mean) / std as one fused multiply-add."""
    inv = 1.0 / std.to(x.dtype)
    return torch.addcmul((-mean.to(x.dtype) * inv).view(1, -1, 1, 1), x, inv.view(1, -1, 1, 1))


def two_views(images, cfg, size, mean, std, colour=colour_ops):
    return (augment_view(images, cfg, 0, size, mean, std, colour),
            augment_view(images, cfg, 1, size, mean, std, colour))


def eval_view(images, size, mean, std):
    """Deterministic view for diagnostics: resize to ``size`` when needed, normalize."""
    x = images.float().div(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize_float(x, mean, std)
