"""torch.distributed on CPU (gloo): 2 processes at batch B/2 each train the same model as 1 process at batch
B, for VICReg with var/cov on and for BYOL with its EMA target (batch norm over the global batch in both)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY

STEPS, BATCH = 4, 16
# the loss is a mean over the batch; 1 process sums in one order, 2 in another: float32 rounding only. In fp32:
# under bf16 autocast (what train.precision=auto picks on a CPU with native bf16) the two splits' products round
# apart by about 1e-2, so the tolerance could no longer tell a wrong gradient from rounding
TOL = dict(rtol=1e-4, atol=1e-5)

WORKER = """
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
rank, world, out, init = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if world > 1:
    dist.init_process_group("gloo", init_method="file://" + init, rank=rank, world_size=world)
from hydra import compose, initialize_config_module
from ablate.run import dist as D
from ablate.augment import two_views
from ablate.data import load_data
from ablate.run.step import build_runner
results = {}
for case in sys.argv[5:]:  # "method override override ..."
    method, *overrides = case.split()
    with initialize_config_module("ablate.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"+method={method}", *overrides])
    torch.manual_seed(0)
    data = load_data(cfg.data, cfg.eval, 0)
    model, stepper = build_runner(cfg, data, torch.device("cpu"))
    first_batch = next(stepper.epoch_batches(data.ssl_x))  # this rank's slice of the first global batch
    bs, local = cfg.train.batch_size, cfg.train.batch_size // world
    losses = []
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # the same global views in every process
        x1, x2 = two_views(data.ssl_x[step * bs:(step + 1) * bs], cfg.aug, cfg.data.image_size, data.mean,
                           data.std)
        terms = stepper.update(x1[rank * local:(rank + 1) * local], x2[rank * local:(rank + 1) * local])
        losses.append(D.mean(terms))
    results[method] = {"losses": torch.stack(losses), "state": model.state_dict(), "first_batch": first_batch}
torch.save(results, out)
if world > 1:
    dist.destroy_process_group()
""".replace("STEPS", str(STEPS))


CASES = {
    "vicreg": ([], "var/cov over the global batch"),
    "byol": (["ema.base_tau=0.9"], "EMA target identical"),  # a fast-moving target makes a wrong EMA visible
}


def one_and_two_processes(tmp_path, cases: dict) -> tuple:
    """``cases`` ({method: extra overrides}) trained by the WORKER in one process and in two gloo processes at
    batch BATCH: the results of the one process, of rank 0 and of rank 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [" ".join([m, *TINY, f"train.batch_size={BATCH}", "train.precision=fp32", *extra])
            for m, extra in cases.items()]
    runs = [(world, rank, tmp_path / f"{world}-{rank}.pt") for world in (1, 2) for rank in range(world)]
    # all three processes at once: the two ranks must run together anyway
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(rank), str(world), str(out), str(tmp_path / "init"),
                               *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for world, rank, out in runs]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    return tuple(torch.load(out) for _, _, out in runs)


# the methods of the 1 == 2 processes checks here and in test_beyond, trained once (conftest.gloo_runs)
GLOO_CASES = {**{m: extra for m, (extra, _) in CASES.items()},
              "simclr": [], "barlowtwins": ["predictor=mlp", "stop_grad=target"]}


@pytest.mark.xdist_group("gloo")  # one worker trains the shared runs once
def test_two_gloo_processes_match_one_process(gloo_runs):
    one, r0, r1 = gloo_runs
    for method, (_, check) in CASES.items():
        a, b, c = one[method], r0[method], r1[method]
        torch.testing.assert_close(b["losses"], a["losses"], **TOL)
        assert a["losses"][0, 0] != a["losses"][-1, 0]  # it trained
        for key, value in a["state"].items():
            if value.is_floating_point():
                torch.testing.assert_close(b["state"][key], value, **TOL, msg=lambda m, k=key, c=check: f"{c}: {k}: {m}")
            torch.testing.assert_close(c["state"][key], b["state"][key], rtol=0, atol=0)  # ranks agree exactly
        # each rank takes its half of the same global batch
        torch.testing.assert_close(torch.cat([b["first_batch"], c["first_batch"]]), a["first_batch"])
