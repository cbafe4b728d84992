"""The saliency overlay's colours, and the Slicer-style three-view picture: world-axis slices of oblique images, shown
the way Slicer's Red/Green/Yellow views show them (patient right on the screen's left, anterior on the sagittal
view's left, superior / anterior up)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib import figures
from ControlCGLib.figures import peak_point, saliency_colormap, slice_views, slicer_slices, world_grid
from ControlCGLib.overlay import diverging_rgba, symmetric_window

SIZE = (24, 28, 20)  # (x, y, z) voxels
SPACING = (1.5, 1.2, 2.0)
ORIGIN = (-17.0, -14.0, -19.0)


def _rotation_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


DIRECTIONS = {
    "identity": np.eye(3),
    "RAS-stored (like NIfTI from the sample)": np.diag([-1.0, -1.0, 1.0]),
    "oblique 10 deg about x": _rotation_x(10),
    "RAS-stored and oblique": np.diag([-1.0, -1.0, 1.0]) @ _rotation_x(10),
}


def _image(direction: np.ndarray) -> sitk.Image:
    image = sitk.Image(list(SIZE), sitk.sitkFloat32)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    return image


def _mark(image: sitk.Image, point, value: float, radius: int = 1) -> np.ndarray:
    """Sets a (2 radius + 1)^3 block of voxels around the voxel nearest the physical ``point``; returns the block
    centre's exact physical point."""
    index = image.TransformPhysicalPointToIndex([float(c) for c in point])
    for dz in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                image[index[0] + dx, index[1] + dy, index[2] + dz] = value
    return np.array(image.TransformIndexToPhysicalPoint(index))


def _centroid(array: np.ndarray, value: float) -> np.ndarray:
    rows, cols = np.nonzero(np.isclose(array, value))
    assert rows.size, f"value {value} not in the view"
    return np.array([rows.mean(), cols.mean()])


# --- overlay ----------------------------------------------------------------------------------------------------------


def test_diverging_rgba_transparent_centre_red_top_blue_bottom():
    table = diverging_rgba(256, 0.1)
    assert table.shape == (256, 4) and table.min() >= 0 and table.max() <= 1
    x = np.linspace(-1, 1, 256)
    assert np.all(table[np.abs(x) <= 0.1, 3] == 0.0)
    assert np.all(table[np.abs(x) > 0.1, 3] == 1.0)
    red, blue = table[-1, :3], table[0, :3]
    assert red[0] > 0.3 and red[0] > 2 * red[2] and red[0] > 2 * red[1]
    assert blue[2] > 0.3 and blue[2] > 2 * blue[0]
    assert np.allclose(red, np.array([103, 0, 31]) / 255) and np.allclose(blue, np.array([5, 48, 97]) / 255)
    # positive half reddish, negative half bluish
    assert np.all(table[x > 0.1, 0] >= table[x > 0.1, 2]) and np.all(table[x < -0.1, 2] >= table[x < -0.1, 0])


@pytest.mark.parametrize("n, fraction", [(2, 0.05), (0, 0.05), (256, -0.01), (256, 1.0), (256, 1.5)])
def test_diverging_rgba_refuses_bad_arguments(n, fraction):
    with pytest.raises(ValueError):
        diverging_rgba(n, fraction)


def test_symmetric_window_ignores_nan_and_is_never_zero():
    assert symmetric_window([np.array([np.nan, -3.0, 2.0]), np.array([1.5, np.inf])]) == 3.0
    assert symmetric_window([np.array([0.5]), np.array([[-4.0, np.nan]])]) == 4.0
    for empty in ([np.zeros((3, 3))], [np.full(4, np.nan)], [], [np.array([])]):
        assert symmetric_window(empty) > 0


# --- the Slicer views -------------------------------------------------------------------------------------------------


