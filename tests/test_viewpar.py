"""train.view_parallel: the step with each view on a worker of its own computes the sequential step (gradients,
batch norm statistics, loss) up to float rounding, repeats to the bit, and refuses to run where it cannot."""

import pytest
import torch
from conftest import TINY

from ablate.bench import torch_threads
from ablate.config import ConfigError, check_config
from ablate.data import load_data
from ablate.run import viewpar
from ablate.run.step import build_runner, lookahead

CPU = torch.device("cpu")


def test_merge_bn_gives_the_running_statistics_of_two_forwards_in_turn():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(3, momentum=0.25)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.0]))
    r_mean, r_var = bn.running_mean.clone(), bn.running_var.clone()
    x1, x2 = torch.randn(8, 3) * 2 + 1, torch.randn(8, 3) - 3
    workers = viewpar.ViewWorkers(bn, 1)
    bn(x1)
    workers.replica(x2)
    workers.merge_bn()
    # nn.BatchNorm's rule r <- (1 - m) r + m s, with the batch mean and unbiased variance, once per view
    m = 0.25
    mean = (1 - m) * ((1 - m) * r_mean + m * x1.mean(0)) + m * x2.mean(0)
    var = (1 - m) * ((1 - m) * r_var + m * x1.var(0, unbiased=True)) + m * x2.var(0, unbiased=True)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2
    assert workers.replica.weight is bn.weight and workers.replica.running_mean is not bn.running_mean


def _step(cfg_factory, method, split, *overrides, steps=1, ahead=False):
    cfg = cfg_factory(f"+method={method}", *TINY, "train.precision=fp32", f"train.view_parallel={split}",
                      *overrides)
    data = load_data(cfg.data, cfg.eval, cfg.seed)
    torch.manual_seed(cfg.seed)
    model, stepper = build_runner(cfg, data, CPU)
    assert stepper.view_parallel is split
    batches = [data.ssl_x[s * stepper.batch_size:(s + 1) * stepper.batch_size] for s in range(steps)]
    for batch, upcoming in lookahead(batches) if ahead else ((b, None) for b in batches):
        terms = stepper(batch, upcoming)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return terms, grads, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method,overrides", [("simsiam", ()), ("byol", ()), ("vicreg", ()),
                                              ("vicreg", ("predictor=mlp",)), ("simsiam", ("~stop_grad",))])
def test_the_split_step_computes_the_sequential_step(cfg_factory, method, overrides):
    with torch_threads(2):
        terms, grads, state = _step(cfg_factory, method, False, *overrides)
        s_terms, s_grads, s_state = _step(cfg_factory, method, True, *overrides)
    torch.testing.assert_close(s_terms, terms, rtol=1e-5, atol=1e-6)
    assert s_grads.keys() == grads.keys() and grads
    scale = max(g.abs().max() for g in grads.values())
    for name, g in grads.items():  # float rounding of sums taken in another order, against the largest gradient
        torch.testing.assert_close(s_grads[name], g, rtol=1e-4, atol=1e-5 * float(scale), msg=name)
    for k, v in state.items():
        torch.testing.assert_close(s_state[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_the_split_step_repeats_to_the_bit(cfg_factory):
    with torch_threads(2):
        a = _step(cfg_factory, "byol", True, "var=hinge", steps=3)
        b = _step(cfg_factory, "byol", True, "var=hinge", steps=3)
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_augmenting_the_next_batch_ahead_changes_no_bit(cfg_factory):
    with torch_threads(2):
        a = _step(cfg_factory, "simsiam", True, steps=3)
        b = _step(cfg_factory, "simsiam", True, steps=3, ahead=True)
    # the same draws in the same order, so the same views: every bit of the loss, gradients and state
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_a_batch_other_than_the_announced_one_is_refused(cfg_factory):
    cfg = cfg_factory("+method=simsiam", *TINY, "train.view_parallel=true")
    data = load_data(cfg.data, cfg.eval, cfg.seed)
    with torch_threads(2):
        _, stepper = build_runner(cfg, data, CPU)
        x = data.ssl_x[:stepper.batch_size]
        stepper(x, x.clone())
        with pytest.raises(RuntimeError, match="other than the upcoming one"):
            stepper(x)


def test_where_it_cannot_run_auto_is_off_and_true_is_a_one_line_error(cfg_factory):
    with torch_threads(2):
        for overrides in (("+method=simsiam", "train.compile=true"), ("+method=supervised",)):
            cfg = cfg_factory(*overrides, *TINY)
            data = load_data(cfg.data, cfg.eval, cfg.seed)
            assert not build_runner(cfg, data, CPU)[1].view_parallel
        cfg = cfg_factory("+method=simsiam", *TINY, "train.compile=true", "train.view_parallel=true")
        with pytest.raises(ConfigError, match="train.view_parallel=true cannot run here: train.compile=true"):
            build_runner(cfg, load_data(cfg.data, cfg.eval, cfg.seed), CPU)
    with torch_threads(1):
        cfg = cfg_factory("+method=simsiam", *TINY, "train.view_parallel=true")
        with pytest.raises(ConfigError, match="at least 2 torch threads"):
            build_runner(cfg, load_data(cfg.data, cfg.eval, cfg.seed), CPU)
        cfg = cfg_factory("+method=simsiam", *TINY)
        assert not build_runner(cfg, load_data(cfg.data, cfg.eval, cfg.seed), CPU)[1].view_parallel
    with pytest.raises(ConfigError, match="train.view_parallel=sometimes must be auto, true or false"):
        check_config(cfg_factory("+method=simsiam", "train.view_parallel=sometimes"))
