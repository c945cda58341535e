"""cdtools-py FancyPtycho (near field) on the PETRA III P25 scan; writes its phase to a cache .npz.

Run once in the peers' venv (not a ptyhpc dependency; see benchmarks/README.md):

    nice -n 10 /work/venv-cmp/bin/python benchmarks/peers/run_cdtools.py CXI OUT.npz

Settings: cdtools' own near-field set-up (``near_field=True``, ``propagation_distance`` = the
focus-to-sample distance 3.65 mm, so it applies the same Fresnel scaling), 3 probe modes, Adam
100 epochs at lr 0.04 (batches of 10) then 50 at lr 0.005 (batches of 50), as in its examples.
"""

import sys
import time

import numpy as np
import torch as t

from cdtools.datasets import Ptycho2DDataset
from cdtools.models import FancyPtycho

cxi, out = sys.argv[1], sys.argv[2]
t.set_num_threads(1)
dataset = Ptycho2DDataset.from_cxi(cxi)
t0 = time.perf_counter()
model = FancyPtycho.from_dataset(dataset, n_modes=3, near_field=True, propagation_distance=3.65e-3,
                                 units="um")
losses = []
print('start', flush=True)
for loss in model.Adam_optimize(100, dataset, lr=0.04, batch_size=10):
    losses.append(float(loss))
for loss in model.Adam_optimize(50, dataset, lr=0.005, batch_size=50):
    losses.append(float(loss))
seconds = time.perf_counter() - t0
obj = model.obj.detach().cpu().numpy()
basis = model.obj_basis.detach().cpu().numpy()
probe = model.probe.detach().cpu().numpy()
np.savez(out, obj=obj, probe=probe, basis=basis, seconds=seconds, losses=np.asarray(losses), code="cdtools",
         version=getattr(__import__("cdtools"), "__version__", "0.3.2"))
print(f"cdtools {seconds:.1f} s, loss {losses[0]:.4g} -> {losses[-1]:.4g}, obj {obj.shape}")
