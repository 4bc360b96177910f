"""``python -m ablate.tools.geometry RUN_DIR [RUN_DIR ...]``: what a run's embeddings collapsed into.

The verdict says whether a run collapsed; this says into what, from the run's last checkpoint: how far the
embeddings sit from the origin against their spread, how close they lie to one ray, how much of their
variance one direction holds, and whether that spread is image content or augmentation noise (the two views
of each held-out image agree on it, or not; see ``diagnostics.view_agreement``). It tells apart a VICReg
line that both views of an image agree on from a SimSiam ray that the variance hinge stretched out of
augmentation noise, both RankMe 1. Prints a markdown table, one row per run, on the held-out images the
run's diagnostics used (eval view; two training-recipe views for the agreement, drawn with ``--seed``).
"""

import argparse
import functools
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..augment import eval_view, two_views
from ..config import check_device
from ..data import load_data
from ..diagnostics import class_share, cone, view_agreement
from ..errors import AblateError
from ..method import JointEmbedding
from ..models import embed
from ..run.checkpoint import load_checkpoint
from ..run.dist import pick_device
from ..run.finished import RunError, check_current

HEADER = ("| run | epoch | ‖mean‖ / spread | min cos to mean | top direction: variance share, abs cos to mean "
          "| views agree: all, top direction | class share |")


class GeometryError(AblateError):
    """A run directory this tool cannot read; the message says what to change."""


@functools.lru_cache(maxsize=2)
def _held_out(key: str, device: str):
    """The run's data, loaded once for every run of a sweep that shares it (``key``: its data and eval
    config and seed, which picks the held-out subset)."""
    c = OmegaConf.create(key)
    return load_data(c.data, c.eval, c.seed).to(device)


@torch.no_grad()
def run_geometry(run_dir: Path, seed: int = 0, device: str = "cpu") -> dict:
    """The embedding geometry of the model in ``run_dir``'s newest checkpoint, as a dict of floats."""
    state = load_checkpoint(run_dir)
    if state is None:
        raise GeometryError(f"{run_dir} holds no checkpoint.pt: pass a run directory that trained at least one "
                            f"epoch (summary.json's run_dir)")
    try:
        check_current(run_dir, state)
    except RunError as e:
        raise GeometryError(str(e)) from None
    cfg = OmegaConf.create(state["config"])
    if cfg.method.get("baseline"):
        raise GeometryError(f"{run_dir} is a baseline run ({cfg.method.baseline}): its projector is never trained, "
                            f"so its embeddings have no geometry to read; pass an SSL run directory")
    data = _held_out(OmegaConf.to_yaml({"data": cfg.data, "eval": cfg.eval, "seed": cfg.seed}), device)
    model = JointEmbedding(cfg)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    size, bs = cfg.data.image_size, cfg.eval.batch_size
    _, z = embed(model.online, data.test_x, lambda x: eval_view(x, size, data.mean, data.std), bs)
    out = {"epoch": state["epoch"]}
    if not torch.isfinite(z).all():
        return out | {"degenerate": "non-finite embeddings (diverged)"}
    if not (z != z[0]).any():
        return out | {"degenerate": "every embedding the same vector (no spread)"}
    torch.manual_seed(seed)
    x1, x2 = two_views(data.test_x, cfg.aug, size, data.mean, data.std)
    _, z1 = embed(model.online, x1, lambda x: x, bs)
    _, z2 = embed(model.online, x2, lambda x: x, bs)
    geo = cone(z)
    top, centre = geo.pop("top_dir").float(), z.mean(0)
    along = [((v - centre) @ top).unsqueeze(1) for v in (z1, z2)]
    return out | geo | {"view_agreement": float(view_agreement(z1, z2)),
                        "view_agreement_top": float(view_agreement(*along)),
                        "class_share": float(class_share(z, data.test_y))}


def row(name: str, g: dict) -> str:
    if "degenerate" in g:
        return f"| {name} | {g['epoch']} | {g['degenerate']} | | | | |"
    return (f"| {name} | {g['epoch']} | {g['mean_to_spread']:.2f} | {g['min_cos_to_mean']:.4f} | "
            f"{g['top_share']:.3f}, {g['top_cos_to_mean']:.2f} | {g['view_agreement']:.2f}, "
            f"{g['view_agreement_top']:.2f} | {g['class_share']:.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.tools.geometry", description=__doc__.split("\n\n")[1])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (each with checkpoint.pt)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the two augmented views (default 0)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    args = ap.parse_args(argv)
    try:
        check_device(args.device, "--device")
    except AblateError as e:
        print(f"ablate.tools.geometry: error: {e}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    missing = [str(r) for r in args.runs if not r.is_dir()]
    if missing:
        print(f"ablate.tools.geometry: error: not a directory: {', '.join(missing)}; pass run directories",
              file=sys.stderr)
        return 2
    print(HEADER)
    print("|" + "---|" * 7)
    for r in args.runs:
        try:
            print(row(str(r), run_geometry(r, args.seed, device)), flush=True)
        except AblateError as e:
            print(f"ablate.tools.geometry: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
