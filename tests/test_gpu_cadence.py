"""The GPU-scale cadence of scale=cifar10_gpu: RankMe from the smaller Gram matrix, checkpoints every N epochs
written off the training thread, evaluation every N epochs in the training precision."""

import json
import math

import pytest
import torch
from conftest import TINY, make_cfg

from ablate.config import ConfigError, check_config
from ablate.diagnostics import rankme, singular_values
from ablate.errors import CheckpointError
from ablate.run import checkpoint as C
from ablate.run.loop import eval_precision, train


def _rankme_svd(z, eps=1e-7):
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def test_rankme_of_a_worked_matrix_in_both_orientations():
    z = torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])  # singular values 4 and 3
    p = torch.tensor([4 / 7, 3 / 7], dtype=torch.float64) + 1e-7
    want = math.exp(-float((p * p.log()).sum()))
    assert float(rankme(z)) == pytest.approx(want, rel=1e-6) == pytest.approx(float(rankme(z.T)), rel=1e-6)
    assert singular_values(z).tolist() == pytest.approx([4.0, 3.0])


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (64, 64)])
def test_rankme_from_the_gram_matrix_equals_the_svd(shape):
    g = torch.Generator().manual_seed(1)
    full = torch.randn(*shape, generator=g)
    low = torch.randn(shape[0], 5, generator=g) @ torch.randn(5, shape[1], generator=g)  # rank 5: null directions
    for z in (full, low, low * 1e-3):
        assert float(rankme(z)) == pytest.approx(_rankme_svd(z), rel=1e-5)
        s = singular_values(z)
        assert torch.allclose(s, torch.linalg.svdvals(z.double()), atol=1e-6 * float(s[0]))


def test_the_gpu_preset_states_its_cadence():
    cfg = make_cfg("+method=vicreg", "scale=cifar10_gpu")
    assert cfg.eval.every == 10 and cfg.eval.precision == "train"
    assert cfg.checkpoint.every == 10 and cfg.checkpoint.background is True


@pytest.mark.parametrize("bad", ["checkpoint.every=0", "checkpoint.background=maybe", "eval.precision=fp16",
                                 "train.compile=fast"])
def test_bad_cadence_options_are_refused(bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        check_config(make_cfg("+method=vicreg", *TINY, bad))


def test_eval_precision_follows_training_only_when_asked():
    cpu = torch.device("cpu")
    on = make_cfg("+method=vicreg", *TINY, "eval.precision=train", "train.precision=bf16")
    off = make_cfg("+method=vicreg", *TINY, "train.precision=bf16")
    fp32 = make_cfg("+method=vicreg", *TINY, "eval.precision=train", "train.precision=fp32")
    x = torch.randn(4, 4)
    with eval_precision(on, cpu):
        assert (x @ x).dtype == torch.bfloat16
    for cfg in (off, fp32):
        with eval_precision(cfg, cpu):
            assert (x @ x).dtype == torch.float32


def test_background_writer_copies_to_cpu_and_surfaces_a_failure(tmp_path, monkeypatch):
    w = C.CheckpointWriter(background=True)
    t = torch.ones(3)
    w.save(tmp_path, {"epoch": 1, "t": t})
    t.add_(1)  # training goes on: the written state is the copy taken at save
    w.join()
    assert C.read_checkpoint(tmp_path / C.CURRENT)["t"].tolist() == [1.0, 1.0, 1.0]

    def broken(*_):
        raise RuntimeError("serializer broke")

    monkeypatch.setattr(C, "save_checkpoint", broken)
    w.save(tmp_path, {"epoch": 2})
    with pytest.raises(CheckpointError, match="serializer broke"):
        w.join()
    w.join()  # reported once


def test_checkpoints_every_n_epochs_and_on_the_last(tmp_path, monkeypatch, one_thread):
    saved = []
    real = C.save_checkpoint
    monkeypatch.setattr(C, "save_checkpoint", lambda d, s, k="last": saved.append(s["epoch"]) or real(d, s, k))
    cfg = make_cfg("+method=simsiam", *TINY, "device=cpu", "train.epochs=5", "eval.every=2",
                   "checkpoint.every=2", "checkpoint.background=true", "checkpoint.keep=all")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "complete" and saved == [2, 4, 5]
    assert sorted(p.name for p in tmp_path.glob("checkpoint.epoch*.pt")) == [f"checkpoint.epoch{e}.pt" for e in (2, 4, 5)]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2, 4, 5]  # the verdict's epoch is evaluated whatever eval.every
