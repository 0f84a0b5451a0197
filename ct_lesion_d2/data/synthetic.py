"""Synthetic CT-like chest slices with lesion masks.

Everything this module makes is SYNTHETIC: drawn from simple geometric shapes and random noise,
not taken from any patient or real scan. The slices only look roughly like axial chest CT in a
lung window (dark air, bright body wall, dark lungs with vessels, a bright spine) so that the
segmentation and classification pipelines can be run and tested end to end without real data.
They must never be used to draw any medical conclusion.

Three scan classes are drawn in turn (slice ``i`` has class ``i % 3``):

* 0 "Control": no lesions.
* 1 "Common Pneumonia": 1-2 large, dense, homogeneous consolidations (mask label 2).
* 2 "COVID-19": 2-6 hazy, peripheral, bilateral ground-glass opacities (label 1), some with a
  small consolidated core (label 2).
"""

import io
import json
import os

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from tqdm import tqdm

from ..utils.files import StagedWrites

CLASS_NAMES = ("Control", "Common Pneumonia", "COVID-19")
LABEL_NAMES = ("background", "GGO", "consolidation")
MIN_COMPONENT_PX = 100  # downstream code drops lesion components of <= this many pixels
_FOUR = ndi.generate_binary_structure(2, 1)  # 4-connectivity
# Lung-window grey levels on a 0..1 scale.
_AIR, _LUNG, _FAT, _SOFT, _BONE = 0.04, 0.16, 0.62, 0.80, 0.97