def test_slicer_edges_match_slicer_defaults():
    views = slicer_slices(_image(np.eye(3)), (0.0, 0.0, 0.0))
    assert [v.title for v in views] == ["Axial (Red)", "Coronal (Green)", "Sagittal (Yellow)"]
    # (left, right, top, bottom) of the screen, as vtkMRMLSliceNode's SliceToRAS presets put them
    assert [v.edges for v in views] == [("R", "L", "A", "P"), ("R", "L", "S", "I"), ("A", "P", "S", "I")]


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_world_grid_covers_the_image(name):
    image = _image(DIRECTIONS[name])
    lo, s, size = world_grid(image)
    assert s == min(SPACING)
    hi = lo + (size - 1) * s
    for corner in [(0, 0, 0), (SIZE[0] - 1, SIZE[1] - 1, SIZE[2] - 1), (SIZE[0] - 1, 0, SIZE[2] - 1)]:
        p = np.array(image.TransformIndexToPhysicalPoint(corner))
        assert np.all(p >= lo - 1e-6) and np.all(p <= hi + 1e-6)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_a_marked_point_lands_where_slicer_shows_it(name):
    image = _image(DIRECTIONS[name])
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in SIZE]))
    p = _mark(image, centre + [3.0, -2.0, 4.0], 5.0)
    views = slicer_slices(image, p, interpolator=sitk.sitkNearestNeighbor)
    lo, s, size = world_grid(image)
    # independent statement of Slicer's layout in LPS: axial (row = +y = posterior down, col = +x = left to the
    # right), coronal and sagittal (row = superior up, so reversed z), sagittal col = +y (posterior to the right)
    expected = {
        "Axial (Red)": ((p[1] - lo[1]) / s, (p[0] - lo[0]) / s),
        "Coronal (Green)": (size[2] - 1 - (p[2] - lo[2]) / s, (p[0] - lo[0]) / s),
        "Sagittal (Yellow)": (size[2] - 1 - (p[2] - lo[2]) / s, (p[1] - lo[1]) / s),
    }
    shapes = {"Axial (Red)": (size[1], size[0]), "Coronal (Green)": (size[2], size[0])}
    shapes["Sagittal (Yellow)"] = (size[2], size[1])
    for v in views:
        assert v.array.shape == shapes[v.title]
        assert np.allclose(v.point_pixel, expected[v.title])
        # the block (3 voxels of >= 1.2 mm) is centred on the point, within a grid step
        assert np.all(np.abs(_centroid(v.array, 5.0) - expected[v.title]) <= 1.0), (v.title, name)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_patient_right_is_screen_left_and_anterior_is_sagittal_left(name):
    image = _image(DIRECTIONS[name])
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in SIZE]))
    # LPS: patient right is -x, anterior is -y, superior is +z; blocks of 5 voxels so that slices through the centre
    # cut them whatever the obliquity
    marks = {"R": ([-8.0, 0.0, 0.0], 1.0), "L": ([8.0, 0.0, 0.0], 2.0), "A": ([0.0, -8.0, 0.0], 3.0)}
    marks["S"] = ([0.0, 0.0, 9.0], 4.0)
    for offset, value in marks.values():
        _mark(image, centre + offset, value, radius=2)
    axial, coronal, sagittal = slicer_slices(image, centre, interpolator=sitk.sitkNearestNeighbor)

    def at(view, letter):
        return _centroid(view.array, marks[letter][1])

    row, col = axial.point_pixel
    assert at(axial, "R")[1] < col < at(axial, "L")[1], "axial: patient right on the screen's left"
    assert at(axial, "A")[0] < row, "axial: anterior up"
    row, col = coronal.point_pixel
    assert at(coronal, "R")[1] < col < at(coronal, "L")[1], "coronal: patient right on the screen's left"
    assert at(coronal, "S")[0] < row, "coronal: superior up"
    row, col = sagittal.point_pixel
    assert at(sagittal, "A")[1] < col, "sagittal: anterior on the screen's left"
    assert at(sagittal, "S")[0] < row, "sagittal: superior up"


