"""Stores written by the current ingest code against those of a reference commit: identical or not.

Each case ingests the same input files twice, once with this tree's code and once with the reference code
(``--ref``: a folder holding an older checkout, e.g. made by
``git archive ee52045 | tar -x -C /tmp/ref_readers``), each in its own Python process, then compares the
two stores: the set of arrays and groups; every array's values, dtype, shape, chunks, shards, codecs,
fill value, dimension names and attributes (the whole ``zarr.json``); and the root attributes. Nothing is
excluded: both ingests read the same input paths, so even ``source_files`` must agree.

Cases: the bundled CNT tilt series (``hdf5-tilt``), the PETRA III P25 CXI scan (near field), a generated
CXI energy stack (:func:`ptyhpc.sim.spectro.simulate_energy_stack`; with and without a dark), a generated
per-energy HDF5 stack (``hdf5-tilt --kind energy_stack``), a two-entry NeXus NXptycho file and a generic
HDF5 file + spec (writers of ``tests/test_readers.py``), and the tiny MIB (single and quad chip, and a
two-scan tilt series), EMPAD and ARINA files of ``tests/_stem_files.py``.

Usage::

    python benchmarks/ingest_equivalence.py --ref /tmp/ref_readers [--ref-commit ee52045] [--work DIR]

Prints one JSON line per case: ``{"case", "ref_commit", "identical", "arrays", "differences"}``; exit
status 1 when any case differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
STEM_CAL = dict(beam_energy_eV=200e3, convergence_semiangle_rad=0.02, scan_step_m=5e-11,
                reciprocal_sampling_inv_m=2e8)

# Each case: (name, files, ingest_files keywords). Calibration is passed as a dict (recipe form).
INGEST = """
import json, sys, warnings
warnings.simplefilter("ignore")
import ptyhpc
from ptyhpc.io.readers import ingest_files
files, out, kw, code_root = json.loads(sys.argv[1])
assert ptyhpc.__file__.startswith(code_root), (ptyhpc.__file__, code_root)   # the code meant, not another copy
ingest_files(files, out, progress=False, **kw)
"""


def make_inputs(work: Path) -> list[tuple[str, list[str], dict]]:
    """Write the generated inputs under ``work`` and return the cases."""
    sys.path.insert(0, str(HERE / "tests"))
    from _stem_files import write_arina, write_empad, write_mib  # noqa: PLC0415

    from ptyhpc.sim.spectro import simulate_energy_stack  # noqa: PLC0415

    cases = [
        ("cnt_tilt_series", sorted(str(p) for p in (DATA / "cnt_tilt_series").glob("tilt_*.h5")), {}),
        ("petra3_p25_cxi_near_field", [str(DATA / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi")],
         {"fmt": "cxi", "regime": "near_field", "focus_to_sample_m": 3.65e-3}),
    ]
    sim = simulate_energy_stack(work / "spectro", items=((700.0, "CR"), (707.0, "CR"), (707.0, "CL")), det=32)
    cxi = sorted(str(p) for p in (work / "spectro").glob("item_*.cxi"))
    cases.append(("energy_stack_cxi", cxi, {}))
    cases.append(("energy_stack_cxi_dark", cxi, {"dark": str(work / "spectro" / "dark.h5") + ":/dark"}))
    del sim
    cases.append(("energy_stack_hdf5", _xray_files(work / "xray"), {"kind": "energy_stack"}))

    cases += _scan_format_cases(work / "scans")

    rng = np.random.default_rng(0)
    stem = work / "stem"
    stem.mkdir()
    for quad in (False, True):
        mib = write_mib(stem / f"scan{int(quad)}.mib", rng.poisson(5, (12, 16, 20)).astype(np.uint16), quad=quad,
                        scan_x=4)
        cases.append((f"mib{'_quad' if quad else ''}", [str(mib)], {"calibration": STEM_CAL}))
    tilt = [str(write_mib(stem / f"t{k}.mib", rng.poisson(5, (6, 8, 8)).astype(np.uint16), scan_x=3))
            for k in range(2)]
    cases.append(("mib_two_scans", tilt, {"fmt": "mib", "calibration": {**STEM_CAL, "tilt_angles_rad": [0.2, -0.1]}}))
    (stem / "empad").mkdir()
    xml = write_empad(stem / "empad", rng.random((3, 4, 128, 128)).astype(np.float32), high_voltage_eV=200e3,
                      fov_m=4 * 5e-11)
    cases.append(("empad", [str(xml)], {"fmt": "empad", "calibration": {
        k: v for k, v in STEM_CAL.items() if k not in ("beam_energy_eV", "scan_step_m")}}))
    (stem / "arina").mkdir()
    master = write_arina(stem / "arina", rng.poisson(5, (9, 16, 16)).astype(np.uint16), per_file=4,
                         wavelength_A=0.025079)
    cases.append(("arina", [str(master)], {"calibration": {k: v for k, v in STEM_CAL.items()
                                                            if k != "beam_energy_eV"}}))
    return cases


def _scan_format_cases(folder: Path) -> list[tuple[str, list[str], dict]]:
    """A NeXus NXptycho file (two entries) and a generic HDF5 file + spec (with the spec's dark), as in
    tests/test_readers.py."""
    from test_readers import _generic_file, _spec, write_nxptycho  # noqa: PLC0415

    folder.mkdir()
    rng = np.random.default_rng(2)
    pos = np.stack(np.meshgrid(np.arange(4.0), np.arange(3.0)), -1).reshape(-1, 2) * 2e-7
    nx = folder / "scan.nxs"
    for k, entry in enumerate(("entry_a", "entry_b")):
        write_nxptycho(nx, rng.poisson(20, (12, 16, 16)).astype(np.uint16), pos + k * 1e-8, entry=entry,
                       energy=(12.4 + k, "keV"))
    gen = _generic_file(folder / "beamline.h5", rng.poisson(20, (12, 16, 16)).astype(np.uint16), pos[:, 1],
                        pos[:, 0])
    spec = _spec(folder, dark="/scan_0042/calib/dark_stack")
    return [("nexus_two_entries", [str(nx)], {"probe_semiangle_rad": 2e-3, "defocus_m": 1e-4}),
            ("generic_spec_dark", [str(gen)], {"spec": str(spec)}),
            ("generic_spec_near_field", [str(gen)], {"spec": str(spec), "regime": "near_field",
                                                     "focus_to_sample_m": 1e-3})]


def _xray_files(folder: Path) -> list[str]:
    """Three per-energy HDF5 files in the layout of :mod:`ptyhpc.io.energy` (Poisson counts, no physics)."""
    import h5py  # noqa: PLC0415

    folder.mkdir()
    rng = np.random.default_rng(1)
    out = []
    for k, (energy, pol) in enumerate(((700.0, "C+"), (704.0, "C+"), (704.0, "C-"))):
        path = folder / f"energy_{k:03d}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("entry/data/counts", data=rng.poisson(50, (5, 6, 32, 32)).astype(np.uint32))
            inst = f.create_group("entry/instrument")
            inst.attrs.update({"photon_energy_eV": energy, "polarisation": pol, "detector_distance_m": 0.5,
                               "detector_pixel_size_m": [30e-6, 30e-6], "probe_semiangle_rad": 5e-3,
                               "defocus_m": 5e-6, "scan_origin_m": [0.0, 0.0], "scan_step_m": 60e-9,
                               "tilt_angle_deg": 0.0})
        out.append(str(path))
    return out


def run_ingest(code_root: Path, files: list[str], out: Path, kw: dict) -> str | None:
    """Ingest in a fresh process with ``code_root`` first on the path; the error text or None."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "MPLBACKEND": "Agg"}
    # cwd: the output's folder, never a source tree (``python -c`` puts the cwd first on sys.path).
    payload = json.dumps([files, str(out), kw, str(code_root.resolve())])
    r = subprocess.run([sys.executable, "-c", INGEST, payload], env=env, capture_output=True, text=True,
                       cwd=out.parent)
    return None if r.returncode == 0 else r.stderr.strip().splitlines()[-1]


def compare(a: Path, b: Path) -> tuple[int, list[str]]:
    """(number of arrays, differences) between stores ``a`` and ``b``."""
    import zarr  # noqa: PLC0415

    diffs = []
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    if dict(ga.attrs) != dict(gb.attrs):
        keys = sorted(set(ga.attrs) | set(gb.attrs))
        diffs += [f"root attribute {k}: {ga.attrs.get(k)!r} != {gb.attrs.get(k)!r}" for k in keys
                  if ga.attrs.get(k) != gb.attrs.get(k)]
    names_a = {n for n, _ in ga.members(max_depth=None)}
    names_b = {n for n, _ in gb.members(max_depth=None)}
    if names_a != names_b:
        diffs.append(f"members differ: only in new {sorted(names_a - names_b)}, "
                     f"only in ref {sorted(names_b - names_a)}")
    n = 0
    for name in sorted(names_a & names_b):
        xa, xb = ga[name], gb[name]
        if isinstance(xa, zarr.Group) != isinstance(xb, zarr.Group):
            diffs.append(f"{name}: group in one store, array in the other")
            continue
        meta_a = json.loads((a / name / "zarr.json").read_text())
        meta_b = json.loads((b / name / "zarr.json").read_text())
        if meta_a != meta_b:
            diffs.append(f"{name}: zarr.json differs: {meta_a} != {meta_b}")
        if isinstance(xa, zarr.Array):
            n += 1
            va, vb = xa[...], xb[...]
            same = va.dtype == vb.dtype and va.shape == vb.shape
            if not (same and np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")):
                diffs.append(f"{name}: values differ")
    return n, diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True, help="folder holding the reference code (ptyhpc/ inside)")
    p.add_argument("--ref-commit", default="ee52045", help="the commit the reference folder was made from")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ingest_eq_"))
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name, files, kw in make_inputs(work):
        new, ref = work / f"{name}.new.zarr", work / f"{name}.ref.zarr"
        errors = {"new": run_ingest(HERE, files, new, kw), "ref": run_ingest(args.ref, files, ref, kw)}
        if any(errors.values()):
            # The same exception class name and message (IngestError moved from io.validate to io.errors).
            same = len({None if e is None else e.split(":", 1)[0].rsplit(".", 1)[-1] + e.split(":", 1)[-1]
                        for e in errors.values()}) == 1
            line = {"case": name, "ref_commit": args.ref_commit, "identical": same, "arrays": 0,
                    "differences": [] if same else [f"errors: {errors}"], "errors": errors}
        else:
            n, diffs = compare(new, ref)
            line = {"case": name, "ref_commit": args.ref_commit, "identical": not diffs, "arrays": n,
                    "differences": diffs[:10]}
        failed += not line["identical"]
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
