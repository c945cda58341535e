"""3D ED from a simulated 4D-STEM tilt series: ingest (MIB + tilts.csv), tracking, per-particle series,
exports read back by their own libraries, unit cell and orientation against the simulator's truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ptyhpc.cli import app
from ptyhpc.ed3d.cell import cell_parameters, misorientation_deg, reduce_cell
from ptyhpc.ed3d.tilts import read_tilts_csv
from ptyhpc.io.validate import IngestError
from ptyhpc.sim.ed3d import simulate_ed3d, write_ed3d_series


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Simulate and write MIB files; ``ptyhpc run`` of a recipe (input.tilts, ed3d: section) ingests them and
    runs the 3D ED stage on 2 dask workers (once for the module)."""
    tmp = tmp_path_factory.mktemp("ed3d")
    truth = simulate_ed3d(seed=0)
    write_ed3d_series(tmp / "raw", truth)
    (tmp / "r.yaml").write_text("input:\n  files: [raw/scan_*.mib]\n  format: mib\n  tilts: raw/tilts.csv\n"
                                f"  calibration: {json.dumps(truth.calibration)}\n"
                                "store: series.zarr\ned3d: {output: out}\n")
    r = CliRunner().invoke(app, ["run", str(tmp / "r.yaml"), "--workers", "2"])
    assert r.exit_code == 0, r.output
    return truth, tmp


