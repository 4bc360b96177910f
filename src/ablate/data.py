"""Datasets as uint8 tensors [N, 3, H, W] that live on the training device, plus the embedded `shapes`."""

import functools
import hashlib
import io
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import file_digest, load_cache, save_cache, spot_check
from .errors import DataError

log = logging.getLogger("ablate")

DATASETS = ("shapes", "cifar10", "cifar100", "stl10", "folder", "npz")
PALETTE = torch.tensor([[0.95, 0.85, 0.3], [0.4, 0.9, 0.95], [0.95, 0.5, 0.85]])
SHAPES = ("circle", "ring", "square", "frame", "triangle", "plus", "star", "crescent", "ell", "half_disc")


@dataclass(kw_only=True)
class Data:
    ssl_x: torch.Tensor            # uint8 [N, 3, H, W], pretraining images (or a FolderStream)
    bank_x: torch.Tensor           # uint8 labelled training images (kNN bank, linear probe)
    bank_y: torch.Tensor
    test_x: torch.Tensor           # uint8 held-out images (diagnostics)
    test_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    ssl_y: torch.Tensor | None = None   # labels of ssl_x (the supervised baseline); None where unknown

    def to(self, device):
        fields = {k: (v.to(device) if torch.is_tensor(v) or isinstance(v, FolderStream) else v)
                  for k, v in self.__dict__.items()}
        return Data(**fields)


# ----------------------------------------------------------------------------------------------- shapes
def _shape_mask(u, v, k: int):
    """Inside-mask of shape ``k`` of the ten in local coordinates (unit size, shape-centred)."""
    r = torch.sqrt(u * u + v * v)
    m_inf = torch.maximum(u.abs(), v.abs())
    return (
        lambda: r < 0.9,                                                      # circle
        lambda: (r < 0.95) & (r > 0.55),                                      # ring
        lambda: m_inf < 0.75,                                                 # square
        lambda: (m_inf < 0.85) & (m_inf > 0.45),                              # frame
        lambda: (v > -0.55) & (math.sqrt(3) * u.abs() + v < 0.95),            # triangle
        lambda: ((u.abs() < 0.28) & (v.abs() < 0.95)) | ((v.abs() < 0.28) & (u.abs() < 0.95)),  # plus
        lambda: r < 0.55 + 0.4 * torch.cos(5 * torch.atan2(v, u)),            # star
        lambda: (r < 0.95) & ((u - 0.45) ** 2 + v ** 2 > 0.7 ** 2),           # crescent
        lambda: ((u > -0.8) & (u < -0.3) & (v.abs() < 0.85)) | ((u > -0.8) & (u < 0.8) & (v > 0.35) & (v < 0.85)),
        lambda: (r < 0.95) & (v > -0.2),                                      # half disc
    )[k]()


def _shape_masks(u, v, label):
    """Inside-masks [N, H, W] of each image's own shape, computed class by class."""
    out = torch.empty(u.shape, dtype=torch.bool)
    for k in label.unique().tolist():
        idx = (label == k).nonzero().squeeze(1)
        out[idx] = _shape_mask(u[idx], v[idx], k)
    return out


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
    # A few foreground hues, grey backgrounds: a per-image colour that survives colour jitter would let two
    # views match by colour alone, and the encoder would never need the shape (docs/diagnostics.md).
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
@functools.lru_cache(maxsize=4)
def _shapes(n: int, seed: int, size: int):
    """``make_shapes`` once per process: a sweep's cells in one process (or one worker) share the images."""
    return make_shapes(n, seed, size)


def _stats(x):
    xf = x[: min(len(x), 10000)].float().div(255)
    return xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3))


