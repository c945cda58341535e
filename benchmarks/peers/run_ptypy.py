"""ptypy (near field, DM then ML) on the PETRA III P25 scan; writes its phase to a cache .npz.

Run once in the peers' venv, on the inputs ptyhpc's CXI reader and Fresnel scaling give (written by
``python benchmarks/peers/run_ptypy.py --inputs CXI INPUTS.npz`` in ptyhpc's venv, so that both codes get
the same frames, positions in the same frame, mask and geometry):

    nice -n 10 /work/venv-cmp/bin/python benchmarks/peers/run_ptypy.py INPUTS.npz OUT.npz

ptypy gets the Fresnel-scaled geometry (object pixel Δ/M, distance z2/M, M = (z1 + z2)/z1, z1 = 3.65
mm), frames and bad-pixel weights from memory (an in-memory PtyScan), a start probe √(mean frame)
with flat phase, and runs 200 DM + 100 ML iterations (the issue's run), one probe mode.
"""

import contextlib
import os
import io
import sys
import tempfile
import time

import numpy as np

if sys.argv[1] == "--inputs":   # in ptyhpc's venv
    from ptyhpc.io.cxi import read_cxi
    from ptyhpc.physics import fresnel_scaling

    scan = read_cxi(sys.argv[2])
    px, z, mag = fresnel_scaling(scan.pixel_size_m, 3.65e-3, scan.distance_m)
    np.savez(sys.argv[3], frames=scan.frames.astype(np.float32), weight=scan.measured.astype(np.float32),
             positions_m=np.asarray(scan.positions_m, float), px=px[0], z=z, wavelength_m=scan.wavelength_m)
    sys.exit(0)

import ptypy  # noqa: E402
from ptypy import experiment  # noqa: E402
from ptypy import utils as u  # noqa: E402
from ptypy.core import Ptycho  # noqa: E402
from ptypy.core.data import PtyScan  # noqa: E402

inputs, out = np.load(sys.argv[1]), sys.argv[2]
frames, weight, pos = inputs["frames"], inputs["weight"], inputs["positions_m"]
px, z, wavelength_m = (float(px) for px in (inputs["px"], inputs["z"], inputs["wavelength_m"]))
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
p.scans.s.data = u.Param(name="ArrayScan", shape=det, psize=px, distance=z,
                         energy=u.keV2m(1.0) / wavelength_m, center=(det // 2, det // 2),
                         auto_center=False, num_frames=n, save=None)
probe0 = np.sqrt(np.maximum(frames.mean(0), 0)).astype(np.complex128)
p.scans.s.illumination = u.Param(model=probe0, photons=None, aperture=u.Param(form=None),
                                 diversity=None, propagation=u.Param(parallel=None, focussed=None))
p.scans.s.coherence = u.Param(num_probe_modes=1, num_object_modes=1)
p.scans.s.sample = u.Param(model=None, fill=1.0)
p.engines = u.Param()
n_dm, n_ml = (int(v) for v in os.environ.get("PTYPY_ITERS", "200,100").split(","))  # smoke test: 2,2
p.engines.e0 = u.Param(name="DM", numiter=n_dm, numiter_contiguous=10, probe_update_start=2,
                       probe_support=None, fourier_relax_factor=0.05)
p.engines.e1 = u.Param(name="ML", numiter=n_ml, numiter_contiguous=10, probe_support=None)
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
np.savez(out, obj=obj, probe=pr, seconds=seconds, pcoord=pcoord, coord=coord, psize=px,
         code="ptypy", version=getattr(ptypy, "__version__", None) or __import__("importlib.metadata").metadata.version("ptypy"))
print(f"ptypy {seconds:.1f} s obj {obj.shape}")
