"""ptypy (near field, DM then ML) on the PETRA III P25 scan; writes its phase to a cache .npz.

Run once in the peers' venv with ptyhpc importable (for the CXI reader and the Fresnel scaling):

    PYTHONPATH=. nice -n 10 /work/venv-cmp/bin/python benchmarks/peers/run_ptypy.py CXI OUT.npz

ptypy gets the Fresnel-scaled geometry (object pixel Δ/M, distance z2/M, M = (z1 + z2)/z1, z1 = 3.65
mm), frames and bad-pixel weights from memory (an in-memory PtyScan), a start probe √(mean frame)
with flat phase, and runs 200 DM + 100 ML iterations (the issue's run), one probe mode.
"""

import contextlib
import io
import sys
import tempfile
import time

import numpy as np

import ptypy
from ptypy import experiment
from ptypy import utils as u
from ptypy.core import Ptycho
from ptypy.core.data import PtyScan

from ptyhpc.io.cxi import read_cxi
from ptyhpc.physics import fresnel_scaling

cxi, out = sys.argv[1], sys.argv[2]
scan = read_cxi(cxi)
px, z, mag = fresnel_scaling(scan.pixel_size_m, 3.65e-3, scan.distance_m)
frames = scan.frames.astype(np.float32)
weight = scan.measured.astype(np.float32)
pos = np.asarray(scan.positions_m, float)
D = {}


@experiment.register()
class ArrayScan(PtyScan):
    """In-memory frames (run_ptypy.py).

    Defaults:

    [name]
    default = ArrayScan
    type = str
    help = in memory
    """

    def __init__(self, pars=None, **kwargs):
        p = self.DEFAULT.copy(depth=99)
        p.update(pars)
        super().__init__(p, **kwargs)

    def load_positions(self):
        return pos

    def load_weight(self):
        return weight

    def load(self, indices):
        return {i: frames[i] for i in indices}, {}, {}


n, det = frames.shape[0], frames.shape[-1]
p = u.Param()
p.verbose_level = "error"
p.frames_per_block = n
p.io = u.Param(home=tempfile.mkdtemp(prefix="ptypy_"), rfile=None, autosave=u.Param(active=False),
               autoplot=u.Param(active=False), interaction=u.Param(active=False))
p.scans = u.Param()
p.scans.s = u.Param(name="BlockFull", propagation="nearfield")
p.scans.s.data = u.Param(name="ArrayScan", shape=det, psize=px[0], distance=z,
                         energy=u.keV2m(1.0) / scan.wavelength_m, center=(det // 2, det // 2),
                         auto_center=False, num_frames=n, save=None, propagation="nearfield")
probe0 = np.sqrt(np.maximum(frames.mean(0), 0)).astype(np.complex128)
p.scans.s.illumination = u.Param(model=probe0, photons=None, aperture=u.Param(form=None),
                                 diversity=None, propagation=u.Param(parallel=None, focussed=None))
p.scans.s.coherence = u.Param(num_probe_modes=1, num_object_modes=1)
p.scans.s.sample = u.Param(model=None, fill=1.0)
p.engines = u.Param()
p.engines.e0 = u.Param(name="DM", numiter=200, numiter_contiguous=10, probe_update_start=2,
                       probe_support=None, fourier_relax_factor=0.05)
p.engines.e1 = u.Param(name="ML", numiter=100, numiter_contiguous=10, probe_support=None)
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    P = Ptycho(p, level=5)
seconds = time.perf_counter() - t0
S = list(P.obj.storages.values())[0]
obj = np.asarray(S.data[0])
pr = np.asarray(list(P.probe.storages.values())[0].data)
views = [(pod.ob_view.pcoord, pod.ob_view.coord) for pod in P.pods.values()]
pcoord = np.array([v[0] for v in views], float)
coord = np.array([v[1] for v in views], float)
np.savez(out, obj=obj, probe=pr, seconds=seconds, pcoord=pcoord, coord=coord, psize=px[0],
         code="ptypy", version=ptypy.__version__)
print(f"ptypy {seconds:.1f} s obj {obj.shape}")