def _nhwc(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def check_paths(cfg) -> None:
    """Raise DataError when a file or folder the data config names is missing: checked before any training
    (``config.check_config``) and again by ``load_data``."""
    root = Path(str(cfg.root)).expanduser() if cfg.name in ("cifar10", "cifar100", "stl10", "folder") else None
    if root is not None and not cfg.get("download", False):
        if not root.exists():
            raise DataError(f"dataset root '{root}' does not exist and data.download=false; set data.root=PATH "
                            f"to the data, or data.download=true")
    if cfg.name == "folder":
        for split in (cfg.train_dir, cfg.test_dir):
            if not (root / split).is_dir():
                raise DataError(f"no '{split}' folder under data.root '{root}'; set data.root=PATH to an "
                                f"ImageFolder tree with {cfg.train_dir}/<class>/ and {cfg.test_dir}/<class>/")
    if cfg.name == "npz" and cfg.path is None:
        raise DataError("data.path is not set; give data.path=FILE.npz (data=cifar10_jpeg also reads "
                        "$ABLATE_CIFAR10_NPZ)")
    if cfg.name == "npz" and not Path(str(cfg.path)).expanduser().exists():
        raise DataError(f"data.path '{cfg.path}' does not exist; point data.path at an npz of decoded arrays "
                        f"(x_train, y_train, x_test, y_test) or of JPEG bytes (train_jpeg, train_offsets, ...)")


def _torchvision(cfg) -> dict:
    import torchvision.datasets as tvd

    root = str(Path(str(cfg.root)).expanduser())
    try:
        if cfg.name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if cfg.name == "cifar10" else tvd.CIFAR100
            tr, te = (cls(root, train=t, download=cfg.download) for t in (True, False))
            train_x = _nhwc(tr.data)
            return dict(ssl_x=train_x, bank_x=train_x, bank_y=torch.tensor(tr.targets),
                        test_x=_nhwc(te.data), test_y=torch.tensor(te.targets))
        splits = {s: tvd.STL10(root, split=s, download=cfg.download)
                  for s in set(cfg.ssl_split.split("+")) | {"train", "test"}}
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True"
        raise DataError(f"{cfg.name} not found under '{root}'; set data.root=PATH or data.download=true "
                        f"({e})") from None
    tr, te = splits["train"], splits["test"]
    ssl_y = torch.from_numpy(tr.labels).long() if cfg.ssl_split == "train" else None  # unlabeled: no labels
    return dict(ssl_x=torch.cat([torch.from_numpy(splits[s].data) for s in cfg.ssl_split.split("+")]), ssl_y=ssl_y,
                bank_x=torch.from_numpy(tr.data), bank_y=torch.from_numpy(tr.labels).long(),
                test_x=torch.from_numpy(te.data), test_y=torch.from_numpy(te.labels).long())


def _decode_jpegs(buf, offsets):
    from PIL import Image

    imgs = [np.asarray(Image.open(io.BytesIO(buf[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
            for i in range(len(offsets) - 1)]
    return np.stack(imgs)


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_JPEG = ("train_jpeg", "train_offsets", "test_jpeg", "test_offsets", "y_train", "y_test")


def _check_npz(arrays: dict, path: Path) -> None:
    """Images uint8 [N, H, W, 3], labels integer [N]: anything else would train on wrong pixels or crash late."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or x.shape[-1] != 3:
            hint = " (NCHW: store them as N, H, W, 3)" if x.ndim == 4 and x.shape[1] == 3 else ""
            raise DataError(f"{path}: x_{split} has shape {x.shape}; expected uint8 images [N, H, W, 3]{hint}")
        if min(x.shape[:3]) < 1:
            raise DataError(f"{path}: x_{split} has shape {x.shape}; every split needs at least one image of at "
                            f"least 1x1 pixels")
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{split} is {x.dtype}; expected uint8 pixels 0..255 (convert with "
                            f"(x * 255).round().astype(np.uint8) if they are floats in [0, 1])")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise DataError(f"{path}: y_{split} is {y.dtype} {y.shape}; expected {len(x)} integer labels")


def _npz_cache(cfg, f, path: Path) -> dict:
    """JPEG bytes: decode once, cache the images keyed by the SHA-256 of the file's content; the labels are
    always the file's own."""
    digest = file_digest(path)
    cache = Path(str(cfg.cache_dir)).expanduser() / f"{path.stem}-{digest[:32]}-decoded.npz"

    def load(buf):
        with np.load(buf) as c:
            return {k: c[k] for k in c.files}

    arrays = load_cache(cache, load)
    for split in ("train", "test"):
        if arrays is None:
            break
        buf, off = f[f"{split}_jpeg"], f[f"{split}_offsets"]
        if str(arrays.get("source_sha256")) != digest or not spot_check(
                arrays[f"x_{split}"], lambda i, b=buf, o=off: _decode_jpegs(b, o[i:i + 2])[0], len(off) - 1, path):
            arrays = None
    if arrays is None:
        try:
            arrays = {"x_train": _decode_jpegs(f["train_jpeg"], f["train_offsets"]),
                      "x_test": _decode_jpegs(f["test_jpeg"], f["test_offsets"]), "source_sha256": digest}
        except (OSError, ValueError, IndexError) as e:
            raise DataError(f"{path}: cannot decode its JPEG bytes ({e})") from None
        save_cache(cache, lambda buf: np.savez(buf, **arrays))
    return {"x_train": arrays["x_train"], "x_test": arrays["x_test"], "y_train": f["y_train"], "y_test": f["y_test"]}


def _npz(cfg) -> dict:
    path = Path(str(cfg.path)).expanduser()
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e})") from None
    if magic != b"PK\x03\x04":  # np.load would call a text file "pickled data"
        raise DataError(f"{path} is not an npz file (a zip of .npy arrays, as np.savez writes); give data.path "
                        f"an npz of x_train, y_train, x_test, y_test")
    try:
        with np.load(path) as f:
            keys = set(f.files)
            if set(NPZ_ARRAYS) <= keys:
                arrays = {k: f[k] for k in NPZ_ARRAYS}
            elif set(NPZ_JPEG) <= keys:
                arrays = _npz_cache(cfg, f, path)
            else:
                raise DataError(f"{path} holds {', '.join(sorted(keys)) or 'no arrays'}; expected "
                                f"{', '.join(NPZ_ARRAYS)} (or JPEG bytes: {', '.join(NPZ_JPEG)})")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:  # truncated, pickled objects
        raise DataError(f"{path} is not a readable npz ({' '.join(str(e).split())}); write it again with "
                        f"np.savez") from None
    _check_npz(arrays, path)
    train_x = _nhwc(arrays["x_train"])
    return dict(ssl_x=train_x, bank_x=train_x, bank_y=torch.from_numpy(arrays["y_train"]).long(),
                test_x=_nhwc(arrays["x_test"]), test_y=torch.from_numpy(arrays["y_test"]).long())


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def folder_classes(cfg) -> list[str]:
    """The class vocabulary of a folder dataset: the training split's class folders, numbered in sorted order
    for every split, so a class means one label everywhere. DataError when the test split holds a class that
    training lacks (its images could never be classified right)."""
    root = Path(str(cfg.root)).expanduser()
    classes = _class_folders(root / cfg.train_dir)
    extra = sorted(set(_class_folders(root / cfg.test_dir)) - set(classes))
    if extra:
        raise DataError(f"the {cfg.test_dir} split of {root} holds class folder(s) {', '.join(extra[:5])} that "
                        f"{cfg.train_dir} lacks; every test class needs training images (remove them or add "
                        f"{cfg.train_dir}/<class>/ folders)")
    return classes


def _folder_dataset(cfg, split, classes: list[str] | None = None):
    """An ImageFolder of one split whose labels follow ``classes`` (default: the split's own folders). A class
    folder without images is allowed in a split other than training (the test split may lack a class)."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    class Vocabulary(tvd.ImageFolder):
        def find_classes(self, directory):
            names = _class_folders(Path(directory)) if classes is None else classes
            return names, {c: i for i, c in enumerate(names)}

    tf = T.Compose([T.Resize(cfg.image_size), T.CenterCrop(cfg.image_size), T.PILToTensor()])
    root = Path(str(cfg.root)).expanduser() / split
    try:
        return Vocabulary(str(root), transform=tf, allow_empty=split != cfg.get("train_dir", split))
    except FileNotFoundError as e:  # a training class folder without images
        raise DataError(f"{root}: {' '.join(str(e).split())}; every training class needs images (remove the "
                        f"empty class folder)") from None


class _Checked(torch.utils.data.Dataset):
    """An ImageFolder whose unreadable files come back as a blank image and the error, not as an exception
    inside a worker process."""

    def __init__(self, ds, size: int):
        self.ds, self.size = ds, size

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        try:
            x, y = self.ds[i]
            return x, y, "", i
        except Exception as e:  # PIL raises several types on empty or corrupt files
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), -1, f"{type(e).__name__}: {e}", i


def _unreadable(ds, index: int, error: str, count: int) -> DataError:
    return DataError(f"cannot read image {ds.samples[index][0]} ({' '.join(error.split())}; {count} unreadable "
                     f"file(s) in all): fix or remove it, or set data.skip_bad=true to skip such files")


def _decode(ds, indices, workers: int, skip_bad: bool, size: int):
    """Decode ``indices`` of an ImageFolder into uint8 [N, 3, S, S] with DataLoader workers. An unreadable
    file is a DataError naming it, or with ``skip_bad`` is left out (counted in a warning)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(_Checked(ds, size), indices), batch_size=256,
                                         num_workers=workers)
    xs, ys, errors = [torch.empty(0, 3, size, size, dtype=torch.uint8)], [torch.empty(0, dtype=torch.long)], []
    for x, y, err, _ in loader:
        xs.append(x)
        ys.append(y)
        errors.extend(err)
    x, y = torch.cat(xs), torch.cat(ys)
    bad = [j for j, e in enumerate(errors) if e]
    if bad:
        if not skip_bad:
            raise _unreadable(ds, indices[bad[0]], errors[bad[0]], len(bad))
        log.warning("skipped %d unreadable image file(s) (data.skip_bad=true), the first %s", len(bad),
                    ds.samples[indices[bad[0]]][0])
        keep = torch.tensor([not e for e in errors])
        x, y = x[keep], y[keep]
    return x, y


def _folder_cache_path(cfg, ds, split, n):
    """Cache key: the class vocabulary, the file list with each file's label, size and mtime, the image size,
    how many images are kept and skip_bad. Hashing every image's bytes would cost a read of the whole tree per
    run; instead each read decodes a few cached images again (``cache.spot_check``)."""
    h = hashlib.sha256(f"{cfg.image_size}:{n}:{bool(cfg.get('skip_bad'))}:{ds.classes}".encode())
    for path, label in ds.samples:
        st = os.stat(path)
        h.update(f"{path}:{label}:{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(str(cfg.cache_dir)).expanduser() / f"folder-{split}-{h.hexdigest()[:16]}.pt"


def _folder_split(cfg, split, classes, keep=None, seed=0):
    """Decoded uint8 images of one split (all, or ``keep`` random ones) labelled by ``classes``, cached with a
    checksum that every read verifies, so a second run does not decode again."""
    ds = _folder_dataset(cfg, split, classes)
    n = len(ds) if keep is None else min(keep, len(ds))
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    cache = _folder_cache_path(cfg, ds, split, n) if cfg.get("cache_dir") else None
    cached = load_cache(cache, lambda buf: torch.load(buf, weights_only=True)) if cache is not None else None
    if cached is not None and _folder_cache_ok(cached, ds, idx, cfg):
        return cached["x"], cached["y"], ds
    x, y = _decode(ds, idx, cfg.get("workers", 0), bool(cfg.get("skip_bad")), cfg.image_size)
    if cache is not None:
        save_cache(cache, lambda buf: torch.save({"x": x, "y": y}, buf))
    return x, y, ds


def _folder_cache_ok(cached: dict, ds, idx: list[int], cfg) -> bool:
    """A cache entry of a folder split: its labels are the file list's, and a few images decode the same."""
    if cfg.get("skip_bad"):  # images were left out: positions no longer match the file list
        return len(cached["y"]) <= len(idx)
    y = torch.tensor([ds.targets[i] for i in idx], dtype=cached["y"].dtype)
    if not torch.equal(cached["y"], y):
        log.warning("cache entry of %s holds other labels than its files; decoding again", ds.root)
        return False
    return spot_check(cached["x"], lambda i: ds[idx[i]][0], len(idx), ds.root)


class FolderStream:
    """Training images of a folder too large to hold: each epoch a DataLoader decodes shuffled uint8 batches
    in worker processes; they are copied to the device and augmented there like resident data."""

    def __init__(self, ds, workers: int, size: int, skip_bad: bool = False, device="cpu"):
        self.ds, self.workers, self.size, self.skip_bad = ds, workers, size, skip_bad
        self.device = torch.device(device)

    def __len__(self):
        return len(self.ds)

    def to(self, device):
        return FolderStream(self.ds, self.workers, self.size, self.skip_bad, device)

    def epoch_batches(self, seed: int, batch_size: int, lo: int, local_batch: int, steps: int):
        """Full batches of uint8 images. An unreadable file is a DataError naming it; with ``data.skip_bad``
        it is replaced by a readable image of the same batch (a batch keeps its size, as the step and every
        process of a torchrun job expect) and counted in a warning at the end of the epoch."""
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(_Checked(self.ds, self.size), batch_size=batch_size, shuffle=True,
                                             drop_last=True, generator=gen, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda", persistent_workers=False)
        skipped = []
        for _, (x, _y, err, idx) in zip(range(steps), loader):
            bad = [k for k, e in enumerate(err) if e]
            if bad:
                if not self.skip_bad or len(bad) == len(err):
                    raise _unreadable(self.ds, int(idx[bad[0]]), err[bad[0]], len(bad))
                x[bad] = x[next(k for k, e in enumerate(err) if not e)].clone()
                skipped += [self.ds.samples[int(idx[k])][0] for k in bad]
            yield x[lo:lo + local_batch].to(self.device, non_blocking=True)
        if skipped:
            log.warning("replaced %d unreadable image file(s) in this epoch's batches (data.skip_bad=true), the "
                        "first %s", len(skipped), skipped[0])


def _folder(cfg, eval_cfg, seed) -> dict:
    classes = folder_classes(cfg)
    test_x, test_y, _ = _folder_split(cfg, cfg.test_dir, classes, eval_cfg.test_size, seed)
    if cfg.get("stream"):  # only the kNN / probe bank is decoded; training batches stream
        bank_x, bank_y, ds = _folder_split(cfg, cfg.train_dir, classes, eval_cfg.bank_size, seed)
        return dict(ssl_x=FolderStream(ds, cfg.get("workers", 0), cfg.image_size, bool(cfg.get("skip_bad"))),
                    bank_x=bank_x, bank_y=bank_y, test_x=test_x, test_y=test_y,
                    train_labels=torch.tensor(ds.targets))
    train_x, train_y, _ = _folder_split(cfg, cfg.train_dir, classes, None, seed)
    return dict(ssl_x=train_x, bank_x=train_x, bank_y=train_y, test_x=test_x, test_y=test_y)


def _subset(x, y, n, g):
    """``n`` random images of ``x`` (all of them when ``n`` is 0 or null or not smaller)."""
    if n and n < len(x):
        idx = torch.randperm(len(x), generator=g)[:n]
        return x[idx], y[idx]
    return x, y


def _check_labels(cfg, train_labels, *labels) -> int:
    """The number of classes; DataError for labels outside [0, num_classes), test labels that no training image
    has (they could never be predicted: accuracy would read low for no fault of the model) or a single class
    (kNN and linear accuracy would read 100%)."""
    if any(len(y) == 0 for y in labels):
        raise DataError(f"the {cfg.name} data has an empty split; every split needs labelled images")
    lo, hi = min(int(y.min()) for y in labels), max(int(y.max()) for y in labels)
    num_classes = cfg.num_classes or hi + 1
    if lo < 0 or hi >= num_classes:
        raise DataError(f"labels of the {cfg.name} data span [{lo}, {hi}], outside [0, {num_classes}); fix the "
                        f"labels or set data.num_classes")
    unseen = sorted(set(labels[-1].unique().tolist()) - set(train_labels.unique().tolist()))
    if unseen:
        raise DataError(f"the {cfg.name} test labels {', '.join(map(str, unseen[:5]))} never occur in training; "
                        f"number the classes of both splits alike, and give every test class training images")
    if len(torch.unique(torch.cat([y.flatten() for y in labels]))) < 2:
        raise DataError(f"the {cfg.name} data has a single class; kNN and linear accuracy need at least two")
    return num_classes


def load_data(cfg, eval_cfg, seed: int = 0) -> Data:
    """Load the dataset named by ``cfg.name`` on the CPU; the caller moves it to the device once."""
    if cfg.name not in DATASETS:
        raise DataError(f"unknown dataset '{cfg.name}'; choose data= one of: {', '.join(DATASETS)}")
    check_paths(cfg)
    if cfg.name == "shapes":
        train_x, train_y = (t.clone() for t in _shapes(cfg.train_size, cfg.data_seed, cfg.image_size))
        test_x, test_y = (t.clone() for t in _shapes(cfg.test_size, cfg.data_seed + 1_000_003, cfg.image_size))
        d = dict(ssl_x=train_x, bank_x=train_x, bank_y=train_y, test_x=test_x, test_y=test_y)
    elif cfg.name == "npz":
        d = _npz(cfg)
    elif cfg.name == "folder":
        d = _folder(cfg, eval_cfg, seed)
    else:
        d = _torchvision(cfg)
    g = torch.Generator().manual_seed(seed)
    bank_x, bank_y = _subset(d["bank_x"], d["bank_y"], eval_cfg.bank_size, g)
    test_x, test_y = _subset(d["test_x"], d["test_y"], eval_cfg.test_size, g)
    ssl_x = d["ssl_x"]
    ssl_y = d["bank_y"] if ssl_x is d["bank_x"] else d.get("ssl_y")  # the labelled train split, before subsetting
    if cfg.mean is None or cfg.std is None:
        mean, std = _stats(ssl_x if torch.is_tensor(ssl_x) else bank_x)
    else:
        mean, std = torch.tensor(list(cfg.mean)), torch.tensor(list(cfg.std))
    num_classes = _check_labels(cfg, d.get("train_labels", d["bank_y"]), bank_y, test_y)
    return Data(ssl_x=ssl_x, bank_x=bank_x, bank_y=bank_y.long(), test_x=test_x, test_y=test_y.long(),
                num_classes=num_classes, mean=mean, std=std, ssl_y=None if ssl_y is None else ssl_y.long())
