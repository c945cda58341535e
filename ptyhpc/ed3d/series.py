"""Per-particle diffraction patterns: the frames inside each particle's mask, beam-centred, summed, background-subtracted.

One map-reduce pass per item (:mod:`ptyhpc.stem.mapreduce`): every frame is moved so that its own
beam centre lands on the common ``ref`` centre (batched bilinear shift on the backend array
module), then added to the sum of its label (one-hot matrix product). Label 0 is the background (frames away from every
particle), whose mean pattern × the particle's frame count is subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..stem.mapreduce import Analysis, Output

__all__ = ["LabelSum", "bilinear_shift", "particle_labels", "particle_patterns"]


@dataclass
class LabelSum(Analysis):
    """Reduce: ``sum`` (n_labels + 1, det_y, det_x) float64 and ``n`` (n_labels + 1,) of beam-centred frames per label.

    ``labels`` (n_positions,) int: −1 ignored, 0 background, k ≥ 1 particle k; ``centre``
    (n_positions, 2) each frame's beam centre (row, col) px; ``ref`` (row, col) the centre the
    patterns are moved to.
    """

    labels: np.ndarray
    centre: np.ndarray
    ref: tuple
    n_labels: int

    def outputs(self, ctx):
        return {"sum": Output("reduce", (self.n_labels + 1, *ctx.detector_shape), "float64", "sum"),
                "n": Output("reduce", (self.n_labels + 1,), "float64", "sum")}

    def process(self, frames, index, state, ctx, xp):
        lab = np.asarray(self.labels)[np.asarray(index)]
        use = np.nonzero(lab >= 0)[0]
        if not len(use):
            return {"sum": xp.zeros((self.n_labels + 1, *ctx.detector_shape)), "n": xp.zeros(self.n_labels + 1)}
        d = np.asarray(self.ref)[None] - np.asarray(self.centre)[np.asarray(index)[use]]
        moved = bilinear_shift(frames[xp.asarray(use)], xp.asarray(d), xp)
        onehot = xp.asarray((lab[use][:, None] == np.arange(self.n_labels + 1)[None]).astype(np.float64))
        s = onehot.T @ moved.reshape(len(use), -1).astype(xp.float64)
        return {"sum": s.reshape(self.n_labels + 1, *ctx.detector_shape), "n": onehot.sum(0)}


def bilinear_shift(frames, shifts, xp=np):
    """Frames (b, h, w) moved by ``shifts`` (b, 2) (row, col) px, bilinear, zero outside:
    out[r, c] = f(r − d_r, c − d_c), as ``scipy.ndimage.shift(f, d, order=1, mode="grid-constant")``; batched on xp."""
    b, h, w = frames.shape
    i = xp.floor(shifts)
    a = shifts - i
    i = i.astype(xp.int64)
    rows = xp.arange(h)[None, :] - i[:, :1]
    cols = xp.arange(w)[None, :] - i[:, 1:]
    bi = xp.arange(b)[:, None, None]

    def take(rr, cc):
        ok = ((rr >= 0) & (rr < h))[:, :, None] & ((cc >= 0) & (cc < w))[:, None, :]
        v = frames[bi, xp.clip(rr, 0, h - 1)[:, :, None], xp.clip(cc, 0, w - 1)[:, None, :]]
        return v * ok

    ar, ac = a[:, 0, None, None], a[:, 1, None, None]
    return ((1 - ar) * (1 - ac) * take(rows, cols) + ar * (1 - ac) * take(rows - 1, cols)
            + (1 - ar) * ac * take(rows, cols - 1) + ar * ac * take(rows - 1, cols - 1))


def particle_labels(regions, tracks_item, n_particles: int, guard_px: int = 2) -> np.ndarray:
    """Position labels of one item: particle k+1 inside its (isolated) region, 0 background, −1 near particles.

    ``tracks_item``: the rows of :attr:`Tracks.table` for this item.
    """
    from scipy.ndimage import binary_dilation  # noqa: PLC0415

    lab = np.full(regions.labels.shape, -1, np.int32)
    near = binary_dilation(regions.labels > 0, iterations=guard_px)
    lab[~near] = 0
    for _, row in tracks_item.iterrows():
        if row["isolated"]:
            lab[regions.labels == int(row["region"]) + 1] = int(row["particle"]) + 1
    return lab.ravel()


def particle_patterns(store, item: int, labels: np.ndarray, centres: np.ndarray, ref, n_particles: int, *,
                      client=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background-subtracted, beam-centred summed pattern of each particle in one item.

    Returns
    -------
    patterns : ndarray (n_particles, det_y, det_x) float32
        Σ frames in the mask − n·(mean background frame); zeros where the particle has no frames.
    n_frames : ndarray (n_particles,) int
    counts : ndarray (n_particles,) float64
        Raw counts summed over the particle's frames (before the background is removed).

    Raises
    ------
    ValueError
        No background frames in this scan (no particle-free area to subtract).
    """
    from ..stem.mapreduce import run_analyses  # noqa: PLC0415

    (res,) = run_analyses(store, [LabelSum(labels, np.asarray(centres).reshape(-1, 2), tuple(ref), n_particles)],
                          item=item, client=client, progress=False)
    s, n = res["sum"], res["n"]
    if n[0] == 0:
        raise ValueError(f"{store}: item {item}: no particle-free frames for the background")
    bg = s[0] / n[0]
    pats = s[1:] - n[1:, None, None] * bg[None]
    return pats.astype(np.float32), n[1:].astype(int), s[1:].sum(axis=(1, 2))
