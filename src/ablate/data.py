"""Datasets as uint8 tensors [N, 3, H, W] that live on the training device, plus the embedded `shapes`."""

import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("shapes", "cifar10", "cifar100", "stl10", "folder", "npz")
PALETTE = torch.tensor([[0.95, 0.85, 0.3], [0.4, 0.9, 0.95], [0.95, 0.5, 0.85]])
SHAPES = ("circle", "ring", "square", "frame", "triangle", "plus", "star", "crescent", "ell", "half_disc")


class DataError(ValueError):
    """A dataset setting that cannot work; the message says what to change."""


@dataclass
class Data:
    train_x: torch.Tensor          # uint8 [N, 3, H, W], pretraining images
    test_x: torch.Tensor           # uint8 held-out images (diagnostics)
    test_y: torch.Tensor
    bank_x: torch.Tensor           # uint8 labelled training images (kNN bank, linear probe)
    bank_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    classes: tuple = ()

    def to(self, device):
        fields = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Data(**fields)


# ----------------------------------------------------------------------------------------------- shapes
def _shape_masks(u, v, label):
    """Inside-masks of the ten shapes in local coordinates (unit size, shape-centred)."""
    r = torch.sqrt(u * u + v * v)
    phi = torch.atan2(v, u)
    m_inf = torch.maximum(u.abs(), v.abs())
    masks = torch.stack([
        r < 0.9,                                                              # circle
        (r < 0.95) & (r > 0.55),                                              # ring
        m_inf < 0.75,                                                         # square
        (m_inf < 0.85) & (m_inf > 0.45),                                      # frame
        (v > -0.55) & (math.sqrt(3) * u.abs() + v < 0.95),                    # triangle
        ((u.abs() < 0.28) & (v.abs() < 0.95)) | ((v.abs() < 0.28) & (u.abs() < 0.95)),  # plus
        r < 0.55 + 0.4 * torch.cos(5 * phi),                                  # star
        (r < 0.95) & ((u - 0.45) ** 2 + v ** 2 > 0.7 ** 2),                   # crescent
        ((u > -0.8) & (u < -0.3) & (v.abs() < 0.85)) | ((u > -0.8) & (u < 0.8) & (v > 0.35) & (v < 0.85)),
        (r < 0.95) & (v > -0.2),                                              # half disc
    ], dim=1)  # [N, 10, H, W]
    return masks.gather(1, label.view(-1, 1, 1, 1).expand(-1, 1, *u.shape[1:])).squeeze(1)