def _tracks(out):
    with open(out / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["particle", "tilt_deg", "y_m", "x_m"]
    return rows


@pytest.mark.slow
def test_ingest_tilt_angles(run, tmp_path):
    """``ptyhpc ingest --tilts`` (files given in reverse) and the recipe's input.tilts: items in tilt order."""
    import zarr

    truth, tmp = run
    names = [str(p) for p in sorted((tmp / "raw").glob("scan_*.mib"), reverse=True)]
    r = CliRunner().invoke(app, ["ingest", *names, "--calibration", str(tmp / "raw" / "calib.yaml"), "--tilts",
                                 str(tmp / "raw" / "tilts.csv"), "-o", str(tmp_path / "cli.zarr")])
    assert r.exit_code == 0, r.output
    for store in (tmp_path / "cli.zarr", tmp / "series.zarr"):
        g = zarr.open_group(store, mode="r")
        assert g["frames"].shape == (20, 24 * 24, 48, 48)
        np.testing.assert_allclose(np.degrees(g["tilt_angle"][:]), truth.tilt_deg, atol=1e-4)
        np.testing.assert_array_equal(g["frames"][3, :5], truth.frames[3, :5])  # item k is the scan at tilt k
    # ptyhpc ed3d on a single scan: a clear error naming the store, nothing written
    r = CliRunner().invoke(app, ["ingest", names[0], "--calibration", str(tmp / "raw" / "calib.yaml"),
                                 "-o", str(tmp_path / "one.zarr")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["ed3d", str(tmp_path / "one.zarr"), "-o", str(tmp_path / "o"), "--workers", "1"])
    assert r.exit_code != 0 and "tilt series needs at least two scans" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tracks_complete_pure_within_1px(run):
    truth, tmp = run
    rows = _tracks(tmp / "out")
    step = truth.calibration["scan_step_m"]
    n_p, n_t = truth.positions_px.shape[:2]
    found = {}
    for r in rows:
        found.setdefault(int(r["particle"]), []).append((float(r["tilt_deg"]), float(r["y_m"]) / step,
                                                         float(r["x_m"]) / step))
    assert len(found) == n_p  # one track per particle, no spurious tracks
    for p, obs in found.items():
        obs = np.array(sorted(obs))
        np.testing.assert_allclose(obs[:, 0], truth.tilt_deg, atol=1e-3)  # complete: every tilt
        # pure: every position of the track belongs to one true particle, within 1 px
        err = np.linalg.norm(obs[None, :, 1:] - truth.positions_px, axis=2)  # (true particle, tilt)
        best = int(np.argmin(err.mean(1)))
        assert err[best].max() < 1.0, (p, err[best].max())
        assert err[best].max() < 0.5  # measured 0.15 px


@pytest.mark.slow
def test_unit_cell_and_orientation(run):
    truth, tmp = run
    want = cell_parameters(reduce_cell(np.asarray(truth.direct_basis_m[0])))
    seen = set()
    for p in range(3):
        cell = json.loads((tmp / "out" / f"particle_{p:03d}" / "cell.json").read_text())
        assert "error" not in cell, cell
        for k in ("a_m", "b_m", "c_m"):
            assert abs(cell[k] / want[k] - 1) < 0.01, (p, k, cell[k], want[k])
        for k in ("alpha_deg", "beta_deg", "gamma_deg"):
            assert abs(cell[k] - want[k]) < 1.0, (p, k, cell[k], want[k])
        A = np.asarray(cell["orientation"]["direct_basis_m"]).T
        # which simulated particle is it: the one whose orientation matches within 2 degrees
        mis = [misorientation_deg(A, reduce_cell(truth.direct_basis_m[q])) for q in range(3)]
        assert min(mis) < 2.0, mis
        seen.add(int(np.argmin(mis)))
    assert seen == {0, 1, 2}


@pytest.mark.slow
def test_exports_read_back(run):
    import fabio
    import mrcfile
    import tifffile

    from ptyhpc.ed3d.export import read_mrc_geometry

    truth, tmp = run
    d = tmp / "out" / "particle_001"
    summ = json.loads((d / "summary.json").read_text())
    geo = summ["geometry"]
    assert summ["tilt_deg"] == pytest.approx(list(truth.tilt_deg))
    # dose: 20 scans at beam_counts per frame over the step area
    assert summ["dose_e_per_A2"] == pytest.approx(20 * truth.dose_e_per_A2_per_scan, rel=0.05)
    pts = (d / "particle_001.pts").read_text().splitlines()
    kv = dict(line.split(None, 1) for line in pts if line and not line.startswith("#") and " " in line)
    assert float(kv["lambda"]) == pytest.approx(geo["wavelength_m"] * 1e10, rel=1e-5)
    assert float(kv["Aperpixel"]) == pytest.approx(geo["reciprocal_pixel_inv_m"] * 1e-10, rel=1e-5)
    assert float(kv["omega"]) == 90.0 and float(kv["phi"]) == pytest.approx(1.0)
    images = pts[pts.index("imagelist") + 1: pts.index("endimagelist")]
    assert len(images) == 20 and float(images[0].split()[1]) == pytest.approx(-19.0)
    with tifffile.TiffFile(d / images[0].split()[0]) as t:
        img = t.asarray()
        assert img.shape == (48, 48) and img.dtype == np.uint16
        assert json.loads(t.pages[0].description)["osc_step_deg"] == pytest.approx(2.0)
    data, g = read_mrc_geometry(d / "particle_001.mrc")
    assert data.shape == (20, 48, 48)
    for k in ("wavelength_m", "reciprocal_pixel_inv_m", "beam_centre_col_px", "beam_centre_row_px", "osc_start_deg",
              "osc_step_deg", "rotation_axis_deg"):
        assert getattr(g, k) == pytest.approx(geo[k], rel=1e-9), k
    with mrcfile.open(d / "particle_001.mrc") as m:
        assert float(m.voxel_size.z) == pytest.approx(2.0)
    np.testing.assert_array_equal(np.clip(np.rint(data[0]), 0, 65535).astype(np.uint16), img)
    im = fabio.open(str(d / "smv" / "00002.img"))
    assert float(im.header["OSC_START"]) == pytest.approx(-17.0)
    assert float(im.header["WAVELENGTH"]) == pytest.approx(geo["wavelength_m"] * 1e10, rel=1e-5)
    assert float(im.header["DISTANCE"]) == pytest.approx(geo["camera_length_m"] * 1e3, rel=1e-5)
    xds = dict(line.split("=", 1) for line in (d / "XDS.INP").read_text().splitlines()
               if "=" in line and not line.startswith("!") and line.count("=") == 1)
    assert float(xds["X-RAY_WAVELENGTH"]) == pytest.approx(float(im.header["WAVELENGTH"]))
    assert float(xds["STARTING_ANGLE"]) == pytest.approx(-19.0) and float(xds["OSCILLATION_RANGE"]) == 2.0
    assert xds["DATA_RANGE"].split() == ["1", "20"]


@pytest.mark.slow
def test_store_results_and_figure(run):
    import zarr

    truth, tmp = run
    res = zarr.open_group(tmp / "series.zarr", mode="r")["results/ed3d"]
    assert res["patterns"].shape == (3, 20, 48, 48)
    masks = res["masks"][:]
    assert masks.shape == (20, 24, 24) and set(np.unique(masks)) == {0, 1, 2, 3}
    # each mask holds the particle's projected disk (area π r² ≈ 32 px)
    for k in (0, 19):
        for p in (1, 2, 3):
            assert 20 <= (masks[k] == p).sum() <= 45
    assert res["tracks"].shape == (60, 4)
    assert (tmp / "out" / "tracks.png").stat().st_size > 10_000
    assert res.attrs["complete"] and not (tmp / ".out.partial").exists()


def test_recipe_ed3d_section(tmp_path):
    from ptyhpc.recipe import load_recipe

    for n in ("a", "b"):
        (tmp_path / f"{n}.mib").write_bytes(b"")
    (tmp_path / "t.csv").write_text("file,tilt_deg\na.mib,5\nb.mib,-5\n")
    (tmp_path / "r.yaml").write_text("input: {files: ['*.mib'], tilts: t.csv, calibration: {scan_shape: [2, 2]}}\n"
                                     "store: s.zarr\ned3d: {output: out, memory: 2}\n")
    rc, files = load_recipe(tmp_path / "r.yaml")
    assert rc.input.calibration["tilt_angles_rad"] == pytest.approx(np.radians([5, -5]))
    assert rc.ed3d["output"] == str(tmp_path / "out") and "tilts" not in rc.input.ingest_options()
    (tmp_path / "bad.yaml").write_text("input: {files: ['*.mib']}\nstore: s.zarr\ned3d: {output: o, memry: 2}\n")
    with pytest.raises(ValueError, match="memry"):
        load_recipe(tmp_path / "bad.yaml")


def test_tilts_csv_errors(tmp_path):
    t = tmp_path / "tilts.csv"
    t.write_text("file,tilt_deg\na.mib,-10\nb.mib,12.5\n")
    assert read_tilts_csv(t, [tmp_path / "b.mib", "a.mib"]) == pytest.approx(np.radians([12.5, -10]))
    with pytest.raises(IngestError, match="no tilt_deg for c.mib"):
        read_tilts_csv(t, ["c.mib"])
    t.write_text("file,angle\na.mib,1\n")
    with pytest.raises(IngestError, match="file,tilt_deg"):
        read_tilts_csv(t, ["a.mib"])
    t.write_text("file,tilt_deg\na.mib,x\n")
    with pytest.raises(IngestError, match="line 2"):
        read_tilts_csv(t, ["a.mib"])


def _disk_series(centres, n_tilts=12, shape=(32, 32), r=3.2, seed=1):
    """ADF-like images: bright disks at centres[p][k] (row, col) or None (particle absent), Poisson noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    imgs = []
    for k in range(n_tilts):
        im = np.full(shape, 30.0)
        for c in centres:
            if c[k] is not None:
                im += 300 * np.sqrt(np.clip(1 - ((yy - c[k][0]) ** 2 + (xx - c[k][1]) ** 2) / r ** 2, 0, None))
        imgs.append(rng.poisson(im).astype(float))
    return np.stack(imgs)


def test_touching_reported_gaps_closed_leaving_ends():
    """Touching particles are split by the watershed and reported, never merged into one track; a
    particle hidden for 2 tilts keeps its track (gap closing); one that leaves the field ends its track."""
    from ptyhpc.ed3d.detect import segment
    from ptyhpc.ed3d.track import track_particles

    n = 12
    drift = np.cumsum(np.r_[[0.0], np.full(n - 1, 0.15)])
    lone = [(8.0 + drift[k], 8.0) for k in range(n)]
    hidden = [None if k in (5, 6) else (24.0 + drift[k], 9.0) for k in range(n)]
    # two particles approaching each other along x: touching (gap < 1 px) from tilt 6 on
    left = [(16.0 + drift[k], 17.0 + 0.15 * k) for k in range(n)]
    right = [(16.0 + drift[k], 26.0 - 0.15 * k) for k in range(n)]
    leaving = [(6.0 + drift[k], 20.0 + 1.2 * k) if 20.0 + 1.2 * k < 30 else None for k in range(n)]
    truth = [lone, hidden, left, right, leaving]
    imgs = _disk_series(truth, n)
    regions = [segment(im) for im in imgs]
    tr = track_particles(regions, imgs, memory=3)
    t = tr.table
    for p, d in t.groupby("particle"):
        pos = d[["y_px", "x_px"]].to_numpy()
        items = d["item"].to_numpy()
        iso = d["isolated"].to_numpy()
        # pure: each track follows one true particle, within 1 px where isolated (2 px where touching)
        errs = np.array([[np.hypot(*(np.asarray(tp[k]) - x)) if tp[k] is not None else 99 for k, x in zip(items, pos)]
                         for tp in truth])
        q = int(np.argmin(errs.max(1)))
        assert errs[q][iso].max() < 1.0 and errs[q].max() < 2.0, (p, errs[q])
        present = [k for k in range(n) if truth[q][k] is not None and (q != 4 or 20.0 + 1.2 * k < 27)]
        if q == 1:  # gap closed: one track over both sides of the gap
            assert set(items) >= {0, 4, 7, 11}
        elif q != 4:
            assert set(items) == set(present), (q, items)
    assert t["particle"].nunique() == 5
    # the touching pair is split at every tilt, and reported as not isolated once they touch
    touching = {(k, j) for k, j in tr.agglomerates}
    for k in range(8, n):
        js = t[(t["item"] == k) & (t["x_px"] > 15) & (t["y_px"] > 12) & (t["y_px"] < 20)]
        assert len(js) == 2, k
        assert all((k, int(j)) in touching for j in js["region"])
        assert not js["isolated"].any()
    assert t[t["item"] == 0]["isolated"].all()


@pytest.mark.parametrize("rot_deg,transpose", [(0.0, False), (-123.0, True), (37.0, False)])
def test_peak_mapping_convention(rot_deg, transpose):
    """A reciprocal vector g (crystal frame) on the Ewald sphere at tilt θ, put on the detector by the
    docs/stem.md convention (scan rotation, transpose), maps back to g."""
    from ptyhpc.ed3d.cell import peaks_to_reciprocal
    from ptyhpc.physics.wavelength import electron_wavelength
    from ptyhpc.sim.ed3d import rotation_y

    lam, dk, th, rot = electron_wavelength(200e3), 4.5e8, np.radians(14.0), np.radians(rot_deg)
    gl = np.array([[0.31e10, -0.22e10, 0.0], [-0.5e10, 0.1e10, 0.0]])
    gl[:, 2] = np.sqrt(1 / lam ** 2 - gl[:, 0] ** 2 - gl[:, 1] ** 2) - 1 / lam  # on the sphere at this tilt
    g = gl @ rotation_y(th)  # crystal frame: R_y(-θ)·g_lab
    col_row = (np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]) @ gl[:, :2].T).T / dk
    rc = np.stack([col_row[:, 1], col_row[:, 0]], 1) + [24.0, 23.0]
    centre = (24.0, 23.0)
    if transpose:
        rc, centre = rc[:, ::-1], (23.0, 24.0)
    q = peaks_to_reciprocal(rc, centre, th, dk, lam, scan_rotation_rad=rot, transpose=transpose)
    np.testing.assert_allclose(q, g, atol=1e-6 * 1e10)


def test_bilinear_shift_matches_scipy():
    from scipy.ndimage import shift

    from ptyhpc.ed3d.series import bilinear_shift

    rng = np.random.default_rng(3)
    f = rng.random((5, 12, 10))
    d = rng.uniform(-2.5, 2.5, (5, 2))
    want = np.stack([shift(x, s, order=1, mode="grid-constant", cval=0.0) for x, s in zip(f, d)])
    np.testing.assert_allclose(bilinear_shift(f, d), want, atol=1e-12)


@pytest.mark.slow
def test_two_workers_equal_in_process(run):
    """The 2-worker run's virtual image, beam centres and particle patterns equal an in-process recomputation."""
    import zarr

    from ptyhpc.ed3d.detect import scan_images
    from ptyhpc.ed3d.series import particle_patterns

    truth, tmp = run
    store = tmp / "series.zarr"
    res = zarr.open_group(store, mode="r")["results/ed3d"]
    nominal = tuple(res["beam_centre_px"].attrs["nominal"])
    k = 7
    si = scan_images(store, k, nominal, client=None)
    np.testing.assert_array_equal(si.adf, res["adf"][k])
    np.testing.assert_array_equal(si.centre, res["beam_centre_px"][k])
    pats, n, _ = particle_patterns(store, k, res["labels"][k].ravel(), si.centre, nominal, 3, client=None)
    np.testing.assert_array_equal(pats, res["patterns"][:, k])
    np.testing.assert_array_equal(n, res["n_frames"][:, k])
