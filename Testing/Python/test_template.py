import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.cli import main
from ControlCGLib.imaging.template import SOURCE_NAMES, derive_template, load_template


def test_committed_template_is_a_brain():
    t = load_template()
    assert t.t1.GetSize() == (99, 117, 95) and t.t1.GetSpacing() == (2.0, 2.0, 2.0)
    mask = t.array("mask") > 0
    volume_ml = mask.sum() * 8 / 1000
    assert 1300 < volume_ml < 2000  # an adult brain with its cerebellum and stem
    inside = t.array("gm")[mask] + t.array("wm")[mask] + t.array("csf")[mask]
    assert np.median(inside) == pytest.approx(1.0, abs=0.02)
    assert t.array("t1")[~mask].mean() < 0.01  # skull-stripped (only partial-volume blur at the edge)
    csf, wm = t.array("csf"), t.array("wm")
    centre = tuple(s // 2 for s in csf.shape)
    assert csf[mask].mean() < 0.2 and wm[centre[0] - 5 : centre[0] + 5].max() > 0.9


def _fake_nilearn(folder, size=(30, 34, 28)):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in size[::-1]], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    brain = r < 0.8
    maps = {
        "t1": np.where(brain, 200 - 80 * (r > 0.6), 0),
        "gm": np.where(brain & (r > 0.6), 255, 0),
        "wm": np.where(brain & (r <= 0.6) & (r > 0.2), 255, 0),
    }
    for key, arr in maps.items():
        img = sitk.GetImageFromArray(arr.astype(np.uint8))
        img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        img.SetOrigin((15.0, 17.0, -14.0))
        sitk.WriteImage(img, str(folder / SOURCE_NAMES[key]))


def test_derivation_keeps_the_extent_and_makes_mask_and_csf(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _fake_nilearn(src)
    written = derive_template(src, tmp_path / "out", spacing=2.0)
    assert set(written) == {"t1", "gm", "wm", "csf", "mask"}
    t = load_template(2.0, tmp_path / "out")
    assert t.mask.GetSize() == (15, 17, 14)
    assert t.mask.GetDirection() == (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    # the first voxel centre sits half a new voxel inside the old corner voxel's centre
    assert np.allclose(t.mask.GetOrigin(), (15.0 - 0.5, 17.0 - 0.5, -14.0 + 0.5))
    csf = t.array("csf")
    assert csf.max() > 0.8  # the centre (r < 0.2) has neither GM nor WM: CSF


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert main(["template", "--from", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "nilearn" in capsys.readouterr().err
