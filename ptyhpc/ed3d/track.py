"""Tracking particles through a tilt series: scan drift removed, then trackpy linking with gap closing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Tracks", "track_particles"]


@dataclass
class Tracks:
    """One track per particle.

    ``table``: pandas DataFrame with columns ``particle, item, y_px, x_px, region, isolated`` —
    (y, x) in each scan's own frame (drift included), ``region`` the region index in that item's
    segmentation. ``drift_px`` (n_items, 2): scan drift (row, col) of each item w.r.t. item 0.
    ``agglomerates``: rows ``(item, region)`` of regions that touch another one (not used).
    """

    table: object
    drift_px: np.ndarray
    agglomerates: list


def track_particles(regions, adf_images, *, search_range_px: float = 3.0, memory: int = 3,
                    min_length: int = 3, drift_max_shift_px: float = 3.0, predict: bool = True) -> Tracks:
    """Link the segmented regions of every item into particle tracks.

    Parameters
    ----------
    regions : list of :class:`ptyhpc.ed3d.detect.Regions`
        One per item, in tilt order.
    adf_images : ndarray (n_items, scan_y, scan_x)
        Used to measure the scan drift between items (:func:`ptyhpc.stem.lowdose.measure_drift`).
    search_range_px : float
        Largest move of a particle between linked items after drift removal (scan px).
    memory : int
        Items a particle may be missing (overlapped, segmented away) and still keep its track.
    min_length : int
        Shorter tracks are dropped.
    predict : bool
        Projected-position model: predict each particle from its recent velocity
        (``trackpy.predict.NearestVelocityPredict``), since rotation about the tilt axis moves
        particles steadily along x; False: nearest-neighbour linking about the last position.

    Returns
    -------
    Tracks
        Particles numbered 0.. in order of their first appearance, then row.
    """
    import pandas as pd  # noqa: PLC0415
    import trackpy  # noqa: PLC0415

    from ..stem.lowdose import measure_drift  # noqa: PLC0415

    trackpy.quiet()
    drift = measure_drift(np.asarray(adf_images, float), max_shift_px=drift_max_shift_px) \
        if len(adf_images) > 1 else np.zeros((1, 2))
    rows, agg = [], []
    for k, r in enumerate(regions):
        for j in range(len(r.area)):
            if not r.isolated[j]:
                agg.append((k, j))
            rows.append({"frame": k, "y": r.centroid[j, 0] - drift[k, 0], "x": r.centroid[j, 1] - drift[k, 1],
                         "y_px": r.centroid[j, 0], "x_px": r.centroid[j, 1], "region": j,
                         "isolated": bool(r.isolated[j])})
    cols = ["particle", "item", "y_px", "x_px", "region", "isolated"]
    if not rows:
        return Tracks(pd.DataFrame(columns=cols), drift, agg)
    if predict:
        # Rotation about the tilt axis moves a particle by ≈ z·Δθ along x per step (nearly constant at
        # fine steps): each particle's position is predicted from its recent velocity before linking.
        from trackpy.predict import NearestVelocityPredict  # noqa: PLC0415

        linked = NearestVelocityPredict(span=2).link_df(pd.DataFrame(rows), search_range_px, memory=memory)
    else:
        linked = trackpy.link(pd.DataFrame(rows), search_range=search_range_px, memory=memory)
    size = linked.groupby("particle")["frame"].transform("size")
    linked = linked[size >= min_length]
    first = linked.groupby("particle").agg(f=("frame", "min"), y=("y", "mean"))
    order = {p: n for n, p in enumerate(first.sort_values(["f", "y"]).index)}
    linked = linked.assign(particle=linked["particle"].map(order), item=linked["frame"])
    return Tracks(linked[cols].sort_values(["particle", "item"]).reset_index(drop=True), drift, agg)
