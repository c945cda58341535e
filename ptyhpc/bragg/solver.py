"""Joint 3D Bragg-ptychography solver (ρ, probe, background), MPI-parallel over positions.

Follows the Methods of the seed (Nat. Commun. 12, 7059 (2021)):

* cost (eqs. 3, 4): L = Σ_j ‖ω (I_j^{1/2} − h_j^{1/2})‖² + μ_j Σ_{r∈S̄} |ρ|², h_j = |Ψ_j|² + b;
* corrected field (eq. 13): Ψ'_j = [|Ψ_j| + ω (I_j^{1/2} − |Ψ_j|)] Ψ_j / h_j^{1/2}, ω = 0 on
  virtual (up-sampled) angles and masked pixels, so those are left free;
* object step (eqs. 5, 7, 9) and probe step (eqs. 6, 8, 10), with the
  probe invariant along k̂_i (it is stored as its transverse field, see
  :mod:`ptyhpc.bragg.operators`) and confined in Fourier space to a
  rectangle of 1.5× the numerical aperture once per iteration (as the
  seed does, "for each iteration"); probe fixed for the first
  ``probe_start`` iterations;
* multiplicative background step (eq. 11);
* support-thickness regularisation μ_j = μ |P_j|²_max outside a tilted
  slab whose thickness grows in stages, then shrink-wrap (voxels below
  15 % of max |ρ| zeroed every 5 iterations in a window);
* a final maximum-likelihood refinement of ρ with the Gaussian
  (amplitude) noise model, by preconditioned conjugate gradients (seed
  ref. 34; Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012)).

Parallel form: the seed applies eqs. (5)–(11) position by position (ePIE).
Here positions are grouped into K global mini-batches (position j in batch
j mod K; K = J, one position per batch, by default, which is the seed's
ePIE and converges fastest). Within a batch, eqs. (5)–(10) are applied with
numerators and denominators summed over the batch's positions; λ_ρ uses the
max of the batch's summed illumination (= |P_j|²_max for one position).
A batch's positions are split over the MPI ranks, and so is the object
update: each rank updates a share of the rows of the batch's box (the
bounding box of its windows). The batch's sums (single precision: a batch
sums a few positions) are combined by :mod:`ptyhpc.bragg.comm`: on one node
in MPI-3 shared memory (two barriers per batch, no copies), otherwise by one
reduce-scatter (``Alltoallv`` and a local sum) and one ``Allgatherv`` of the
updated rows, the probe sums and the rows' maxima of the summed illumination
(each batch's |P|²_max is the one of its previous visit, exact while the probe
is fixed, so that no third synchronisation is needed). The sequence of
updates — and the result, to rounding — is
the same on any number of ranks. Eq. (11) uses the ratio averaged over
all positions once per iteration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import scipy.fft

from .. import backend
from .comm import Allreduce, batch_exchange
from .options import BraggParams
from .geometry import BraggGeometry
from .operators import ProbeOperator, ScanFrame, bragg_fftn, bragg_ifftn, extract_patches, shear_phase
from .sim import probe_grid

__all__ = ["BraggParams", "BraggResult", "reconstruct", "fit_probe", "slab_support"]


@dataclass
class BraggResult:
    """Reconstruction (host arrays; identical on every rank).

    Attributes
    ----------
    obj : (S1, S2, S3) complex64
        ρ on the reconstruction-frame object grid.
    probe : (M1, M2) complex64
        Transverse probe.
    background : (N1, N2, N3) float32 or None
        b(q), FFT order, up-sampled grid.
    support : (S1, S2, S3) bool
    error : (n_iter + n_ml,) float64
        Σ ω (I^{1/2} − h^{1/2})² / Σ ω I per iteration.
    geometry : BraggGeometry
        Up-sampled reconstruction geometry.
    scan : ScanFrame
    probe_spacing_m : (float, float)
    seconds_per_iteration : float
    illumination : (S1, S2, S3) float32
        Σ_j |P_j|² of the last joint iteration (where ρ is constrained by data).
    timing : dict
        Seconds of the joint iterations spent on this rank's positions (``positions``,
        the part that parallelises), on its rows of the object update (``object_update``),
        on the probe update (``probe_update``, the same on every rank), in the collectives
        (``allreduce``, including waiting for other ranks) and in ``total``.
    """

    obj: np.ndarray
    probe: np.ndarray
    background: np.ndarray | None
    support: np.ndarray
    error: np.ndarray
    geometry: BraggGeometry
    scan: ScanFrame
    probe_spacing_m: tuple
    seconds_per_iteration: float
    illumination: np.ndarray | None = None
    timing: dict | None = None


def fit_probe(probe, shape):
    """Centre-crop or zero-pad a transverse probe (M1, M2) to ``shape`` (same spacing)."""
    p = np.asarray(probe)
    out = np.zeros(shape, dtype=np.complex64)
    src, dst = [], []
    for n_in, n_out in zip(p.shape, shape):
        c_in, c_out = n_in // 2, n_out // 2
        lo = min(c_in, c_out)
        hi = min(n_in - c_in, n_out - c_out)
        src.append(slice(c_in - lo, c_in + hi))
        dst.append(slice(c_out - lo, c_out + hi))
    out[tuple(dst)] = p[tuple(src)]
    return out


def slab_support(geometry: BraggGeometry, scan: ScanFrame, thickness_m, center_m, tilt_rad=(0.0, 0.0), lab=None):
    """Tilted-slab support on the object grid: |n̂·(r − c)| ≤ T/2, (S1, S2, S3) bool.

    n̂ = R_y(t_y) R_x(t_x) ẑ (right-handed rotations about the lab axes, as the
    seed's 5.5° / −2° slab tilts).
    """
    tx, ty = tilt_rad
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    normal = ry @ rx @ np.array([0.0, 0.0, 1.0])
    if lab is None:
        lab = object_lab_coordinates(geometry, scan)
    return np.abs((lab - np.asarray(center_m)) @ normal) <= thickness_m / 2


def object_lab_coordinates(geometry: BraggGeometry, scan: ScanFrame) -> np.ndarray:
    """Lab position (m) of every object voxel, (S1, S2, S3, 3)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in scan.object_shape], indexing="ij"), -1) + scan.origin
    return geometry.r_to_lab(grid)