def _blob_images(direction: np.ndarray, peak: float = 40.0):
    background = _image(direction)
    arr = np.random.default_rng(0).random(SIZE[::-1]).astype(np.float32) * 100 + 100
    bg = sitk.GetImageFromArray(arr)
    bg.CopyInformation(background)
    saliency = _image(direction)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in SIZE[::-1]], indexing="ij")
    cz, cy, cx = 12, 9, 15  # the blob's centre voxel (z, y, x)
    blob = peak * np.exp(-((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    blob[2, 2, 2] = np.nan  # NaN is ignored
    sal = sitk.GetImageFromArray(blob.astype(np.float32))
    sal.CopyInformation(saliency)
    return bg, sal, np.array(sal.TransformIndexToPhysicalPoint((cx, cy, cz)))


def test_slice_views_writes_a_png_through_the_blob(tmp_path, monkeypatch):
    bg, sal, blob_point = _blob_images(np.diag([-1.0, -1.0, 1.0]) @ _rotation_x(10))
    assert np.allclose(peak_point(sal), blob_point)
    seen = []
    real = figures.slicer_slices

    def spy(image, point, *args, **kwargs):
        seen.append(np.asarray(point, dtype=float))
        return real(image, point, *args, **kwargs)

    monkeypatch.setattr(figures, "slicer_slices", spy)
    out = slice_views(tmp_path / "sub" / "views.png", bg, sal, title="test")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen and all(np.allclose(p, blob_point) for p in seen)
    # the blob is at the view's point: the positive peak is found there in every view
    for v in real(sal, blob_point):
        r, c = np.unravel_index(np.nanargmax(v.array), v.array.shape)
        assert abs(r - v.point_pixel[0]) <= 1.5 and abs(c - v.point_pixel[1]) <= 1.5


def test_slice_views_explicit_point_and_bad_arguments(tmp_path):
    bg, sal, _ = _blob_images(np.eye(3))
    point = bg.TransformIndexToPhysicalPoint((3, 4, 5))
    assert slice_views(tmp_path / "p.png", bg, sal, point=point, threshold=0.2, opacity=1.0).exists()
    with pytest.raises(ValueError, match="opacity"):
        slice_views(tmp_path / "x.png", bg, sal, opacity=0.0)
    with pytest.raises(ValueError, match="transparent_fraction"):
        slice_views(tmp_path / "x.png", bg, sal, threshold=1.0)
    with pytest.raises(ValueError, match="window"):
        slice_views(tmp_path / "x.png", bg, sal, window=0.0)
    assert slice_views(tmp_path / "w.png", bg, sal, window=100.0).exists()
    with pytest.raises(ValueError, match="point"):
        slice_views(tmp_path / "x.png", bg, sal, point=(1.0, 2.0))


def test_saliency_colormap_is_the_table_at_the_given_opacity():
    cmap = saliency_colormap(0.1, 0.6)
    table = diverging_rgba(256, 0.1)
    lut = cmap(np.arange(256))
    assert np.allclose(lut[:, :3], table[:, :3])
    assert set(np.unique(lut[:, 3])) == {0.0, 0.6}
    assert np.array_equal(lut[:, 3] == 0.0, table[:, 3] == 0.0)
    assert cmap(0.5)[3] == 0.0 and cmap(np.nan)[3] == 0.0  # the centre (0 change) and NaN are not drawn
    top, bottom = cmap(1.0), cmap(0.0)
    assert top[3] == 0.6 and top[0] > top[2] and bottom[3] == 0.6 and bottom[2] > bottom[0]
    with pytest.raises(ValueError, match="opacity"):
        saliency_colormap(0.1, 1.5)


def test_the_loss_curve_draws_the_held_out_scores_beside_the_training_loss(tmp_path):
    import matplotlib.image as mpimg

    from ControlCGLib.figures import loss_curve

    (tmp_path / "metrics.csv").write_text(
        "step,loss,lr,seconds\n" + "".join(f"{s},{1 / s},0.1,{s}\n" for s in range(1, 41))
    )
    (tmp_path / "held_out.csv").write_text("step,held_out_loss\n0,2.0\n20,0.2\n40,0.1\n")
    plain = loss_curve(tmp_path / "plain.png", tmp_path / "metrics.csv", smooth=5)
    both = loss_curve(tmp_path / "both.png", tmp_path / "metrics.csv", smooth=5, held_out=tmp_path / "held_out.csv")
    a, b = mpimg.imread(plain), mpimg.imread(both)
    assert a.shape == b.shape and not np.array_equal(a, b)  # the held-out points are drawn
