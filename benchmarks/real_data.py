"""ptyhpc, ptypy and cdtools on the real PETRA III P25 near-field scan: agreement, contrast, time, FRC.

ptyhpc runs here as a user runs it: the CXI file ingested with ``--regime near_field
--focus-to-sample-m 3.65e-3`` and reconstructed with the stage's defaults (``PtychoParams()``,
data-driven choices of :mod:`ptyhpc.ptycho.defaults`), in this process. ptypy and cdtools run once,
in their own venv (``benchmarks/peers/run_ptypy.py``, ``benchmarks/peers/run_cdtools.py``), and
their objects are read from ``--peers-cache DIR`` (``ptypy.npz``, ``cdtools.npz``).

Prints JSON lines:

- per code: ``seconds`` (reconstruction wall time on this machine, set-up included for the peers'
  own timers), ``phase_contrast_rad`` (standard deviation of the phase in the well-lit region,
  offset and ramp removed), ``frc_half_bit_m`` (ptyhpc: half-bit FRC resolution of two
  reconstructions from disjoint halves of the positions; peers: null unless their cache has
  halves);
- per pair: ``r_rigid`` (Pearson correlation of the phases in the well-lit region after the best
  of the 8 flips/rotations and their conjugates and a sub-pixel shift) and ``r_affine`` (after a
  fitted 2-D affine map of the second image onto the first, order-1 interpolation).

The well-lit region is where ptyhpc's illumination Σ|P|² exceeds 0.3 of its maximum, eroded by 3
pixels; every code is mapped onto ptyhpc's object grid (all use the Fresnel-scaled 179 nm pixel).

    PYTHONPATH=. python benchmarks/real_data.py --peers-cache /work/notes/realdata_cache
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

ROOT = Path(__file__).resolve().parents[1]
CXI = ROOT / "data" / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
FOCUS_TO_SAMPLE_M = 3.65e-3   # from the dataset's README (not in the CXI file)

_TRANSFORMS = {
    "identity": lambda a: a, "flipud": lambda a: a[::-1], "fliplr": lambda a: a[:, ::-1],
    "rot180": lambda a: a[::-1, ::-1], "transpose": lambda a: a.T, "rot90": lambda a: np.rot90(a),
    "rot270": lambda a: np.rot90(a, -1), "antitranspose": lambda a: np.rot90(a, 2).T,
}


# --------------------------------------------------------------------------------------------
# Phase images and their comparison
# --------------------------------------------------------------------------------------------

def flat_phase(obj) -> np.ndarray:
    """Phase of a complex object with its mean phase removed (no wrapping for weak objects)."""
    obj = np.asarray(obj, np.complex128)
    return np.angle(obj * np.exp(-1j * np.angle(obj.mean())))


def detrend(img, region) -> np.ndarray:
    """``img`` minus the plane a + b y + c x fitted on ``region``."""
    y, x = np.nonzero(region)
    a = np.stack([np.ones_like(y), y, x], 1).astype(float)
    coef, *_ = np.linalg.lstsq(a, img[region], rcond=None)
    yy, xx = np.indices(img.shape)
    return img - (coef[0] + coef[1] * yy + coef[2] * xx)


def corr(a, b, region) -> float:
    """Pearson correlation of two images on ``region`` after removing a plane from each."""
    a, b = detrend(a, region)[region], detrend(b, region)[region]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def contrast(phase, region) -> float:
    """Standard deviation of the phase on ``region`` (rad), plane removed."""
    return float(detrend(phase, region)[region].std())


def place(ref_phase, region, other_obj):
    """Map another code's object onto the reference grid: best orientation, then sub-pixel shift.

    Returns the mapped phase (reference shape), the orientation name and the shift (pixels).
    The orientation and whole-pixel shift come from the normalised cross-correlation of the
    reference's well-lit box with every placement in the other image.
    """
    from skimage.feature import match_template  # noqa: PLC0415
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    ys, xs = np.nonzero(region)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    tmpl = detrend(ref_phase, region)[box] * region[box]
    best = None
    for name, f in _TRANSFORMS.items():
        for conj in (False, True):
            ph = flat_phase(np.conj(other_obj) if conj else other_obj)
            ph = np.ascontiguousarray(f(ph))
            if ph.shape[0] < tmpl.shape[0] or ph.shape[1] < tmpl.shape[1]:
                continue
            cc = match_template(ph, tmpl)
            k = np.unravel_index(np.argmax(cc), cc.shape)
            if best is None or cc[k] > best[0]:
                best = (float(cc[k]), name + ("+conj" if conj else ""), ph, k)
    _, name, ph, (ky, kx) = best
    # The reference box sits at (ys.min, xs.min); the match at (ky, kx) in the other image.
    off = np.array([ky - box[0].start, kx - box[1].start], float)
    mapped = ndimage.shift(ph, -off, order=1, mode="nearest")[:ref_phase.shape[0], :ref_phase.shape[1]]
    mapped = _pad_to(mapped, ref_phase.shape)
    sub, _, _ = phase_cross_correlation(detrend(ref_phase, region) * region, detrend(mapped, region) * region,
                                        upsample_factor=20, normalization=None)
    mapped = ndimage.shift(ph, -off + sub, order=3, mode="nearest")[:ref_phase.shape[0], :ref_phase.shape[1]]
    return _pad_to(mapped, ref_phase.shape), name, (off - sub).tolist()


def _pad_to(img, shape):
    out = np.zeros(shape, img.dtype)
    out[:img.shape[0], :img.shape[1]] = img[:shape[0], :shape[1]]
    return out


def rigid_corr(a, b, region) -> float:
    """Correlation of ``a`` with ``b`` after a sub-pixel shift of ``b`` onto ``a`` (both on one grid)."""
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    sub, _, _ = phase_cross_correlation(detrend(a, region) * region, detrend(b, region) * region,
                                        upsample_factor=20, normalization=None)
    return corr(a, ndimage.shift(b, sub, order=3, mode="nearest"), region)


def affine_corr(a, b, region) -> tuple[float, list]:
    """Correlation of ``a`` with ``b`` after the affine map of ``b`` that maximises it.

    ``b`` is resampled at A·(y, x) + t (order 1) about the region's centre; starts from identity.
    """
    c = np.array([np.mean(np.nonzero(region)[k]) for k in (0, 1)])

    def warp(p):
        m = np.array([[1 + p[0], p[1]], [p[2], 1 + p[3]]])
        return ndimage.affine_transform(b, m, offset=c - m @ c + p[4:6], order=1, mode="nearest")

    res = optimize.minimize(lambda p: -corr(a, warp(p), region), np.zeros(6), method="Powell",
                            options={"xtol": 1e-4, "ftol": 1e-6, "maxfev": 3000})
    return float(-res.fun), [round(float(v), 5) for v in res.x]


# --------------------------------------------------------------------------------------------
# ptyhpc, as a user runs it
# --------------------------------------------------------------------------------------------

def run_ptyhpc(store: Path | None, frc: bool) -> dict:
    """Ingest (unless ``store`` is given), reconstruct with the defaults, and the FRC of two halves."""
    import zarr  # noqa: PLC0415

    from ptyhpc.io import layout  # noqa: PLC0415
    from ptyhpc.io.readers import ingest_files  # noqa: PLC0415
    from ptyhpc.pipeline.ptycho_stage import PtychoParams, item_engine_inputs, run_ptycho  # noqa: PLC0415
    from ptyhpc.ptycho.engines import reconstruct  # noqa: PLC0415

    out = {"code": "ptyhpc"}
    if store is None:
        store = Path(tempfile.mkdtemp(prefix="ptyhpc_real_")) / "petra.zarr"
        ingest_files([CXI], store, regime="near_field", focus_to_sample_m=FOCUS_TO_SAMPLE_M, progress=False)
    params = PtychoParams()
    t0 = time.perf_counter()
    ran = run_ptycho(store, params, progress=False)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if ran["tasks"]:
        out["compute_seconds"] = round(ran["tasks"][0]["compute_seconds"], 2)
    g = zarr.open_group(str(store), mode="r")
    res = g[layout.PTYCHO]
    out["choices"] = res.attrs.get("defaults_chosen")
    obj = np.asarray(g[layout.PTYCHO_OBJECT][0])
    illum = np.asarray(g[layout.PTYCHO_ILLUMINATION][0])
    err = np.asarray(g[layout.PTYCHO_ERROR][0])
    out["final_error"] = float(err[np.isfinite(err)][-1])
    halves = None
    if frc:
        from ptyhpc.pipeline.ptycho_stage import resolve_params  # noqa: PLC0415
        from ptyhpc.ptycho.defaults import stalled  # noqa: PLC0415

        # The halves get the settings the full run got (the data-driven choice, on the whole store).
        params, _ = resolve_params(g, params)
        order = np.random.default_rng(0).permutation(g[layout.FRAMES].shape[1])
        halves = []
        for part in (np.sort(order[::2]), np.sort(order[1::2])):
            frames, pos, probe, common, grid, _ = item_engine_inputs(g, 0, params, select=part)
            r = reconstruct(frames, pos, probe, grid.pixel_size_m, engine=params.engine, n_iter=params.n_iter,
                            stop=stalled if params.stop_when_stalled else None, **common)
            halves.append(r.object)
    return {"out": out, "obj": obj, "illum": illum, "halves": halves, "pixel_m": float(np.ravel(g[layout.PTYCHO_OBJECT]
                                                                                                .attrs["pixel_size_m"])[0])}


def frc_halves(h0, h1, region, pixel_m) -> float:
    """Half-bit FRC resolution (m) of two half-data phases on the well-lit box."""
    from ptyhpc.ptycho.metrics import frc, frc_resolution  # noqa: PLC0415

    ys, xs = np.nonzero(region)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    a, b = flat_phase(h0), flat_phase(h1)
    a, b = detrend(a, region)[box], detrend(b, region)[box]
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    sub, _, _ = phase_cross_correlation(a, b, upsample_factor=20, normalization=None)
    b = ndimage.shift(b, sub, order=3, mode="nearest")
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    k, f, n = frc((a - a.mean()) * win, (b - b.mean()) * win, pixel_m)
    return float(frc_resolution(k, f, n))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-cache", type=Path, default=None, help="folder with ptypy.npz, cdtools.npz")
    ap.add_argument("--store", type=Path, default=None, help="an ingested store to reconstruct (else a temp one)")
    ap.add_argument("--no-frc", action="store_true", help="skip the half-data reconstructions")
    ap.add_argument("--save", type=Path, default=None, help="save the mapped phases (.npz)")
    ap.add_argument("--figure", type=Path, default=None, help="write the side-by-side figure (PNG)")
    args = ap.parse_args(argv)

    me = run_ptyhpc(args.store, not args.no_frc)
    illum = me["illum"] / me["illum"].max()
    region = ndimage.binary_erosion(illum > 0.3, iterations=3)
    phases = {"ptyhpc": flat_phase(me["obj"])}
    rows = [me["out"]]
    if me["halves"] is not None:
        me["out"]["frc_half_bit_m"] = frc_halves(*me["halves"], region, me["pixel_m"])
    for code in ("ptypy", "cdtools"):
        f = None if args.peers_cache is None else args.peers_cache / f"{code}.npz"
        if f is None or not f.exists():
            rows.append({"code": code, "skipped": f"no cache {f}"})
            continue
        d = np.load(f, allow_pickle=False)
        obj = d["obj"]
        obj = obj.reshape(-1, *obj.shape[-2:])[0]
        mapped, orient, shift = place(phases["ptyhpc"], region, obj)
        phases[code] = mapped
        rows.append({"code": code, "seconds": round(float(d["seconds"]), 2), "orientation": orient,
                     "shift_px": [round(v, 2) for v in shift], "frc_half_bit_m": None,
                     "version": str(d["version"]) if "version" in d else None})
    for row in rows:
        if row["code"] in phases:
            row["phase_contrast_rad"] = round(contrast(phases[row["code"]], region), 4)
        print(json.dumps(row))
    names = list(phases)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            r_aff, p = affine_corr(phases[a], phases[b], region)
            print(json.dumps({"pair": f"{a}-{b}", "r_rigid": round(rigid_corr(phases[a], phases[b], region), 4),
                              "r_affine": round(r_aff, 4), "affine_params": p}))
    if args.save:
        np.savez(args.save, region=region, **phases)
    if args.figure:
        figure(phases, region, me["pixel_m"], args.figure)


def figure(phases: dict, region, pixel_m: float, path: Path) -> None:
    """Phases of each code on ptyhpc's grid (well-lit box, plane removed) and their differences."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ys, xs = np.nonzero(region)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    flat = {k: np.where(region, detrend(v, region), np.nan)[box] for k, v in phases.items()}
    names = list(flat)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    fig, ax = plt.subplots(2, max(len(names), len(pairs), 1), figsize=(4.2 * max(len(names), len(pairs)), 7.6),
                           layout="constrained", squeeze=False)
    ext = [0, flat[names[0]].shape[1] * pixel_m * 1e6, flat[names[0]].shape[0] * pixel_m * 1e6, 0]
    lim = np.nanpercentile(np.abs(flat[names[0]]), 99)
    for k, n in enumerate(names):
        im = ax[0, k].imshow(flat[n], cmap="gray", vmin=-lim, vmax=lim, extent=ext)
        ax[0, k].set(title=f"{n}: phase", xlabel="x (µm)", ylabel="y (µm)")
        fig.colorbar(im, ax=ax[0, k], label="rad", shrink=0.8)
    for k, (a, b) in enumerate(pairs):
        im = ax[1, k].imshow(flat[a] - flat[b], cmap="RdBu_r", vmin=-lim, vmax=lim, extent=ext)
        ax[1, k].set(title=f"{a} − {b}", xlabel="x (µm)", ylabel="y (µm)")
        fig.colorbar(im, ax=ax[1, k], label="rad", shrink=0.8)
    for k in range(len(names), ax.shape[1]):
        ax[0, k].axis("off")
    for k in range(len(pairs), ax.shape[1]):
        ax[1, k].axis("off")
    fig.suptitle("PETRA III P25 near-field scan (CC BY 4.0): phase, well-lit region, plane removed")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