def _fourier_mask(shape, spacing, wavelength, na, xp):
    f1 = np.abs(np.fft.fftfreq(shape[0], spacing[0]))[:, None]
    f2 = np.abs(np.fft.fftfreq(shape[1], spacing[1]))[None, :]
    m = (f1 <= 1.5 * na[0] / wavelength) & (f2 <= 1.5 * na[1] / wavelength)
    return xp.asarray(m.astype(np.float32))


def _add_windows(box, corners, values) -> None:
    """``box[c : c + window] += values[j]`` for each window j (corners (b, 3) int, relative to the box).

    The adjoint of window extraction for windows that are blocks of the grid. A strided block
    add per window costs O(window); a scatter-add (bincount) over the box costs O(box) whatever
    the number of windows, which each MPI rank would pay in full for its one or two positions.
    The loop runs over the few positions of one rank's share of a mini-batch.
    """
    n1, n2, n3 = values.shape[1:]
    for (c1, c2, c3), v in zip(np.asarray(corners, dtype=int), values):
        box[c1:c1 + n1, c2:c2 + n2, c3:c3 + n3] += v


def reconstruct(data, mask, geometry: BraggGeometry, positions_m, probe_init, probe_spacing_m,
                params: BraggParams | None = None, support=None, comm=None, xp: ModuleType = np,
                callback=None) -> BraggResult:
    """Reconstruct ρ, P and b from a 3D Bragg-ptychography scan.

    Parameters
    ----------
    data : ndarray, (J, N1, N2, n3) float
        Measured counts, centred (q = 0 at index N//2), measured angles only.
        Every rank passes the full array (only its own positions are read) or a
        callable ``idx -> (len(idx), N1, N2, n3)`` for lazy reading.
    mask : ndarray, (N1, N2, n3) bool or None
        True = valid pixel (False: gaps, hot pixels; left free).
    geometry : BraggGeometry
        Measured grid (its step is the measured rocking step).
    positions_m : ndarray, (J, 3)
        Beam points on the film (lab frame, m).
    probe_init : ndarray, (M1, M2) complex
        Initial transverse probe on ``probe_spacing_m`` (cropped/padded to the solver's grid).
    probe_spacing_m : (float, float)
    params : BraggParams
    support : ndarray (S1, S2, S3) bool or None
        Fixed support on the up-sampled object grid; None = tilted slab schedule.
    comm : mpi4py communicator or None
        Positions are split over its ranks; None = serial.
    xp : module
        numpy or cupy.
    callback : callable(iteration, obj, probe) or None

    Returns
    -------
    BraggResult

    Raises
    ------
    ValueError
        Shapes of data, mask and positions disagree with the geometry.
    """
    p = params or BraggParams()
    allreduce = Allreduce(comm)
    rank = 0 if comm is None else comm.Get_rank()
    size = 1 if comm is None else comm.Get_size()
    positions_m = np.asarray(positions_m, dtype=np.float64)
    n_pos = len(positions_m)
    n1, n2, n_meas = geometry.shape
    get = data if callable(data) else (lambda idx: np.asarray(data)[idx])
    if not callable(data) and np.shape(data) != (n_pos, n1, n2, n_meas):
        raise ValueError(f"data shape {np.shape(data)} != (J, N1, N2, n3) = {(n_pos, n1, n2, n_meas)}")
    if mask is None:
        mask = np.ones((n1, n2, n_meas), dtype=bool)
    if np.shape(mask) != (n1, n2, n_meas):
        raise ValueError(f"mask shape {np.shape(mask)} != {(n1, n2, n_meas)}")

    up = int(p.upsampling)
    g = geometry.upsampled(up)
    n3 = g.shape[2]
    off = n3 // 2 - up * (n_meas // 2)   # fine index of measured plane 0 (q3 = 0 stays a measured plane)
    scan = ScanFrame.from_positions(g, positions_m)
    pshape, pspacing = probe_grid(g, spacing_m=probe_spacing_m)
    # padded to FFT-friendly lengths for the Fourier mask: a prime length (67 here) costs 3× a
    # 2·5·7 one (pocketfft's Bluestein path)
    pshape = tuple(scipy.fft.next_fast_len(int(s)) for s in pshape)
    op = ProbeOperator(g, pshape, pspacing, xp=xp)
    shear = shear_phase(g, xp)

    # ω(q): 1 on measured, unmasked pixels of measured angles; 0 on virtual angles (eq. 13)
    omega_c = np.zeros(g.shape, dtype=np.float32)
    omega_c[..., off:off + up * n_meas:up] = mask
    omega = xp.asarray(np.fft.ifftshift(omega_c))

    # global mini-batches (position j → batch j mod K, so each batch spans the scan), each split over
    # the ranks: the update sequence is then the same for any number of ranks
    n_batches = n_pos if p.n_batches <= 0 else min(int(p.n_batches), n_pos)
    global_batches = [np.arange(k, n_pos, n_batches) for k in range(n_batches)]
    batches = [np.array_split(gb, size)[rank] for gb in global_batches]
    # each batch only touches the bounding box of its windows (same box on every rank): its sums,
    # Allreduce and update are restricted to that box, which keeps the serial part small
    boxes = []
    for gb in global_batches:
        lo = scan.corners[gb].min(axis=0)
        hi = scan.corners[gb].max(axis=0) + np.asarray(g.shape)
        boxes.append(tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)))
    def make_batch(k):
        """(probe tables, object indices, box indices, √I) of this rank's share of batch k, or None."""
        b = batches[k]
        if len(b) == 0:
            return None
        full = np.zeros((len(b), *g.shape), dtype=np.float32)
        full[..., off:off + up * n_meas:up] = np.maximum(np.asarray(get(b), dtype=np.float32), 0)
        si = xp.asarray(np.sqrt(np.fft.ifftshift(full, axes=(-3, -2, -1))))
        # windows are blocks of the object grid: their corners relative to the box place them
        box_corners = np.asarray(scan.corners[b]) - np.array([sl.start for sl in boxes[k]])
        return op.prepare(scan.offsets[b]), scan.flat_index(b, g.shape, xp), box_corners, si

    # cached: ~50 bytes per window voxel and position; at the seed's size (4·10⁶ voxels per window)
    # set cache_batches=False to rebuild them each time (cheap next to the FFTs)
    cache = {}

    def batch(k):
        if k in cache:
            return cache[k]
        item = make_batch(k)
        if p.cache_batches:
            cache[k] = item
        return item

    norm = 0.0
    for k in range(n_batches):
        item = batch(k)
        if item is not None:
            norm += float(xp.sum(omega * item[3] ** 2))
    norm = float(allreduce(np.array([norm]))[0])

    probe = xp.asarray(fit_probe(probe_init, pshape))
    fmask = None if p.probe_mask_na is None else _fourier_mask(pshape, pspacing, g.wavelength_m, p.probe_mask_na, xp)
    lab = object_lab_coordinates(g, scan)
    fixed_support = support is not None
    if fixed_support:
        supp = np.asarray(support, dtype=bool)
        if supp.shape != scan.object_shape:
            raise ValueError(f"support shape {supp.shape} != object grid {scan.object_shape}")
    else:
        supp = slab_support(g, scan, p.thickness_schedule[0][1], p.slab_center_m, p.slab_tilt_rad, lab)
    thick_now = p.thickness_schedule[0][1]
    if np.ndim(p.object_init) == 3:      # an explicit start (e.g. a previous run)
        obj = xp.asarray(np.asarray(p.object_init, dtype=np.complex64))
    else:
        obj = xp.asarray((supp * p.object_init).astype(np.complex64))
    bg = None if p.background is None else xp.asarray(np.full(g.shape, p.background, np.float32)) * omega

    # how many windows cover each voxel (for the β|P|²_max and μ_j terms of eq. 9)
    # and each batch's max of Σ_j |P_j|² (|P|²_max of eq. 9 for a batch); it is refreshed every
    # iteration from the rows' maxima that ride on the Allgatherv, so it lags the probe by one
    # iteration (exact while the probe is fixed) and costs no extra synchronisation
    cover_b, den_max = [], []
    cover = xp.zeros(scan.object_shape, dtype=np.float64)
    for k, bx in enumerate(boxes):
        bshape = tuple(sl.stop - sl.start for sl in bx)
        c = xp.zeros((2, *bshape), dtype=np.float64)
        item = batch(k)
        if item is not None:
            _add_windows(c[0], item[2], xp.ones((len(item[2]), *g.shape), dtype=np.float64))
            _add_windows(c[1], item[2], xp.abs(op.forward(probe, item[0])) ** 2)
        c = xp.asarray(allreduce(backend.to_host(c) if comm is not None else c))
        cover_b.append(c[0])
        den_max.append(float(xp.max(c[1])))
        cover[bx] += cover_b[-1]
    cover_b = [c.astype(np.float32) for c in cover_b]
    vec_max = 1 + 3 * int(np.prod(pshape)) + (int(np.prod(g.shape)) if bg is not None else 0)
    exchange = batch_exchange(comm, boxes, scan.object_shape, vec_max, xp, p.exchange)
    obj = exchange.object(obj)
    outside = xp.asarray((~supp).astype(np.float32))     # 1 − S(r) of eqs. (7), (9)
    out_cov = {}                                         # per batch: outside · coverage on its box

    errors = []
    illum = None
    timing = {"positions": 0.0, "allreduce": 0.0, "object_update": 0.0, "probe_update": 0.0}
    t_start = time.perf_counter()

    def sweep(k, obj, probe, bg, want_probe, want_bg):
        """Sums of mini-batch k over this rank's positions: (object numerator, denominator) in the
        exchange's buffers and a float32 vector (error, probe sums, background ratio)."""
        t_in = time.perf_counter()
        num_o, den_o = exchange.buffers(k)
        num_p = xp.zeros(pshape, dtype=np.complex64)     # a rank's few positions: float32 suffices
        den_p = xp.zeros(pshape, dtype=np.float32)
        b_num = xp.zeros(g.shape, dtype=np.float64) if want_bg else None
        err = 0.0
        for tab, fi, bi, si in [item for item in [batch(k)] if item is not None]:
            pr = op.forward(probe, tab)
            ob = extract_patches(obj, fi)
            psi = pr * ob
            big = bragg_fftn(psi, shear)
            amp = xp.abs(big)
            h = amp**2 if bg is None else amp**2 + bg
            sq = xp.sqrt(h)
            err += float(xp.sum(omega * (si - sq) ** 2))
            corr = (amp + omega * (si - amp)) / xp.maximum(sq, 1e-12)      # eq. (13)
            dpsi = bragg_ifftn(big * corr.astype(np.float32), shear) - psi
            _add_windows(num_o, bi, xp.conj(pr) * dpsi)
            _add_windows(den_o, bi, xp.abs(pr) ** 2)
            if want_probe:
                op.adjoint(xp.conj(ob) * dpsi, tab, out=num_p)
                op.adjoint(xp.abs(ob) ** 2, tab, out=den_p)
            if want_bg:
                b_num += xp.sum(omega * si / xp.maximum(sq, 1e-12), axis=0)
        timing["positions"] += time.perf_counter() - t_in
        # probe sums and scalars travel with the object sums (one collective): float32 on the wire
        vec = [np.array([err], dtype=np.float32)]
        if want_probe:
            vec += [backend.to_host(num_p).view(np.float32).ravel(), backend.to_host(den_p).ravel()]
        if want_bg:
            vec.append(backend.to_host(b_num).astype(np.float32).ravel())
        return num_o, den_o, np.concatenate(vec)

    def unpack(vec, want_probe, want_bg):
        """(err, num_p, den_p, b_num) from the summed vector of :func:`sweep`."""
        n_p = int(np.prod(pshape))
        err, pos = float(vec[0]), 1
        num_p = den_p = b_num = None
        if want_probe:
            num_p = xp.asarray(vec[pos:pos + 2 * n_p].view(np.complex64).reshape(pshape))
            den_p = xp.asarray(vec[pos + 2 * n_p:pos + 3 * n_p].reshape(pshape))
            pos += 3 * n_p
        if want_bg:
            b_num = xp.asarray(vec[pos:].reshape(g.shape))
        return err, num_p, den_p, b_num

    for it in range(p.n_iter):
        thick = [t for start, t in p.thickness_schedule if start <= it][-1]
        if not fixed_support and thick != thick_now:      # next stage of the growing slab
            new = slab_support(g, scan, thick, p.slab_center_m, p.slab_tilt_rad, lab)
            if p.shrinkwrap is not None and it >= p.shrinkwrap[0]:
                new &= supp
            supp, thick_now = new, thick
            outside = xp.asarray((~supp).astype(np.float32))
            out_cov.clear()
        want_probe = p.update_probe and it >= p.probe_start
        want_bg = bg is not None and p.gamma > 0
        err_it, ratio = 0.0, 0.0
        last = it == p.n_iter - 1
        if last:
            illum = xp.zeros(scan.object_shape, dtype=np.float64)
        for k in range(n_batches):
            num_o, den_o, vec = sweep(k, obj, probe, bg, want_probe, want_bg)
            t0 = time.perf_counter()
            num_o, den_o, (r0, r1), vec_part = exchange.reduce(k, num_o, den_o, vec)
            timing["allreduce"] += time.perf_counter() - t0
            bx = boxes[k]
            # the object update is split by rows of the batch's box: each rank updates its rows
            # (the sums arrive already split, reduce-scatter) and the rows are gathered back
            rows = (slice(bx[0].start + r0, bx[0].start + r1), bx[1], bx[2])
            if last:
                illum[rows] += den_o
            # object, eqs. (5), (7), (9) summed over the batch's positions; |P|²_max of eq. (9) is the
            # max of the batch's summed illumination (= |P_j|²_max for a batch of one position)
            # (in place, single precision: this part runs on every rank's rows for every batch)
            t_upd = time.perf_counter()
            row_max = float(xp.max(den_o)) if den_o.size else 0.0
            lam = den_o      # this batch's own array (sweep made it): updated in place
            pmax = float(xp.max(xp.abs(probe)) ** 2)
            ob = obj[rows]
            if k not in out_cov:      # (1 − S)·coverage on the box; changes only with the support
                out_cov[k] = outside[bx] * cover_b[k]
            out_s = out_cov[k][r0:r1] * np.float32(p.mu * pmax)
            lam *= np.float32(1 - p.beta)
            lam += np.float32(p.beta * den_max[k])
            lam += out_s
            xp.maximum(lam, np.float32(1e-30), out=lam)
            # voxels outside the batch's windows have num = 0 and coverage 0, hence step 0
            upd = num_o
            upd -= out_s * ob
            upd /= lam
            upd += ob
            t0 = time.perf_counter()
            timing["object_update"] += t0 - t_upd
            vec, den_max[k] = exchange.commit(k, obj, upd, (r0, r1), vec_part, len(vec), row_max)
            timing["allreduce"] += time.perf_counter() - t0
            err, num_p, den_p, b_num = unpack(vec, want_probe, want_bg)
            err_it += err
            # probe, eqs. (6), (8), (10) in the k_i-invariant subspace
            t0 = time.perf_counter()
            if want_probe:
                lam_p = (1 - p.alpha) * den_p + p.alpha * xp.max(den_p)
                probe = (probe + num_p / xp.maximum(lam_p, 1e-30)).astype(np.complex64)
            timing["probe_update"] += time.perf_counter() - t0
            if want_bg:
                ratio = ratio + b_num
        errors.append(err_it / max(norm, 1e-30))
        if want_probe and fmask is not None:
            # the Fourier-space mask, once per iteration as in the seed's Methods ("for each iteration")
            t0 = time.perf_counter()
            probe = backend.ifft2(backend.fft2(probe) * fmask).astype(np.complex64)
            timing["probe_update"] += time.perf_counter() - t0
        if want_bg:   # eq. (11), with the ratio averaged over all positions
            bg = (bg * ((1 - p.gamma) + p.gamma * ratio / n_pos) ** 2).astype(np.float32) * omega
        if (p.shrinkwrap is not None and p.shrinkwrap[0] <= it < p.shrinkwrap[1]
                and (it - p.shrinkwrap[0]) % p.shrinkwrap_every == 0):
            a = backend.to_host(xp.abs(obj))
            supp = supp & (a >= p.shrinkwrap_threshold * a.max())
            exchange.mask_object(obj, xp.asarray(supp))
            outside = xp.asarray((~supp).astype(np.float32))
            out_cov.clear()
        if callback is not None:
            callback(it, obj, probe)

    if illum is not None:   # each rank summed the rows it updated
        illum = xp.asarray(allreduce(backend.to_host(illum) if comm is not None else illum))
    if p.n_ml > 0:
        obj, ml_err = _ml_refine(obj, probe, bg, p.n_ml, [batch(k) for k in range(n_batches)], omega, op, shear, scan,
                                 xp, allreduce, norm, supp, cover, p.mu, p.beta)
        errors.extend(ml_err)
    total = time.perf_counter() - t_start
    spi = total / max(p.n_iter + 2 * p.n_ml, 1)
    timing["total"] = total
    return BraggResult(exchange.result(obj), backend.to_host(probe).astype(np.complex64),
                       None if bg is None else backend.to_host(bg), supp, np.asarray(errors), g, scan, pspacing,
                       spi, None if illum is None else backend.to_host(illum).astype(np.float32), timing)