def make_shapes(n: int, seed: int, size: int = 32, oversample: int = 2):
    """``n`` images of ten shape classes with random colour, position, size, rotation (within +-60 degrees)
    and a noisy graded background; deterministic in ``seed``. Returns uint8 [n, 3, size, size] and int64 labels."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    label = torch.randint(0, len(SHAPES), (n,), generator=g)
    scale = 0.5 + 0.3 * rand(n)                      # half-size as a fraction of the image side
    cx = (rand(n) * 2 - 1) * (1.05 - scale) * 0.8
    cy = (rand(n) * 2 - 1) * (1.05 - scale) * 0.8
    angle = (rand(n) - 0.5) * (2 * math.pi / 3)  # within +-60 degrees: rotation varies, classes stay apart
    # The foreground colour varies over a few hues and the background over grey levels, with a gradient
    # and pixel noise. A per-image colour that survives colour jitter (a background hue, say) would be a
    # shortcut: two views of one image would match by colour alone and the encoder would never need the
    # shape (measured: kNN near chance after 10 epochs with random background hues, above 50% with these).
    fg = PALETTE[torch.randint(0, len(PALETTE), (n,), generator=g)] * (0.9 + 0.1 * rand(n, 1))
    bg = (0.15 + 0.1 * rand(n, 1)).expand(n, 3)
    bg2 = (bg + (rand(n, 1) - 0.5) * 0.04).clamp(0, 1).expand(n, 3)
    s = size * oversample
    t = (torch.arange(s) + 0.5) / s * 2 - 1
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for a in range(0, n, 512):
        b = min(a + 512, n)
        x0, y0 = xx - cx[a:b].view(-1, 1, 1), yy - cy[a:b].view(-1, 1, 1)
        cos, sin = torch.cos(angle[a:b]).view(-1, 1, 1), torch.sin(angle[a:b]).view(-1, 1, 1)
        u = (cos * x0 + sin * y0) / scale[a:b].view(-1, 1, 1)
        v = (-sin * x0 + cos * y0) / scale[a:b].view(-1, 1, 1)
        mask = _shape_masks(u, v, label[a:b]).unsqueeze(1).float()
        grad = ((xx + yy) / 4 + 0.5).expand(b - a, 1, s, s)                # background gradient direction
        back = bg[a:b].view(-1, 3, 1, 1) * (1 - grad) + bg2[a:b].view(-1, 3, 1, 1) * grad
        img = mask * fg[a:b].view(-1, 3, 1, 1) + (1 - mask) * back
        img = F.avg_pool2d(img, oversample)
        img = img + 0.02 * torch.randn(img.shape, generator=g)
        out[a:b] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return out, label


# ------------------------------------------------------------------------------------------ loaders
def _stats(x):
    xf = x[: min(len(x), 10000)].float().div(255)
    return xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3))


def _nhwc(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def _require_root(cfg, what):
    root = Path(str(cfg.root)).expanduser()
    if not cfg.download and not root.exists():
        raise DataError(f"dataset root '{root}' for {what} does not exist; set data.root=PATH to where the "
                        f"data lives, or data.download=true")
    return root


def _torchvision(cfg):
    import torchvision.datasets as tvd

    root = _require_root(cfg, cfg.name)
    try:
        if cfg.name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if cfg.name == "cifar10" else tvd.CIFAR100
            tr, te = (cls(str(root), train=t, download=cfg.download) for t in (True, False))
            train_x, test_x = _nhwc(tr.data), _nhwc(te.data)
            train_y, test_y = torch.tensor(tr.targets), torch.tensor(te.targets)
            return train_x, train_x, train_y, test_x, test_y, tuple(tr.classes)
        splits = {s: tvd.STL10(str(root), split=s, download=cfg.download)
                  for s in set(cfg.ssl_split.split("+")) | {"train", "test"}}
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True"
        raise DataError(f"{cfg.name} not found under '{root}'; set data.root=PATH or data.download=true "
                        f"({e})") from None
    ssl = torch.cat([torch.from_numpy(splits[s].data) for s in cfg.ssl_split.split("+")])
    tr, te = splits["train"], splits["test"]
    return (ssl, torch.from_numpy(tr.data), torch.from_numpy(tr.labels).long(), torch.from_numpy(te.data),
            torch.from_numpy(te.labels).long(), tuple(tr.classes))


def _decode_jpegs(buf, offsets):
    from PIL import Image

    imgs = [np.asarray(Image.open(io.BytesIO(buf[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
            for i in range(len(offsets) - 1)]
    return np.stack(imgs)


def _npz(cfg):
    path = Path(str(cfg.path)).expanduser()
    if not path.exists():
        raise DataError(f"data.path '{path}' does not exist; point data.path at an npz of decoded arrays "
                        f"or at ../shared/data/cifar10-jpeg/cifar10_jpeg.npz")
    with np.load(path) as f:
        if "x_train" in f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        else:  # JPEG bytes: decode once, cache the arrays keyed by the file's content hash
            digest = hashlib.sha1(f["train_offsets"].tobytes() + f["test_offsets"].tobytes()).hexdigest()[:12]
            cache = Path(str(cfg.cache_dir)) / f"{path.stem}-{digest}-decoded.npz"
            if cache.exists():
                with np.load(cache) as c:
                    arrays = {k: c[k] for k in c.files}
            else:
                arrays = {"x_train": _decode_jpegs(f["train_jpeg"], f["train_offsets"]),
                          "x_test": _decode_jpegs(f["test_jpeg"], f["test_offsets"]),
                          "y_train": f["y_train"], "y_test": f["y_test"]}
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
                np.savez(tmp, **arrays)
                os.replace(tmp, cache)
        classes = tuple(str(c) for c in f["classes"]) if "classes" in f else ()
    train_x, test_x = _nhwc(arrays["x_train"]), _nhwc(arrays["x_test"])
    train_y, test_y = torch.from_numpy(arrays["y_train"]).long(), torch.from_numpy(arrays["y_test"]).long()
    return train_x, train_x, train_y, test_x, test_y, classes


def _folder(cfg):
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    root = Path(str(cfg.root)).expanduser()
    if not (root / cfg.train_dir).is_dir():
        raise DataError(f"no '{cfg.train_dir}' folder under data.root '{root}'; set data.root=PATH to an "
                        f"ImageFolder tree with {cfg.train_dir}/<class>/ and {cfg.test_dir}/<class>/")
    tf = T.Compose([T.Resize(cfg.image_size), T.CenterCrop(cfg.image_size), T.PILToTensor()])

    def load(split):
        ds = tvd.ImageFolder(str(root / split), transform=tf)
        xs, ys = zip(*[ds[i] for i in range(len(ds))])
        return torch.stack(xs), torch.tensor(ys), tuple(ds.classes)

    train_x, train_y, classes = load(cfg.train_dir)
    test_x, test_y, _ = load(cfg.test_dir)
    return train_x, train_x, train_y, test_x, test_y, classes


def load_data(cfg, eval_cfg, seed: int = 0) -> Data:
    """Load the dataset named by ``cfg.name`` on the CPU; the caller moves it to the device once."""
    if cfg.name not in DATASETS:
        raise DataError(f"unknown dataset '{cfg.name}'; choose data= one of: {', '.join(DATASETS)}")
    if cfg.name == "shapes":
        train_x, train_y = make_shapes(cfg.train_size, cfg.data_seed, cfg.image_size)
        test_x, test_y = make_shapes(cfg.test_size, cfg.data_seed + 1_000_003, cfg.image_size)
        ssl_x, classes = train_x, SHAPES
    elif cfg.name == "npz":
        ssl_x, train_x, train_y, test_x, test_y, classes = _npz(cfg)
    elif cfg.name == "folder":
        ssl_x, train_x, train_y, test_x, test_y, classes = _folder(cfg)
    else:
        ssl_x, train_x, train_y, test_x, test_y, classes = _torchvision(cfg)
    g = torch.Generator().manual_seed(seed)
    if eval_cfg.bank_size and eval_cfg.bank_size < len(train_x):
        idx = torch.randperm(len(train_x), generator=g)[: eval_cfg.bank_size]
        train_x, train_y = train_x[idx], train_y[idx]
    if eval_cfg.test_size and eval_cfg.test_size < len(test_x):
        idx = torch.randperm(len(test_x), generator=g)[: eval_cfg.test_size]
        test_x, test_y = test_x[idx], test_y[idx]
    if cfg.mean is None or cfg.std is None:
        mean, std = _stats(ssl_x)
    else:
        mean, std = torch.tensor(list(cfg.mean)), torch.tensor(list(cfg.std))
    num_classes = cfg.num_classes or int(max(train_y.max(), test_y.max())) + 1
    return Data(ssl_x, test_x, test_y.long(), train_x, train_y.long(), num_classes, mean, std, tuple(classes))
