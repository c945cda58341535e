"""Reconstruct the real PETRA III P25 near-field scan (bundled, CC BY 4.0) and measure its FRC.

Writes out/petra3_p25_nearfield_phase.png (``--out``; docs/engines.md shows the figure made with
``--out docs/img/petra3_p25_nearfield_phase.png``) and prints one JSON line with the final data error,
the half-bit FRC resolution of two half-data reconstructions and timings.

    python examples/petra_nearfield.py [--n-iter 200] [--out FILE.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptyhpc.io.cxi import read_cxi
from ptyhpc.physics import fresnel_scaling
from ptyhpc.ptycho import reconstruct
from ptyhpc.ptycho.metrics import frc, frc_resolution, register_shift
from ptyhpc.ptycho.propagators import NearField
from ptyhpc.tomo.align import remove_offset_ramp

ROOT = Path(__file__).resolve().parents[1]
CXI = ROOT / "data" / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
FOCUS_TO_SAMPLE_M = 3.65e-3   # from the dataset's README (not stored in the CXI file)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-iter", type=int, default=200, help="iterations (default 200)")
    # out/ is ignored by git: a run never overwrites the figure tracked in docs/.
    ap.add_argument("--out", default=str(ROOT / "out" / "petra3_p25_nearfield_phase.png"),
                    help="PNG to write (default out/petra3_p25_nearfield_phase.png)")
    args = ap.parse_args(argv)
    scan = read_cxi(CXI)
    px, z, mag = fresnel_scaling(scan.pixel_size_m, FOCUS_TO_SAMPLE_M, scan.distance_m)
    prop = NearField(scan.frames.shape[1:], px, scan.wavelength_m, z)
    frames = scan.frames.astype(np.float32)
    probe0 = prop.adjoint(np.sqrt(frames.mean(0)).astype(np.complex64))
    kw = dict(propagator=prop, mask=scan.measured, n_iter=args.n_iter, noise_model="amplitude",
              beta_object=1.0, beta_probe=1.0, alpha=0.1)
    t0 = time.perf_counter()
    full = reconstruct(frames, scan.positions_m, probe0, px, **kw)
    seconds = time.perf_counter() - t0
    # Two independent halves of the positions, on the grid of the full reconstruction.
    order = np.random.default_rng(0).permutation(len(frames))
    halves = []
    for part in (order[::2], order[1::2]):
        halves.append(reconstruct(frames[part], scan.positions_m[part], probe0, px, origin_m=full.origin_m,
                                  object_shape=full.object.shape, **kw))
    region = np.minimum(halves[0].illumination / halves[0].illumination.max(),
                        halves[1].illumination / halves[1].illumination.max()) > 0.3
    # Crop to the common well-lit box, apodise with a Hann window, register the halves.
    ys, xs = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
    box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    a, b = (np.angle(h.object[box] * np.exp(-1j * np.angle(np.mean(h.object[box])))) for h in halves)
    shift = register_shift(np.exp(1j * b), np.exp(1j * a), np.ones(a.shape, bool))
    b = ndimage.shift(b, shift, order=3, mode="nearest")
    a, b = remove_offset_ramp(np.stack([a, b]))
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    k, f, n = frc((a - a.mean()) * win, (b - b.mean()) * win, px[0])
    res = frc_resolution(k, f, n)

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    fig.get_layout_engine().set(wspace=0.06)   # room between a colour bar's label and the next panel
    ext = [0, full.object.shape[1] * px[1] * 1e6, full.object.shape[0] * px[0] * 1e6, 0]
    im = ax[0].imshow(np.angle(full.object * np.exp(-1j * np.angle(full.object[box].mean()))), cmap="gray",
                      extent=ext)
    ax[0].set(title=f"phase, rPIE, {args.n_iter} iterations", xlabel="x (µm)", ylabel="y (µm)")
    fig.colorbar(im, ax=ax[0], label="phase (rad)")
    pext = [0, full.probe.shape[1] * px[1] * 1e6, full.probe.shape[0] * px[0] * 1e6, 0]
    im = ax[1].imshow(np.abs(full.probe), cmap="magma", extent=pext)
    ax[1].set(title="probe amplitude (sample plane)", xlabel="x (µm)", ylabel="y (µm)")
    fig.colorbar(im, ax=ax[1], label="|P| (√counts)")
    ax[2].plot(k * 1e-6, f, label="FRC of two half-data reconstructions")
    ax[2].plot(k * 1e-6, (0.2071 + 1.9102 / np.sqrt(n)) / (1.2071 + 0.9102 / np.sqrt(n)), "--", label="half-bit")
    ax[2].set(xlabel="spatial frequency (1/µm)", ylabel="Fourier ring correlation", ylim=(-0.1, 1.05),
              title=f"half-period resolution {res * 1e9:.0f} nm")
    ax[2].axvline(1e-6 / (2 * res), color="gray", lw=0.8, ls=":")
    ax[2].grid(alpha=0.3)
    ax[2].legend(loc="upper right", fontsize=8)
    fig.suptitle("PETRA III P25 near-field scan (Siemens star), Fresnel-scaled pixel "
                 f"{px[0] * 1e9:.0f} nm")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(json.dumps({"dataset": CXI.name, "n_iter": args.n_iter, "seconds": round(seconds, 2),
                      "final_error": float(full.error[-1]), "initial_error": float(full.error[0]),
                      "effective_pixel_m": px[0], "magnification": mag,
                      "frc_half_bit_resolution_m": res, "figure": args.out}))


if __name__ == "__main__":
    main()
