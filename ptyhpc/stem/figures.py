"""PNG figures of the 4D-STEM stage: virtual images, CoM vector field, iCOM/SSB phase, virtual diffraction, drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.layout import STEM, STEM_STATUS

__all__ = ["stem_figures"]


def stem_figures(group, out_dir) -> list[Path]:
    """Write ``stem_virtual.png``, ``stem_com.png``, ``stem_phase.png``, ``stem_diffraction.png`` (item 0) and
    ``stem_drift.png`` (multi-item stores with drift); returns the paths written."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = group[STEM]
    if not (np.asarray(group[STEM_STATUS][...]) == 1).any():
        return []
    item = int(np.argmax(np.asarray(group[STEM_STATUS][...]) == 1))
    step = res["dose"].attrs["pixel_size_m"]
    sy, sx = res["dose"].shape[1:]
    ext = [0, sx * step[1] * 1e10, sy * step[0] * 1e10, 0]
    written = []

    def save(fig, name):
        p = out_dir / name
        fig.savefig(p, dpi=80)
        plt.close(fig)
        written.append(p)

    panels = [n for n in ("bf", "abf", "adf", "dose") if n in res]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, n in zip(axes[0], panels):
        img = np.asarray(res[n][item])
        if n == "dose":
            img = img * 1e-20
        im = ax.imshow(img, cmap="gray", extent=ext)
        ax.set_title(n if n != "dose" else "dose (e/Å²)")
        ax.set_xlabel("x (Å)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    save(fig, "stem_virtual.png")
    if "dpc_x" in res:
        fig, ax = plt.subplots(figsize=(5, 5))
        dy, dx = np.asarray(res["dpc_y"][item]), np.asarray(res["dpc_x"][item])
        ax.imshow(np.hypot(dy, dx) * 1e3, cmap="magma", extent=ext)
        s = max(1, max(sy, sx) // 24)
        yy, xx = np.mgrid[0:sy:s, 0:sx:s]
        ax.quiver((xx + 0.5) * step[1] * 1e10, (yy + 0.5) * step[0] * 1e10, dx[::s, ::s], -dy[::s, ::s], color="c")
        ax.set_title(f"CoM deflection (mrad), θ = {np.degrees(res.attrs.get('scan_rotation_rad') or 0):.2f}°, "
                     f"transpose {res.attrs.get('transpose')}", fontsize=9)
        save(fig, "stem_com.png")
    phases = [n for n in ("icom", "ssb", "parallax") if n in res]
    if phases:
        fig, axes = plt.subplots(1, len(phases), figsize=(4 * len(phases), 3.6), squeeze=False)
        for ax, n in zip(axes[0], phases):
            im = ax.imshow(np.asarray(res[n][item]), cmap="gray", extent=ext)
            ax.set_title(f"{n} phase (rad)")
            fig.colorbar(im, ax=ax, shrink=0.8)
        save(fig, "stem_phase.png")
    if "vd_sum" in res:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(np.log1p(np.asarray(res["vd_sum"][item])), cmap="inferno")
        det = res["dose"].attrs.get("detector", {})
        if det:
            ax.add_patch(plt.Circle(det["centre_px"][::-1], det["bf_radius_px"], fill=False, color="c"))
        ax.set_title("virtual diffraction (log sum)")
        save(fig, "stem_diffraction.png")
    if "drift" in res:
        d = np.asarray(res["drift"][...])
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(d[:, 0], "o-", label="y")
        ax.plot(d[:, 1], "s-", label="x")
        ax.set_xlabel("item")
        ax.set_ylabel("drift (scan px)")
        ax.legend()
        save(fig, "stem_drift.png")
    return written