def _ml_refine(obj, probe, bg, n_ml, items, omega, op, shear, scan, xp, allreduce, norm,
               supp, cover, mu, beta):
    """Gaussian-amplitude ML refinement of ρ by preconditioned Polak–Ribière CG.

    L(ρ) = Σ_j Σ_q ω (h_j^{1/2} − I_j^{1/2})² + μ Σ_{S̄} |ρ|²; ∂L/∂ρ* = −Σ_j P_j* F⁻¹[ω (I^{1/2}/h^{1/2} − 1) Ψ_j]
    + μ S̄ ρ (the gradient of seed eq. 4 with ω = 1 on measured pixels; CG as in
    Thibault & Guizar-Sicairos 2012). The step length along the direction d is the
    secant (Newton) step from the directional derivatives at 0 and ε. The
    preconditioner is the joint step's regularised illumination
    1/((1 − β) Σ|P_j|² + β max Σ|P_j|²) (eq. 9): with 1/Σ|P_j|² alone, voxels
    of the support that the beam barely reaches (10⁻⁹–10⁻⁶ of the maximum)
    drifted to |ρ| = 6–300 (the data barely constrain them), and the
    noise-free strain RMSE was 6.5e-6 against 5.3e-6 now (floor 5.2e-6).
    """
    pmax = float(xp.max(xp.abs(probe)) ** 2)
    reg = xp.asarray(~supp) * (mu * pmax) * cover

    def grad(o):
        gsum = xp.zeros(scan.object_shape, dtype=np.complex128)
        den = xp.zeros(scan.object_shape, dtype=np.float64)
        err = 0.0
        for tab, fi, _, si in [item for item in items if item is not None]:
            pr = op.forward(probe, tab)
            psi = pr * extract_patches(o, fi)
            big = bragg_fftn(psi, shear)
            amp2 = (big * big.conj()).real
            sq = xp.sqrt(amp2 if bg is None else amp2 + bg)
            err += float(xp.sum(omega * (si - sq) ** 2))
            w = omega * (1 - si / xp.maximum(sq, 1e-12))
            back = bragg_ifftn(big * w.astype(np.float32), shear)
            backend.scatter_add(gsum, fi, (xp.conj(pr) * back).astype(np.complex128))
            backend.scatter_add(den, fi, (xp.abs(pr) ** 2).astype(np.float64))
        gsum, den, e = [xp.asarray(allreduce(backend.to_host(a) if allreduce.comm is not None else a))
                        for a in (gsum, den, np.array([err]))]
        return gsum + reg * o, den + reg, float(backend.to_host(e)[0])

    errors = []
    g_old = d = None
    o = obj.astype(np.complex128)
    for _ in range(n_ml):
        gr, den, err = grad(o)
        errors.append(err / max(norm, 1e-30))
        dmax = float(xp.max(den))
        pre = xp.where(cover > 0, 1 / ((1 - beta) * den + beta * dmax), 0)
        z = gr * pre
        if d is None:
            d = -z
        else:
            pr = max(0.0, float(xp.real(xp.vdot(gr, z - z_old))) / max(float(xp.real(xp.vdot(g_old, z_old))), 1e-300))
            d = -z + pr * d         # Polak–Ribière
        g_old, z_old = gr, z
        eps = 1e-3
        g_eps, _, _ = grad(o + eps * d)
        s0 = float(xp.real(xp.vdot(gr, d)))
        s1 = float(xp.real(xp.vdot(g_eps, d)))
        curv = (s1 - s0) / eps
        if curv <= 0 or s0 >= 0:
            d = -z
            s0 = float(xp.real(xp.vdot(gr, d)))
            t = 0.5
        else:
            t = -s0 / curv
        o = o + t * d
    return o.astype(np.complex64), errors
