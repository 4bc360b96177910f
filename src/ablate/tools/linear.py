"""``python -m ablate.tools.linear RUN_DIR``: the standard offline linear evaluation of a run's frozen backbone.

A linear classifier on the frozen backbone (eval mode: batch norm uses its running statistics), trained on
random-resized-crop + horizontal-flip views of every labelled training image (drawn batch by batch on the
device with ``ablate.augment``'s ops), SGD with momentum and a per-step cosine lr (default) or LARS, then
scored top-1 on every held-out image in the eval view (``ablate.augment.eval_view``). Unlike the runner's
final probe (fixed eval-view features of ``eval.bank_size`` images), this is the protocol papers report.
The data is the run's own (``ablate.data.load_data`` with the run's saved config), with ``eval.bank_size`` and
``eval.test_size`` lifted so both splits are complete. Writes ``linear_eval.json`` into the run directory
(or ``--out``): top-1 and every setting of the protocol.
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from .. import __version__
from ..augment import crop_boxes, eval_view, normalize_float, resized_crop_flip
from ..config import check_device
from ..data import DataError, load_data
from ..errors import AblateError
from ..models import embed
from ..optim import build_optimizer, lr_at, param_groups, set_lr
from ..run.finished import RunError, load_model, load_run
from ..run.rundir import is_run_file

CROP_RATIO = (3 / 4, 4 / 3)


def train_view(images, size, mean, std, crop_min):
    """RandomResizedCrop(size, scale=(crop_min, 1), ratio=(3/4, 4/3)) and a horizontal flip with p=0.5 per
    image of a uint8 batch, then normalized."""
    n, _, height, width = images.shape
    boxes = crop_boxes(n, height, width, (crop_min, 1.0), CROP_RATIO, images.device)
    flip = torch.rand(n, device=images.device) < 0.5
    return normalize_float(resized_crop_flip(images.float().div_(255), boxes, flip, size), mean, std)


def linear_eval(run_dir: Path, epochs: int = 100, batch_size: int = 256, lr: float = 0.1, optimizer: str = "sgd",
                weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02, crop_min: float = 0.08,
                seed: int | None = None, device: str = "cpu", progress: bool | None = None, feature_bn: bool = True) -> dict:
    """Train and score the linear head on ``run_dir``'s newest checkpoint; returns the result dict: the data, the
    head (``make_head``), its training (``train_head``), the score, and the protocol in words (``protocol``)."""
    t0 = time.time()
    state, cfg = load_run(run_dir)
    seed = cfg.seed if seed is None else seed
    full = OmegaConf.merge(cfg.eval, {"bank_size": None, "test_size": None})
    data = load_data(cfg.data, full, cfg.seed)
    dev = torch.device(device)
    train = data.bank_x.to(dev), data.bank_y.to(dev)
    test_x, test_y = data.test_x.to(dev), data.test_y.to(dev)
    mean, std, size = data.mean.to(dev), data.std.to(dev), cfg.data.image_size
    online = load_model(state, cfg).online.to(dev).eval().requires_grad_(False)
    torch.manual_seed(seed)
    head = make_head(online.backbone.out_dim, data.num_classes, feature_bn).to(dev)
    ocfg = OmegaConf.create({"name": optimizer, "weight_decay": weight_decay, "momentum": momentum, "eta": eta,
                             "exclude_bias_norm": True, "predictor_fixed_lr": False})
    opt = build_optimizer(param_groups({"head": head}, ocfg), ocfg, lr)
    view = lambda x: train_view(x, size, mean, std, crop_min)  # noqa: E731
    train_top1, losses = train_head(head, online.backbone, opt, train, view, epochs, batch_size, lr, progress)
    head.eval()
    h_test, _ = embed(online, test_x, lambda x: eval_view(x, size, mean, std), cfg.eval.batch_size, project=False)
    with torch.no_grad():
        top1 = 100 * float((head(h_test).argmax(1) == test_y).float().mean())
    settings = dict(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                    epochs=epochs, batch_size=batch_size, crop_min=crop_min, feature_bn=feature_bn, seed=seed)
    return {"top1": top1, "units": "top-1 in percent", "chance_top1": 100 / data.num_classes,
            "train_top1_last_epoch": train_top1, "train_loss": losses, "run_dir": str(Path(run_dir).resolve()),
            "checkpoint_epoch": state["epoch"], "method": cfg.method.name, "ablate_version": __version__,
            "wall_s": round(time.time() - t0, 2),
            "protocol": protocol(cfg, online.backbone.out_dim, data.num_classes, len(train[0]), len(test_x), mean, std,
                                 dev, settings)}


def make_head(d: int, classes: int, feature_bn: bool) -> torch.nn.Module:
    """The linear classifier on d features. MAE / MoCo v3's probe: a BatchNorm without affine parameters
    standardizes the features (batch statistics in training, running ones at test), so one lr suits backbones
    whose features differ in scale by orders."""
    return torch.nn.Sequential(*([torch.nn.BatchNorm1d(d, affine=False)] if feature_bn else []),
                               torch.nn.Linear(d, classes))


def train_head(head, backbone, opt, train, view, epochs: int, batch_size: int, lr: float,
               progress: bool | None) -> tuple[float, list[float]]:
    """``epochs`` passes over the (images, labels) ``train`` in a fresh order, each batch in a fresh ``view``
    through the frozen backbone, per-step cosine lr from ``lr`` to 0; returns the last epoch's training top-1
    and every epoch's mean loss."""
    train_x, train_y = train
    dev = train_x.device
    steps = math.ceil(len(train_x) / batch_size)
    total, step, losses = epochs * steps, 0, []
    bar = tqdm(range(epochs), desc="linear eval", unit="epoch", disable=None if progress is None else not progress,
               file=sys.stderr)
    for _ in bar:
        order = torch.randperm(len(train_x), device=dev)
        loss_sum, correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            with torch.no_grad():
                h = backbone(view(train_x[idx])).float()
            logits = head(h)
            loss = F.cross_entropy(logits, train_y[idx])
            set_lr(opt, lr_at(step, total, 0, lr, 0.0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == train_y[idx]).sum()
        losses.append(float(loss_sum) / len(train_x))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return 100 * float(correct) / len(train_x), losses


def protocol(cfg, d: int, classes: int, n_train: int, n_test: int, mean, std, dev, s: dict) -> dict:
    """linear_eval.json's ``protocol``: every setting of the evaluation, in words where a number is not enough
    (``s``: the optimizer, schedule, augmentation and head settings linear_eval ran with)."""
    size, lars = cfg.data.image_size, s["optimizer"] == "lars"
    steps = math.ceil(n_train / s["batch_size"])
    return {
        "backbone": cfg.backbone.name, "feature_dim": d,
        "frozen": "backbone in eval mode (batch norm uses its running statistics), no gradient",
        "head": (f"nn.BatchNorm1d({d}, affine=False) then " if s["feature_bn"] else "") + f"nn.Linear({d}, {classes})"
                + (" (the features standardized by batch statistics, running ones at test; MAE / MoCo v3)"
                   if s["feature_bn"] else " on raw features"), "optimizer": s["optimizer"], "lr": s["lr"],
        "lr_schedule": "per-step cosine from lr to 0 over all steps, no warmup; lr as given (not scaled by the "
                       "batch size)",
        "momentum": s["momentum"], "weight_decay": s["weight_decay"],
        "weight_decay_on": "weights only (the bias gets no weight decay" + (", nor LARS adaptation)" if lars else ")"),
        **({"lars_eta": s["eta"]} if lars else {}),
        "epochs": s["epochs"], "batch_size": s["batch_size"], "steps_per_epoch": steps, "steps": s["epochs"] * steps,
        "train_augmentation": f"RandomResizedCrop({size}, scale=({s['crop_min']}, 1.0), ratio=(3/4, 4/3)) and "
                              f"horizontal flip p=0.5, per image, batched on the device (ablate.augment), then "
                              f"normalized; a fresh view every epoch",
        "test_view": f"ablate.augment.eval_view: resized to {size} px when needed, normalized",
        "normalize_mean": [round(float(v), 6) for v in mean], "normalize_std": [round(float(v), 6) for v in std],
        "data": cfg.data.name, "image_size": size, "num_classes": classes,
        "train_split": f"all {n_train} labelled training images", "test_split": f"all {n_test} held-out images",
        "train_images": n_train, "test_images": n_test, "seed": s["seed"], "device": str(dev),
    }


def check_writable(out: Path) -> None:
    """AblateError unless ``out`` can be written as the result file: not a directory, not the name of another
    file a run writes, in a directory this process can create and write."""
    if out.is_dir():
        raise AblateError(f"--out {out} is a directory; give a file name like {out / 'linear_eval.json'}")
    if out.name != "linear_eval.json" and is_run_file(out.name):
        raise AblateError(f"--out {out} is the name of a run's own file; choose another name")
    parent = out.parent.absolute()
    while not parent.exists():  # created only once there is a result to write
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise AblateError(f"cannot write {out}: {parent} is {'not a directory' if not parent.is_dir() else 'read-only'}"
                          f"; choose a writable --out")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.tools.linear", description="Offline linear evaluation of a "
                                 "run's frozen backbone; writes linear_eval.json.")
    ap.add_argument("run_dir", type=Path, help="run directory (holds checkpoint.pt)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1, help="peak lr, cosine to 0 (default 0.1)")
    ap.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--eta", type=float, default=0.02, help="LARS trust coefficient")
    ap.add_argument("--crop-min", type=float, default=0.08, help="smallest crop area fraction (default 0.08)")
    ap.add_argument("--no-feature-bn", action="store_true", help="plain linear head on raw features (default: "
                    "a non-affine BatchNorm1d before it, as MAE / MoCo v3)")
    ap.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--out", type=Path, default=None, help="default RUN_DIR/linear_eval.json")
    args = ap.parse_args(argv)

    def fail(msg):
        print(f"ablate.tools.linear: error: {msg}", file=sys.stderr)
        return 2

    if args.epochs < 1 or args.batch_size < 1:
        return fail(f"--epochs {args.epochs} and --batch-size {args.batch_size} must be >= 1")
    for name in ("lr", "eta"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            return fail(f"--{name} {getattr(args, name)} must be a finite number > 0")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0 and 0 <= args.momentum < 1):
        return fail(f"--weight-decay {args.weight_decay} must be >= 0 and --momentum {args.momentum} in [0, 1)")
    if not 0 < args.crop_min <= 1:
        return fail(f"--crop-min {args.crop_min} must be in (0, 1]")
    out = args.out or args.run_dir / "linear_eval.json"
    try:  # both refused before the training, not after it
        check_device(args.device, "--device")
        check_writable(out)
    except AblateError as e:
        return fail(str(e))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        res = linear_eval(args.run_dir, args.epochs, args.batch_size, args.lr, args.optimizer, args.weight_decay,
                          args.momentum, args.eta, args.crop_min, args.seed, device,
                          feature_bn=not args.no_feature_bn)
    except (RunError, DataError) as e:
        return fail(str(e))
    from ..run.summary import write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    print(f"linear top-1 {res['top1']:.2f}% (chance {res['chance_top1']:.1f}%) on {res['protocol']['test_images']} "
          f"images, {args.epochs} epochs, {res['wall_s']:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
