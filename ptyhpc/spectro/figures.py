"""PNG figures and the region-spectra CSV of the spectro stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["spectro_figures", "region_spectra"]


def region_spectra(od_e, ph_e, labels) -> tuple[list, np.ndarray, np.ndarray]:
    """Mean OD and phase spectra per region label (> 0).

    Returns
    -------
    labels : list of int
    od : (n_regions, n_energies)
    phase : (n_regions, n_energies)
    """
    ids = [int(v) for v in np.unique(labels) if v > 0]
    od = np.array([[np.nanmean(o[labels == k]) for o in od_e] for k in ids])
    ph = np.array([[np.nanmean(p[labels == k]) for p in ph_e] for k in ids])
    return ids, od, ph


def _imshow(ax, img, extent, title, cmap="gray", **kw):
    im = ax.imshow(img, cmap=cmap, extent=extent, origin="upper", **kw)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    return im


def spectro_figures(folder: Path, arrays: dict, energies, od_e, ph_e, labels, refs) -> list[str]:
    """Write the spectro PNGs (and ``region_spectra.csv``) into ``folder``; return their paths."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from .dose import weight_factor_figure  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    attrs = arrays["optical_density"][1]
    px, org = attrs["pixel_size_m"], attrs["origin_m"]
    H, W = od_e.shape[1:]
    extent = [org[1] * 1e6, (org[1] + W * px[1]) * 1e6, (org[0] + H * px[0]) * 1e6, org[0] * 1e6]

    # OD montage, one panel per energy (polarisation-averaged).
    n = len(energies)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), dpi=110, squeeze=False)
    lo, hi = np.nanpercentile(od_e, [1, 99])
    for k, ax in enumerate(axes.ravel()):
        if k < n:
            _imshow(ax, od_e[k], extent, f"{energies[k]:.1f} eV", vmin=lo, vmax=hi)
        else:
            ax.axis("off")
    fig.suptitle("optical density (x, y in µm)", fontsize=9)
    fig.tight_layout()
    out.append(_save(fig, folder / "spectro_od_montage.png", plt))

    # Spectra of regions: CSV and PNG.
    if labels is not None:
        ids, od_r, ph_r = region_spectra(od_e, ph_e, labels)
        if ids:
            header = "energy_eV," + ",".join(f"od_region{k},phase_region{k}" for k in ids)
            table = np.column_stack([energies] + [c for k in range(len(ids)) for c in (od_r[k], ph_r[k])])
            np.savetxt(folder / "region_spectra.csv", table, delimiter=",", header=header, comments="", fmt="%.8g")
            out.append(str(folder / "region_spectra.csv"))
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
            for k, lab in enumerate(ids):
                a1.plot(energies, od_r[k], "o-", ms=3, label=f"region {lab}")
                a2.plot(energies, ph_r[k], "o-", ms=3, label=f"region {lab}")
            a1.set(xlabel="photon energy (eV)", ylabel="optical density")
            a2.set(xlabel="photon energy (eV)", ylabel="phase (rad)")
            a1.legend(fontsize=7)
            fig.tight_layout()
            out.append(_save(fig, folder / "spectro_region_spectra.png", plt))

    # RGB composite of the component thickness maps.
    if "thickness" in arrays:
        t, tattrs = arrays["thickness"]
        rgb = np.zeros((H, W, 3))
        for c in range(min(3, t.shape[0])):
            tc = np.nan_to_num(t[c])
            rgb[..., c] = tc / max(np.percentile(tc, 99.5), 1e-30)
        fig, axes = plt.subplots(1, t.shape[0] + 1, figsize=(2.6 * (t.shape[0] + 1), 2.6), dpi=110, squeeze=False)
        for c in range(t.shape[0]):
            im = _imshow(axes[0, c], t[c] * 1e9, extent, f"{tattrs['components'][c]} (nm)", cmap="viridis")
            fig.colorbar(im, ax=axes[0, c], shrink=0.7)
        _imshow(axes[0, -1], np.clip(rgb, 0, 1), extent, "RGB: " + ", ".join(tattrs["components"][:3]))
        fig.tight_layout()
        out.append(_save(fig, folder / "spectro_thickness_rgb.png", plt))

    # Dichroism maps.
    for key in ("xmcd", "xld"):
        if key in arrays:
            d, dattrs = arrays[key]
            fig, axes = plt.subplots(1, len(d), figsize=(3 * len(d), 2.8), dpi=110, squeeze=False)
            for k, ax in enumerate(axes[0]):
                v = np.nanpercentile(np.abs(d[k]), 99)
                im = _imshow(ax, d[k], extent, f"{key.upper()} {dattrs['energy_eV'][k]:.1f} eV", cmap="RdBu_r",
                             vmin=-v, vmax=v)
                fig.colorbar(im, ax=ax, shrink=0.7)
            fig.tight_layout()
            out.append(_save(fig, folder / f"spectro_{key}.png", plt))

    # Exposure map and its histogram (seed 001 Fig. 7(c-e)), and the k(d/R) curve (Fig. 7(b)).
    e, eattrs = arrays["exposures"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7, 2.9), dpi=110)
    im = _imshow(a1, e, extent, f"exposures (beam {eattrs['beam_diameter_m'] * 1e9:.0f} nm)", cmap="magma")
    fig.colorbar(im, ax=a1, shrink=0.7)
    a2.hist(e.ravel(), bins=np.arange(e.max() + 2) - 0.5, weights=np.full(e.size, 100 / e.size))
    a2.set(xlabel="exposures per point", ylabel="area (%)")
    fig.tight_layout()
    out.append(_save(fig, folder / "spectro_exposures.png", plt))
    weight_factor_figure(folder / "dose_weight_factor.png")
    out.append(str(folder / "dose_weight_factor.png"))

    # Absorbed dose map and its distribution over the analysed pixels (seed 001 Fig. 7(f)).
    if "dose_Gy" in arrays:
        d, dattrs = arrays["dose_Gy"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(7, 2.9), dpi=110)
        vals = d[np.isfinite(d)] / 1e6
        # Pixels of near-zero fitted thickness give huge, meaningless doses: scale to the 1-99 % range.
        lo, hi = np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0)
        im = _imshow(a1, d / 1e6, extent, f"dose of the stack (MGy), ρ = {dattrs['density_kg_m3']:g} kg/m³",
                     cmap="inferno", vmin=max(lo, 0.0), vmax=hi)
        fig.colorbar(im, ax=a1, shrink=0.7)
        if vals.size:
            a2.hist(np.clip(vals, lo, hi), bins=40, weights=np.full(vals.size, 100 / vals.size))
            a2.axvline(np.median(vals), color="k", lw=0.8, ls="--", label=f"median {np.median(vals):.3g} MGy")
            a2.legend(fontsize=7)
        a2.set(xlabel="dose (MGy), tails clipped to 1-99 %", ylabel="material area (%)")
        fig.tight_layout()
        out.append(_save(fig, folder / "spectro_dose.png", plt))

    # Quality per item (knife edge, sharpness, SNR; seed 001 Figs. 3, 6) and the FRC of the halves.
    if "knife_edge_m" in arrays or "frc" in arrays:
        panels = [k for k in ("knife_edge_m", "laplacian_variance", "snr", "frc") if k in arrays]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 2.8), dpi=110, squeeze=False)
        for ax, key in zip(axes[0], panels):
            v, vattrs = arrays[key]
            if key == "frc":
                ax.plot(v[0] * 1e-6, v[1], label="FRC")
                ax.plot(v[0] * 1e-6, v[2], "--", label="half-bit")
                ax.set(xlabel="spatial frequency (1/µm)", ylabel="FRC", ylim=(-0.2, 1.05),
                       title=f"item {vattrs['item']}: {vattrs['resolution_m'] * 1e9:.0f} nm half-period")
                ax.legend(fontsize=7)
            else:
                scale, label = (1e9, "knife edge 20-80 % (nm)") if key == "knife_edge_m" else \
                    (1.0, "variance of Laplacian" if key == "laplacian_variance" else "SNR of OD")
                e = np.asarray(vattrs["energy_eV"], float)
                for pol in sorted(set(vattrs["polarisation"])):
                    sel = np.array([p == pol for p in vattrs["polarisation"]])
                    ax.plot(e[sel], np.asarray(v)[sel] * scale, "o-", ms=3, label=str(pol))
                ax.set(xlabel="photon energy (eV)", ylabel=label)
                if len(set(vattrs["polarisation"])) > 1:
                    ax.legend(fontsize=7)
            ax.title.set_fontsize(8)
        fig.tight_layout()
        out.append(_save(fig, folder / "spectro_quality.png", plt))
    return out


def _save(fig, path, plt) -> str:
    fig.savefig(path)
    plt.close(fig)
    return str(path)
