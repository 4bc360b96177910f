"""python -m ablate.tools.export: the exported backbone loads strictly into a freshly built one and computes the run's
features; a torchvision ResNet takes it with only its fc replaced; bad input fails in one line."""

import json

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from ablate.method import JointEmbedding
from ablate.models import Encoder, build_backbone, mlp
from ablate.run.checkpoint import save_checkpoint
from ablate.run.finished import load_model, load_run
from ablate.tools.export import main


def test_exported_backbone_and_projector_reproduce_the_runs_features(tiny_run, tmp_path, capsys):
    run = tiny_run("simsiam")
    out = tmp_path / "export" / "backbone.pt"
    assert main([str(run), "--out", str(out), "--projector"]) == 0
    assert "backbone.pt" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"] == "small_cnn" and meta["feature_dim"] == 16 and meta["epoch"] == 1
    assert meta["run_dir"] == str(run.resolve()) and meta["ablate_version"]
    assert meta["build"] == "ablate.models.SmallCNN(widths=(4, 8, 8, 16))"

    fresh = build_backbone(OmegaConf.create(meta["backbone_config"]))
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    model = load_model(*load_run(run))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        h_run, z_run = model.online.eval()(x)
        assert torch.equal(fresh.eval()(x), h_run)
        assert not torch.equal(build_backbone(OmegaConf.create(meta["backbone_config"])).eval()(x), h_run)

    proj = torch.load(tmp_path / "export" / "backbone_projector.pt", weights_only=True)
    assert proj and all(k.startswith("projector.") for k in proj)
    encoder = Encoder(build_backbone(OmegaConf.create(meta["backbone_config"])), mlp(**meta["projector"]))
    encoder.load_state_dict({**{f"backbone.{k}": v for k, v in torch.load(out, weights_only=True).items()}, **proj},
                            strict=True)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(x)[1], z_run)
    assert meta["embedding_dim"] == z_run.shape[1]


@pytest.mark.parametrize("name", ["resnet18", "resnet18_cifar"])
def test_torchvision_resnet_takes_the_export_with_fc_replaced(cfg_factory, tmp_path, name):
    cfg = cfg_factory("+method=byol", f"backbone={name}", "model.head_width_mult=0.01")
    model = JointEmbedding(cfg)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run, {"epoch": 3, "model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True)})
    assert main([str(run)]) == 0  # default --out RUN_DIR/backbone.pt
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    if name == "resnet18_cifar":
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
    net.load_state_dict(torch.load(run / "backbone.pt", weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model.online.backbone.eval()(x))
    assert json.loads((run / "backbone.json").read_text())["feature_dim"] == 512


def test_bad_run_dirs_fail_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ablate.tools.export: error:") and "not a directory" in err
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no checkpoint.pt" in err
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ablate.tools.export: error: no usable checkpoint") and not list(tmp_path.glob("*.json"))
