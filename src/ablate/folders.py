"""Image-folder datasets (``data=folder``): one class vocabulary shared by the splits, decoding by DataLoader
workers, a decode cache, and a stream for datasets too large to hold."""

import hashlib
import logging
import os
from pathlib import Path

import torch

from .cache import load_cache, save_cache, spot_check
from .errors import DataError

log = logging.getLogger("ablate")


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
    run; instead each read decodes a few cached images again (``spot_check``)."""
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
