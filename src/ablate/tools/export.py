"""``python -m ablate.tools.export RUN_DIR --out backbone.pt [--projector]``: a run's backbone as a plain state_dict.

Reads the run's newest ``checkpoint.pt`` and writes the online backbone's weights (``online.backbone.*`` of
the checkpoint, prefix removed) so that ``load_state_dict(..., strict=True)`` takes them into a freshly
built backbone, with no ablate code needed for the torchvision ones:

- ``small_cnn``: ``ablate.models.SmallCNN(widths)`` (widths in the sidecar's ``backbone_config``);
- ``resnet18`` / ``resnet50``: ``torchvision.models.resnet18()`` (or ``resnet50()``) with
  ``model.fc = torch.nn.Identity()``: ablate drops the classifier, so the model returns pooled features;
- ``resnet18_cifar``: as ``resnet18``, plus ``model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)``
  and ``model.maxpool = torch.nn.Identity()`` (the CIFAR stem).

``ablate.models.build_backbone(OmegaConf.create(meta["backbone_config"]))`` builds any of them. With
``--projector`` the projector goes to a separate file ``<out stem>_projector.pt`` under a ``projector.``
prefix, so that backbone and projector together load strictly into ``ablate.models.Encoder`` (its
``backbone.`` keys are the backbone file's keys with that prefix). A sidecar ``<out stem>.json`` records the
backbone name, feature dimension, how to build it, the input size and normalization (the run's mean and std), the
ablate version and the run directory. The files are written together or not at all, never over a file a run
writes (``summary.json``, ``checkpoint.pt``, ...).
"""

import argparse
import io
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .. import __version__
from ..errors import AblateError
from ..files import atomic_write
from ..models import build_backbone, mlp, scaled
from ..run.finished import RunError, load_run
from ..run.rundir import is_run_file

BUILD = {
    "small_cnn": "ablate.models.SmallCNN(widths={widths})",
    "resnet18": "m = torchvision.models.resnet18(); m.fc = torch.nn.Identity()",
    "resnet50": "m = torchvision.models.resnet50(); m.fc = torch.nn.Identity()",
    "resnet18_cifar": ("m = torchvision.models.resnet18(); m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); "
                       "m.maxpool = torch.nn.Identity(); m.fc = torch.nn.Identity()"),
}


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def projector_spec(cfg, feature_dim: int) -> dict:
    """The arguments of ``ablate.models.mlp`` that rebuild the run's projector."""
    bn = cfg.get("batchnorm")
    return {"dims": [feature_dim] + [scaled(w, cfg.model.head_width_mult) for w in cfg.method.projector],
            "batchnorm": bn is not None, "output_bn": bool(bn is not None and bn.projector_output),
            "last_bias": bool(cfg.method.projector_last_bias)}


def normalization(cfg) -> dict:
    """The input normalization the run trained with: its data config's mean and std, or where those are null
    the per-channel statistics ``load_data`` computed from its training images (computed again here)."""
    if cfg.data.get("mean") is not None and cfg.data.get("std") is not None:
        return {"mean": [float(v) for v in cfg.data.mean], "std": [float(v) for v in cfg.data.std]}
    from ..data import load_data

    data = load_data(cfg.data, cfg.eval, cfg.seed)
    return {"mean": [round(float(v), 6) for v in data.mean], "std": [round(float(v), 6) for v in data.std]}


def targets(out: Path, projector: bool) -> list[Path]:
    """The files an export writes: the backbone, its sidecar, and the projector when asked for."""
    return [out, out.with_suffix(".json")] + ([out.with_name(f"{out.stem}_projector.pt")] if projector else [])


def check_out(out: Path, projector: bool) -> None:
    """RunError unless every file of the export may be written: none is a directory, nor takes the name of a
    file a run writes (``--out RUN/summary.pt`` would replace the run's summary.json with the sidecar)."""
    if out.suffix == ".json":
        raise RunError(f"--out {out} would be overwritten by its own .json sidecar; name it *.pt")
    for path in targets(out, projector):
        if path.is_dir():
            raise RunError(f"--out {out} would write {path}, which is a directory; give a file name like "
                           f"{path / 'backbone.pt'}")
        if is_run_file(path.name):
            raise RunError(f"--out {out} would write {path}, the name of a run's own file; choose another name "
                           f"(default RUN_DIR/backbone.pt)")


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def export(run_dir: Path, out: Path, projector: bool = False) -> dict:
    """Write the backbone (and optionally the projector) of ``run_dir`` to ``out``; returns the metadata.
    The weights are loaded strictly into freshly built modules and every file is serialized before anything
    is written, so a file that would not load is never produced, and the weights never go without their
    sidecar (written together, or none of them)."""
    check_out(out, projector)
    state, cfg = load_run(run_dir)
    backbone_state = _strip(state["model"], "online.backbone.")
    backbone = build_backbone(cfg.backbone)
    backbone.load_state_dict(backbone_state, strict=True)
    bcfg = OmegaConf.to_container(cfg.backbone, resolve=True)
    meta = {
        "backbone": cfg.backbone.name, "feature_dim": int(backbone.out_dim), "backbone_config": bcfg,
        "build": BUILD[cfg.backbone.name].format(widths=tuple(bcfg.get("widths", ()))),
        "input": {"image_size": cfg.data.image_size, "data": cfg.data.name, **normalization(cfg),
                  "normalize": "x / 255, then (x - mean) / std per channel (ablate.augment.eval_view)"},
        "method": cfg.method.name, "epoch": state["epoch"], "run_dir": str(Path(run_dir).resolve()),
        "ablate_version": __version__, "run_ablate_version": state.get("ablate_version"),
        "backbone_file": out.name,
    }
    files = {out: _bytes(backbone_state)}
    if projector:
        spec = projector_spec(cfg, meta["feature_dim"])
        proj_state = _strip(state["model"], "online.projector.")
        mlp(**spec).load_state_dict(proj_state, strict=True)
        proj_out = targets(out, True)[2]
        files[proj_out] = _bytes({f"projector.{k}": v for k, v in proj_state.items()})
        meta |= {"projector_file": proj_out.name, "projector": spec, "embedding_dim": spec["dims"][-1]}
    files[out.with_suffix(".json")] = (json.dumps(meta, indent=2) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for path, data in files.items():  # each replaced atomically: a link at the path is replaced, not followed
            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
            written.append(path)
    except OSError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.tools.export",
                                 description="Export a run's backbone as a plain state_dict.")
    ap.add_argument("run_dir", type=Path, help="run directory (holds checkpoint.pt)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default RUN_DIR/backbone.pt)")
    ap.add_argument("--projector", action="store_true", help="also write the projector to <out stem>_projector.pt")
    args = ap.parse_args(argv)
    out = args.out or args.run_dir / "backbone.pt"
    if out.suffix == ".json":
        print(f"ablate.tools.export: error: --out {out} would be overwritten by its own .json sidecar; name it *.pt",
              file=sys.stderr)
        return 2
    try:
        meta = export(args.run_dir, out, args.projector)
    except AblateError as e:
        print(f"ablate.tools.export: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"ablate.tools.export: error: cannot write {out} ({e.strerror or e}); choose a writable --out",
              file=sys.stderr)
        return 2
    files = targets(out, args.projector)
    print(f"wrote {', '.join(map(str, files))} ({meta['backbone']}, {meta['feature_dim']}-d features, "
          f"epoch {meta['epoch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
