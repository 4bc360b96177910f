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
backbone name, feature dimension, how to build it, the input size and normalization, the ablate version and
the run directory.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .. import __version__
from ..models import build_backbone, mlp, scaled
from ..run.finished import RunError, load_run

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


def export(run_dir: Path, out: Path, projector: bool = False) -> dict:
    """Write the backbone (and optionally the projector) of ``run_dir`` to ``out``; returns the metadata.
    The weights are loaded strictly into freshly built modules before anything is written, so a file that
    would not load is never produced."""
    state, cfg = load_run(run_dir)
    backbone_state = _strip(state["model"], "online.backbone.")
    backbone = build_backbone(cfg.backbone)
    backbone.load_state_dict(backbone_state, strict=True)
    bcfg = OmegaConf.to_container(cfg.backbone, resolve=True)
    meta = {
        "backbone": cfg.backbone.name, "feature_dim": int(backbone.out_dim), "backbone_config": bcfg,
        "build": BUILD[cfg.backbone.name].format(widths=tuple(bcfg.get("widths", ()))),
        "input": {"image_size": cfg.data.image_size, "data": cfg.data.name,
                  "mean": cfg.data.get("mean"), "std": cfg.data.get("std"),
                  "normalize": "x / 255, then (x - mean) / std per channel; mean/std null = the per-channel "
                               "statistics of the run's training images (ablate.data.load_data)"},
        "method": cfg.method.name, "epoch": state["epoch"], "run_dir": str(Path(run_dir).resolve()),
        "ablate_version": __version__, "run_ablate_version": state.get("ablate_version"),
        "backbone_file": out.name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone_state, out)
    if projector:
        spec = projector_spec(cfg, meta["feature_dim"])
        proj_state = _strip(state["model"], "online.projector.")
        mlp(**spec).load_state_dict(proj_state, strict=True)
        proj_out = out.with_name(f"{out.stem}_projector.pt")
        torch.save({f"projector.{k}": v for k, v in proj_state.items()}, proj_out)
        meta |= {"projector_file": proj_out.name, "projector": spec, "embedding_dim": spec["dims"][-1]}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
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
    except RunError as e:
        print(f"ablate.tools.export: error: {e}", file=sys.stderr)
        return 2
    files = [out, out.with_suffix(".json")] + ([out.with_name(meta["projector_file"])] if args.projector else [])
    print(f"wrote {', '.join(map(str, files))} ({meta['backbone']}, {meta['feature_dim']}-d features, "
          f"epoch {meta['epoch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