def _smooth_noise(rng, shape, sigma):
    """Gaussian-smoothed white noise, unit std; wide kernels run on a coarse grid (faster)."""
    step = max(1, int(sigma // 3))
    coarse = rng.standard_normal(tuple(-(-n // step) for n in shape))
    field = ndi.gaussian_filter(coarse, sigma / step)
    if step > 1:
        field = ndi.zoom(field, step, order=1)[: shape[0], : shape[1]]
    return field / (field.std() + 1e-8)


def _radius(u, v, cu, cv, au, av, angle=0.0):
    """Normalised elliptic radius (1 on the ellipse) of grid points ``(u, v)``."""
    c, s = np.cos(angle), np.sin(angle)
    du, dv = u - cu, v - cv
    return np.hypot((c * du + s * dv) / au, (-s * du + c * dv) / av)


def _fill(img, u, v, value, cu, cv, au, av, angle=0.0):
    """Set the pixels of ``img`` inside an ellipse to ``value``, working on its bounding box."""
    size, reach = img.shape[0], max(au, av)
    r0, r1 = (int(np.clip((c + 1) / 2 * size, 0, size)) for c in (cv - reach, cv + reach + 0.02))
    c0, c1 = (int(np.clip((c + 1) / 2 * size, 0, size)) for c in (cu - reach, cu + reach + 0.02))
    box = np.s_[r0 : r1 + 1, c0 : c1 + 1]
    img[box][_radius(u[box], v[box], cu, cv, au, av, angle) < 1.0] = value


def _largest_component(mask):
    """Keep only the largest 4-connected component of a boolean mask."""
    labels, n = ndi.label(mask, structure=_FOUR)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def _lung_fields(rng, u, v, size):
    """Draw the two lung masks (image-left, image-right), carved by heart and spine."""
    wobble = 0.05 * _smooth_noise(rng, u.shape, size / 16)
    heart = _radius(u, v, 0.12 + rng.uniform(-0.03, 0.03), 0.16, 0.27, 0.22) < 1.0
    spine = _radius(u, v, 0.0, 0.40, 0.17, 0.17) < 1.0
    lungs = []
    for side in (-1.0, 1.0):
        cu = side * rng.uniform(0.38, 0.41)
        au, av = rng.uniform(0.27, 0.30), rng.uniform(0.40, 0.44)
        angle = side * rng.uniform(0.0, 0.12)
        lung = (_radius(u, v, cu, rng.uniform(-0.03, 0.02), au, av, angle) + wobble) < 1.0
        lung &= ~spine & ~(heart if side > 0 else np.zeros_like(heart))
        lungs.append(_largest_component(lung))
    return lungs


def _body(rng, u, v, size):
    """Draw air, body wall (skin, fat, muscle), ribs, sternum, spine and table (0..1 grey)."""
    cv, au, av = rng.uniform(0.02, 0.07), rng.uniform(0.84, 0.90), rng.uniform(0.62, 0.68)
    du, dv = u / au, (v - cv) / av
    rad = np.sqrt(du**2 + np.where(dv > 0, np.abs(dv) ** 3, dv**2))  # flat back
    rad = rad + 0.012 * _smooth_noise(rng, u.shape, size / 20)
    img = np.full(u.shape, _AIR)
    img[np.abs(v - 0.86) < 0.025] = 0.45  # patient table
    fat = np.abs(rad - (0.90 + 0.02 * _smooth_noise(rng, u.shape, size / 10))) < 0.045
    img[rad < 1.0] = _SOFT
    img[(rad < 1.0) & fat] = _FAT
    for side in (-1.0, 1.0):  # rib cross-sections in the chest wall
        for theta in np.linspace(-2.6, 0.9, 7) + rng.uniform(-0.1, 0.1):
            ru, rv = side * 0.76 * au * np.cos(theta), cv + 0.74 * av * np.sin(theta)
            _fill(img, u, v, _BONE, ru, rv, 0.035, 0.022, side * theta)
    _fill(img, u, v, _BONE, 0.0, cv - 0.83 * av, 0.07, 0.03)  # sternum
    _fill(img, u, v, _BONE, 0.0, 0.40, 0.12, 0.10)  # vertebral body
    arch = _radius(u, v, 0.0, 0.55, 0.08, 0.08)
    img[(arch > 0.55) & (arch < 1.0) & (v > 0.50)] = _BONE  # neural arch
    _fill(img, u, v, _BONE, 0.0, 0.66, 0.025, 0.06)  # spinous process
    _fill(img, u, v, _AIR, 0.0, -0.10, 0.05, 0.045)  # trachea
    return img


def _splat(layer, ys, xs, radii, values):
    """Draw discs of given radii and grey values into ``layer`` (pixel maximum)."""
    h, w = layer.shape
    reach = int(np.ceil(radii.max())) if len(radii) else 0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            sel = dy * dy + dx * dx <= np.maximum(radii, 0.5) ** 2
            yy = np.clip(np.rint(ys[sel]).astype(int) + dy, 0, h - 1)
            xx = np.clip(np.rint(xs[sel]).astype(int) + dx, 0, w - 1)
            np.maximum.at(layer, (yy, xx), values[sel])


def _vessels(rng, lung, size):
    """Draw a vessel tree (random walks from the hilum) and cross-sectioned vessel dots."""
    scale = size / 256
    ys_all, xs_all = np.nonzero(lung)
    hilum = np.array([ys_all.mean(), xs_all.mean()])
    hilum[1] += 0.35 * (size / 2 - hilum[1])  # towards the mediastinum
    pts = []
    for k in range(16):
        start = hilum if k < 9 else np.array([ys_all, xs_all])[:, rng.integers(len(ys_all))]
        steps = int(rng.integers(20, 60) * scale)
        ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.18, steps))
        ys = start[0] + np.cumsum(1.3 * scale * np.sin(ang))
        xs = start[1] + np.cumsum(1.3 * scale * np.cos(ang))
        inside = lung[np.clip(ys.astype(int), 0, size - 1), np.clip(xs.astype(int), 0, size - 1)]
        stop = int(np.argmin(inside)) if not inside.all() else steps
        r0 = (1.6 if k < 9 else 1.0) * scale
        pts.append((ys[:stop], xs[:stop], np.linspace(r0, 0.3 * scale, steps)[:stop]))
    n_dots = int(110 * scale**2)
    idx = rng.integers(len(ys_all), size=n_dots)
    pts.append((ys_all[idx], xs_all[idx], rng.uniform(0.3, 1.4, n_dots) * scale))
    ys, xs, radii = (np.concatenate(p) for p in zip(*pts))
    layer = np.zeros(lung.shape)
    _splat(layer, ys, xs, radii, 0.30 + 0.35 * np.clip(radii / (1.6 * scale), 0, 1))
    return ndi.gaussian_filter(layer, 0.6) * ndi.binary_erosion(lung, iterations=2)


def _blob(lung, field, centre, axes, angle, rough):
    """A lesion-shaped blob: noisy ellipse clipped to the lung, largest component only."""
    reach, (h, w) = int(2 * max(axes)) + 2, lung.shape
    rows = slice(max(centre[0] - reach, 0), min(centre[0] + reach, h))
    box = rows, slice(max(centre[1] - reach, 0), min(centre[1] + reach, w))
    yy, xx = np.mgrid[box]
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - centre[0], xx - centre[1]
    dist = np.hypot((c * dx + s * dy) / axes[0], (-s * dx + c * dy) / axes[1])
    shape = np.full(lung.shape, -1.0)
    shape[box] = 1.0 - dist + rough * field[box]
    blob = np.zeros_like(lung)
    blob[box] = _largest_component(ndi.binary_fill_holes(shape[box] > 0.15) & lung[box])
    return blob, shape


def _covid_core(rng, ggo, shape, min_px):
    """Optionally carve a small consolidated core inside a GGO; empty mask if none fits."""
    core = np.zeros_like(ggo)
    if rng.random() < 0.4:
        return core
    cand = _largest_component(ndi.binary_erosion(ggo, iterations=3) & (shape > 0.45))
    if cand.sum() <= min_px:
        return core
    rest = ggo & ~cand
    _, n_rest = ndi.label(rest, structure=_FOUR)
    return cand if n_rest == 1 and rest.sum() > min_px else core


def _propose(rng, lung, edt, cls, scale):
    """Draw a lesion centre, axes (px) and angle for the given class in one lung."""
    if cls == 2:  # subpleural: centre near the costal pleura, long axis along it
        ys, xs = np.nonzero(lung)
        yy, xx = np.indices(lung.shape)
        lateral = (xx - xs.mean()) * np.sign(xs.mean() - lung.shape[1] / 2) > 0
        ok = (edt > 3 * scale) & (edt < 11 * scale) & (lateral | (yy > ys.mean() + 10 * scale))
        axes = rng.uniform(15, 26) * scale, rng.uniform(9, 14) * scale
    else:
        ok = edt > 8 * scale
        axes = rng.uniform(30, 46) * scale, rng.uniform(20, 30) * scale
    ys, xs = np.nonzero(ok & lung)
    k = rng.integers(len(ys))
    win = edt[max(ys[k] - 2, 0) : ys[k] + 3, max(xs[k] - 2, 0) : xs[k] + 3]
    gy, gx = (g.mean() for g in np.gradient(win))
    angle = np.arctan2(gy, gx) + np.pi / 2 if cls == 2 else rng.uniform(0, np.pi)
    return (ys[k], xs[k]), axes, angle


def _lesions(rng, lungs, cls, size):
    """Place non-touching lesions of the class's pattern; returns (label mask, count)."""
    mask = np.zeros(lungs[0].shape, np.uint8)
    if cls == 0:
        return mask, 0
    scale, min_px = size / 256, max(MIN_COMPONENT_PX + 60, int(160 * (size / 256) ** 2))
    edts = [ndi.distance_transform_edt(lung) for lung in lungs]
    field = _smooth_noise(rng, mask.shape, 4 * scale)
    target = int(rng.integers(2, 7)) if cls == 2 else int(rng.integers(1, 3))
    first, count = int(rng.integers(2)), 0
    for k in range(target):
        one_sided = cls == 1 and rng.random() < 0.7
        side = first if one_sided else (first + k) % 2
        taken = ndi.binary_dilation(mask > 0, iterations=3)
        for _ in range(40):
            centre, axes, angle = _propose(rng, lungs[side], edts[side], cls, scale)
            blob, shape = _blob(lungs[side], field, centre, axes, angle, 0.28 if cls == 2 else 0.15)
            if blob.sum() > min_px and not (taken & blob).any():
                core = _covid_core(rng, blob, shape, min_px) if cls == 2 else blob
                mask[blob] = 1
                mask[core] = 2
                count += 1
                break
    return mask, count


def _paint(rng, base, vessels, lungs, mask, size):
    """Composite anatomy, vessels and lesions into the final 8-bit image."""
    lung = lungs[0] | lungs[1]
    scale = size / 256
    yy = np.indices(base.shape)[0] / size
    texture = 0.012 * _smooth_noise(rng, base.shape, 2 * scale)
    img = np.where(lung, _LUNG + 0.05 * yy + texture, base)  # posterior slightly denser
    ggo = ndi.gaussian_filter((mask > 0).astype(float), 2.0 * scale)
    img += ggo * rng.uniform(0.24, 0.32) * (1 + 0.25 * _smooth_noise(rng, base.shape, 3 * scale))
    img = np.maximum(img, vessels)  # vessels still show through ground glass
    cons = ndi.gaussian_filter((mask == 2).astype(float), 1.2 * scale)
    level = rng.uniform(0.72, 0.80) + 0.015 * _smooth_noise(rng, base.shape, 3 * scale)
    img = img * (1 - cons) + level * cons
    img = ndi.gaussian_filter(img, 0.6 * scale) + rng.normal(0, 0.018, base.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _render_slice(rng, class_id, size):
    """Render one slice.

    Returns:
        (image, mask, lung_mask, num_lesions): uint8 image, uint8 labels, bool lung fields.
    """
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    v, u = np.meshgrid(coords, coords, indexing="ij")
    base = _body(rng, u, v, size)
    lungs = _lung_fields(rng, u, v, size)
    vessels = np.maximum(_vessels(rng, lungs[0], size), _vessels(rng, lungs[1], size))
    mask, count = _lesions(rng, lungs, class_id, size)
    if class_id and count == 0:
        raise RuntimeError("could not place any lesion; try another seed")
    image = _paint(rng, base, vessels, lungs, mask, size)
    return image, mask, lungs[0] | lungs[1], count


def _png_bytes(array):
    """Encode a 2-D uint8 array as greyscale PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _check_targets(output_dir, num_slices, overwrite):
    """Raise ``FileExistsError`` if a file to be written exists and ``overwrite`` is False."""
    if overwrite:
        return
    targets = [os.path.join(output_dir, "slices.json")]
    for i in range(num_slices):
        targets += [os.path.join(output_dir, d, f"synth_{i:04d}.png") for d in ("images", "masks")]
    for path in targets:
        if os.path.exists(path):
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")


def _write_slice(staged, output_dir, index, seed, size):
    """Render slice ``index`` with ``default_rng(seed + index)``, write it, return its record."""
    class_id, name = index % 3, f"synth_{index:04d}.png"
    image, mask, _, count = _render_slice(np.random.default_rng(seed + index), class_id, size)
    for folder, array in (("images", image), ("masks", mask)):
        path = os.path.join(output_dir, folder, name)
        staged.stage(path, lambda f, a=array: f.write(_png_bytes(a)))
    return {
        "file_name": f"images/{name}",
        "mask_file": f"masks/{name}",
        "class_id": class_id,
        "class_name": CLASS_NAMES[class_id],
        "num_lesions": count,
    }


def generate_synthetic_slices(
    output_dir, num_slices, *, seed=0, size=256, overwrite=False, progress=True
):
    """Write synthetic CT-like chest slices, lesion masks and an index file.

    Slice ``i`` has class ``i % 3`` (see ``CLASS_NAMES``) and is drawn with
    ``numpy.random.default_rng(seed + i)``, so equal arguments give byte-identical files.
    Writes ``images/synth_NNNN.png`` (8-bit greyscale), ``masks/synth_NNNN.png`` (uint8 labels:
    0 background, 1 GGO, 2 consolidation) and ``slices.json`` under ``output_dir``, each file
    through a temporary file renamed (``os.replace``) once every slice is drawn, so that an
    interruption leaves the earlier files. Each lesion is one 4-connected component of
    more than ``MIN_COMPONENT_PX`` pixels (so is every 4-connected component of each label),
    lesions never touch and all lie inside the lung fields. With ``overwrite`` the listed files
    are replaced; files of an earlier, longer run are left in place.

    Args:
        output_dir: Folder to write into (created if missing).
        num_slices: Number of slices to generate.
        seed: Base random seed.
        size: Image side in pixels (at least 128).
        overwrite: Replace existing files instead of raising.
        progress: Show a tqdm progress bar.

    Returns:
        The records written to ``slices.json``: dicts with ``file_name``, ``mask_file``,
        ``class_id``, ``class_name`` and ``num_lesions`` (paths relative to ``output_dir``).

    Raises:
        FileExistsError: If a target file exists and ``overwrite`` is False.
        ValueError: If ``num_slices`` is negative or ``size`` is below 128.
    """
    if num_slices < 0 or size < 128:
        raise ValueError(f"need num_slices >= 0 and size >= 128, got {num_slices}, {size}")
    _check_targets(output_dir, num_slices, overwrite)
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
    steps = tqdm(range(num_slices), desc="synthetic slices", disable=not progress)
    # Every file is staged next to its target and renamed only once all are drawn, so an
    # interruption leaves the previous set (or nothing), never a mix of two runs.
    with StagedWrites() as staged:
        records = [_write_slice(staged, output_dir, i, seed, size) for i in steps]
        text = json.dumps(records, indent=1) + "\n"
        staged.stage(os.path.join(output_dir, "slices.json"), lambda f: f.write(text), mode="w")
        staged.commit()
    return records
