"""Tiny 4D-STEM files in the detectors' own layouts (Merlin MIB, EMPAD, DECTRIS ARINA), for the reader tests.

Layouts as the vendors write them and rosettasciio reads them:
MIB — per frame a comma-separated ASCII header (384 bytes single chip, 768 quad; fields 4/5 width/height,
6 data type, 7 chip layout, the 4th-last a timestamp, the 3rd-last the exposure in ns) then big-endian
counts, rows stored bottom-up with respect to rosettasciio's frame (its reader flips them); an optional .hdr
gives the frames in the acquisition and per trigger (= scan_x).
EMPAD — an XML naming ``scan_x{X}_y{Y}.raw`` of float32 frames 128 wide and 130 tall (2 footer rows).
ARINA — ``*_master.h5`` whose ``entry/data/data_NNNNNN`` are external links to data files of
bitshuffle/LZ4-compressed frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_DT = {np.dtype(np.uint8): "U08", np.dtype(np.uint16): "U16", np.dtype(np.uint32): "U32"}


def write_mib(path, frames, *, quad: bool = False, scan_x: int | None = None) -> Path:
    """Write ``frames`` (n, h, w) unsigned ints, in rosettasciio's orientation, as a Merlin .mib (+ .hdr if scan_x)."""
    path = Path(path)
    frames = np.asarray(frames)
    n, h, w = frames.shape
    head_size = 768 if quad else 384
    with open(path, "wb") as f:
        for i in range(n):
            fields = ["MQ1", f"{i + 1:06d}", f"{head_size:05d}", "04" if quad else "01", f"{w:04d}", f"{h:04d}",
                      _DT[frames.dtype], "   2x2" if quad else "   1x1", "0F" if quad else "01",
                      "2026-01-01 00:00:00.000000", "0.001000", "0", "0", "0", "1.000000E+1", "5.110000E+2",
                      "2026-01-01T00:00:00.000000000Z", "1000000ns", "0"]
            head = ",".join(fields) + ","
            f.write(head.encode().ljust(head_size, b" "))
            # rosettasciio flips the rows on reading: store them flipped so that it returns ``frames``.
            f.write(np.ascontiguousarray(frames[i, ::-1]).astype(frames.dtype.newbyteorder(">")).tobytes())
    if scan_x is not None:
        path.with_suffix(".hdr").write_text(
            "HDR,\t\nTime and Date Stamp (day, mnth, yr, hr, min, s):\t01/01/2026 00:00:00\n"
            f"Chip ID:\tW0,-,-,-\nFrames in Acquisition (Number):\t{n}\nFrames per Trigger (Number):\t{scan_x}\n"
            "End\t\n")
    return path


def write_empad(folder, frames, *, high_voltage_eV: float = 300e3, fov_m: float | None = None) -> Path:
    """Write (scan_y, scan_x, 128, 128) float32 frames as an EMPAD .xml + .raw pair; returns the .xml."""
    folder = Path(folder)
    frames = np.asarray(frames, dtype="<f4")
    sy, sx = frames.shape[:2]
    raw = folder / f"scan_x{sx}_y{sy}.raw"
    full = np.zeros((sy * sx, 130, 128), "<f4")
    full[:, :128] = frames.reshape(-1, 128, 128)
    full[:, 128:] = -1.0  # footer rows carry frame metadata on the detector; must be dropped
    full.tofile(raw)
    fov = "" if fov_m is None else (f"<full_scan_field_of_view><scale_factor>0.72</scale_factor><x>{fov_m * 0.72}</x>"
                                    f"<y>{fov_m * 0.72}</y></full_scan_field_of_view>")
    xml = (f'<root name="test"><timestamp isoformat="2026-01-01T00:00:00.0"/><raw_file filename="{raw.name}"/>'
           f"<iom_measurements><scan_rotation>0.0</scan_rotation>{fov}<high_voltage>{high_voltage_eV}</high_voltage>"
           "</iom_measurements></root>")
    path = folder / f"{raw.stem}.xml"
    path.write_text(xml)
    return path


def write_arina(folder, frames, *, name: str = "scan", per_file: int = 100, wavelength_A: float | None = None,
                pixel_size_nm: float | None = None) -> Path:
    """Write (n, h, w) frames as a DECTRIS ARINA master + data files (bitshuffle/LZ4); returns the master."""
    import h5py
    import hdf5plugin

    folder = Path(folder)
    frames = np.asarray(frames)
    master = folder / f"{name}_master.h5"
    with h5py.File(master, "w") as m:
        for k, a in enumerate(range(0, len(frames), per_file)):
            data_name = f"{name}_data_{k + 1:06d}.h5"
            with h5py.File(folder / data_name, "w") as d:
                d.create_dataset("entry/data/data", data=frames[a:a + per_file],
                                 chunks=(1, *frames.shape[1:]), **hdf5plugin.Bitshuffle(cname="lz4"))
            m[f"entry/data/data_{k + 1:06d}"] = h5py.ExternalLink(data_name, "/entry/data/data")
        if wavelength_A is not None:
            m["entry/instrument/beam/incident_wavelength"] = wavelength_A
    if pixel_size_nm is not None:
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f.create_group("STEM Metadata").attrs["Pixel Size"] = [pixel_size_nm]
    return master
