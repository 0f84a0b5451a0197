"""Convert CT lesion label masks to COCO instance JSON.

Each connected lesion component becomes one instance; components of ``min_area`` pixels or
fewer are merged into the background (docs/PAPER.md, section 1.6). Slices without lesions are
kept as images with no annotation, so whether they are trained on is the config's choice
(``DATALOADER.FILTER_EMPTY_ANNOTATIONS``).
"""

import csv
import itertools
import json
import logging
import os
import uuid
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from ..utils.files import StagedWrites, refuse_existing
from .io import DatasetFormatError
from .readers import BINARY, is_high_bit_depth, read_grey_image, read_mask
from .splits import split_by_group

logger = logging.getLogger(__name__)

# Category name -> mask labels, for each layout and merge choice.
CNCB_MERGED = OrderedDict([("Lesion", (2, 3))])
CNCB_SEPARATE = OrderedDict([("GGO", (2,)), ("Consolidation", (3,))])
CNCB_VALUES = (0, 1, 2, 3)
BINARY_MERGED = OrderedDict([("Lesion", (1,))])
# 0 and one foreground value: 0/1 (medseg100) or 0/255 (covid19_ct_seg)
BINARY_VALUES = BINARY
TWO_LABEL_MERGED = OrderedDict([("Lesion", (1, 2))])
TWO_LABEL_SEPARATE = OrderedDict([("GGO", (1,)), ("Consolidation", (2,))])
TWO_LABEL_VALUES = (0, 1, 2)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def mask_to_annotations(label_mask, categories, min_area=100):
    """Turn a label mask into COCO annotations, one per 8-connected component.

    Args:
        label_mask (np.ndarray): HxW integer labels.
        categories (OrderedDict[str, tuple[int]]): category name -> the labels merged into it;
            category ids are 1, 2, ... in this order.
        min_area (int): components of this many pixels or fewer are dropped (background).

    Returns:
        list[dict]: COCO annotations (``bbox`` XYWH, ``area``, compressed-RLE ``segmentation``,
        ``category_id``, ``iscrowd``), without ``id`` and ``image_id``.
    """
    annotations = []
    for category_id, labels in enumerate(categories.values(), start=1):
        components, count = ndimage.label(np.isin(label_mask, labels), _EIGHT_CONNECTED)
        for index, area in enumerate(np.bincount(components.ravel())[1:], start=1):
            if area <= min_area:
                continue
            component = components == index
            rle = mask_util.encode(np.asfortranarray(component.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x, y, w, h = mask_util.toBbox(rle).tolist()
            annotations.append(
                {
                    "bbox": [x, y, w, h],
                    "area": int(area),
                    "segmentation": rle,
                    "category_id": category_id,
                    "iscrowd": 0,
                }
            )
    return annotations


def list_cncb_pairs(root, errors=None):
    """Pairs of the CNCB layout: ``image/<scan>/<frame>.jpg`` and ``mask/<scan>/<frame>.png``.

    Args:
        errors (list or None): if given, a ``DatasetFormatError`` for each unpaired or doubled
            file is appended to it and that file is left out, instead of raising the first.

    Returns:
        list[tuple[str, str, str]]: (image path, mask path, scan id), sorted.

    Raises:
        DatasetFormatError: a missing folder, or an image or mask without its pair.
    """
    image_dir, mask_dir = os.path.join(root, "image"), os.path.join(root, "mask")
    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise DatasetFormatError(folder, "folder not found (expected the CNCB layout)")
    images = _stems(image_dir, errors, nested=True)
    masks = _stems(mask_dir, errors, nested=True)
    keys = _paired_keys(images, masks, errors)
    return [(images[k], masks[k], k.split("/")[0]) for k in keys]


def list_folder_pairs(images_dir, masks_dir, errors=None):
    """Pairs of a flat layout: ``images/<name>.<ext>`` and ``masks/<name>.png``.

    Args:
        errors (list or None): as in ``list_cncb_pairs``.

    Returns:
        list[tuple[str, str, str]]: (image path, mask path, name), sorted by name.
    """
    for folder in (images_dir, masks_dir):
        if not os.path.isdir(folder):
            raise DatasetFormatError(folder, "folder not found")
    images, masks = _stems(images_dir, errors), _stems(masks_dir, errors)
    return [(images[k], masks[k], k) for k in _paired_keys(images, masks, errors)]


def list_volume_pairs(root, errors=None):
    """Pairs of a flat layout split by a volume table: ``images/``, ``masks/`` and
    ``volumes.csv`` (columns ``file``, ``volume``), as in the COVID-19-CT-Seg PNG export.

    Every pair must have a row in ``volumes.csv``: neighbouring slices of one volume are near
    copies, so the split is by volume and never guessed from file names.

    Returns:
        list[tuple[str, str, str]]: (image path, mask path, volume), sorted by name.

    Raises:
        DatasetFormatError: a missing folder or table, a malformed table, or a pair without a
            row in it.
    """
    table = os.path.join(root, "volumes.csv")
    if not os.path.isfile(table):
        raise DatasetFormatError(table, "volume table not found (columns: file,volume)")
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "volume"} <= set(reader.fieldnames):
            raise DatasetFormatError(table, f"needs columns file,volume; has {reader.fieldnames}")
        volumes = {}
        for line, row in enumerate(reader, start=2):
            stem, volume = os.path.splitext(row["file"] or "")[0], (row["volume"] or "").strip()
            if not stem or not volume:
                raise DatasetFormatError(table, f"line {line}: empty file or volume")
            if volumes.setdefault(stem, volume) != volume:
                raise DatasetFormatError(table, f"line {line}: {row['file']} in two volumes")
    pairs = []
    for image, mask, stem in list_folder_pairs(
        os.path.join(root, "images"), os.path.join(root, "masks"), errors
    ):
        if stem not in volumes:
            _report(DatasetFormatError(image, f"no row in {table}"), errors)
            continue
        pairs.append((image, mask, volumes[stem]))
    return pairs


def lung_mask_files(pairs, lungs_dir):
    """The lung-field mask of each image under ``lungs_dir`` (same name), when that folder
    exists; lung masks are optional, but a folder that has some must have all.

    Returns:
        dict[str, str]: image path -> lung mask path (empty without the folder).

    Raises:
        DatasetFormatError: the folder lacks the lung mask of an image.
    """
    if not os.path.isdir(lungs_dir):
        return {}
    found = _stems(lungs_dir, None)
    lungs = {}
    for image, _, _ in pairs:
        stem = os.path.splitext(os.path.basename(image))[0]
        if stem not in found:
            raise DatasetFormatError(image, f"has no lung mask in {lungs_dir}")
        lungs[image] = found[stem]
    return lungs


def _report(error, errors):
    if errors is None:
        raise error
    errors.append(error)


def _stems(folder, errors, nested=False):
    found, doubled = {}, set()
    for dirpath, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            key = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, "/")
            if not nested and "/" in key:
                continue
            if key in found:
                _report(
                    DatasetFormatError(path, f"two files for the same slice ({found[key]})"), errors
                )
                doubled.add(key)
            found[key] = path
    return {k: v for k, v in found.items() if k not in doubled}


def _paired_keys(images, masks, errors):
    for key in sorted(set(images) ^ set(masks)):
        if key in images:
            _report(DatasetFormatError(images[key], "image has no mask (missing pair)"), errors)
        else:
            _report(DatasetFormatError(masks[key], "mask has no image (missing pair)"), errors)
    return sorted(set(images) & set(masks))


def convert_pairs(
    pairs,
    output_dir,
    *,
    categories,
    mask_values,
    val_groups,
    image_root,
    transpose=False,
    min_area=100,
    overwrite=False,
    lung_masks=None,
):
    """Convert (image, mask, group) pairs to ``output_dir/annotations/{train,val}.json``.

    Args:
        pairs (list[tuple[str, str, str]]): from ``list_cncb_pairs`` or ``list_folder_pairs``.
        output_dir (str): where the annotations (and transposed images, if any) are written.
        categories (OrderedDict[str, tuple[int]]): category name -> mask labels.
        mask_values (tuple[int]): every label the layout declares (lung field included).
        val_groups (set[str]): groups that go to val (see ``split_by_group``).
        image_root (str): folder the JSON ``file_name`` entries are relative to.
        transpose (bool): images and masks are stored transposed; write ``.T`` copies of the
            images as PNG under ``output_dir/images`` and annotate those. Images of more than 8
            bits are annotated through 8-bit PNG copies under ``output_dir/images_8bit``
            (Detectron2's ``read_image`` would clip them).
        min_area (int): see ``mask_to_annotations``.
        overwrite (bool): replace existing annotation files (and transposed copies).
        lung_masks (dict[str, str] or None): image path -> binary lung-field mask, checked and
            recorded as the image's ``lung_file`` (relative to ``image_root``).

    Returns:
        dict[str, str]: split name -> path of its JSON file.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False (nothing is written).
        DatasetFormatError: a bad pair; nothing is written.
    """
    outputs = {s: os.path.join(output_dir, "annotations", f"{s}.json") for s in ("train", "val")}
    copies = {}  # image -> the 8-bit PNG written for it and annotated instead
    if transpose:
        image_root = os.path.join(output_dir, "images")
        copies = {i: os.path.join(image_root, _png_name(m)) for i, m, _ in pairs}
    else:
        # Detectron2's read_image (Visualizer, DefaultPredictor) clips images of more than 8 bits
        # to 0-255: annotate 8-bit copies of those, scaled like read_grey_image.
        for image_path, _, _ in pairs:
            if is_high_bit_depth(image_path):
                relative = os.path.splitext(os.path.relpath(image_path, image_root))[0] + ".png"
                copies[image_path] = os.path.join(output_dir, "images_8bit", relative)
    refuse_existing(list(outputs.values()) + list(copies.values()), overwrite)
    # Both splits carry one conversion id, so that a loader can tell a pair of files written by
    # one conversion from a mix left by an interrupted --overwrite.
    info = {
        "image_root": os.path.abspath(image_root),
        "min_area": min_area,
        "conversion": uuid.uuid4().hex,
        "splits": list(outputs),
    }
    cats = [{"id": i, "name": n} for i, n in enumerate(categories, start=1)]
    splits = {
        s: {"info": info, "categories": cats, "images": [], "annotations": []} for s in outputs
    }
    image_ids, ann_ids = itertools.count(1), itertools.count(1)
    # Nothing is written in place until every pair has been read: transposed copies and JSON go
    # to temporary files first, and an error or interruption before the end removes them.
    with StagedWrites() as staged:
        for image_path, mask_path, group in tqdm(pairs, desc="converting", unit="slice"):
            image = read_grey_image(image_path, strict=True)
            mask = read_mask(mask_path, mask_values)
            if image.shape != mask.shape:
                raise DatasetFormatError(
                    mask_path,
                    f"mask size {mask.shape[::-1]} differs from image {image_path} "
                    f"size {image.shape[::-1]} (width, height)",
                )
            lung_path = (lung_masks or {}).get(image_path)
            if lung_path is not None and read_mask(lung_path, BINARY).shape != mask.shape:
                raise DatasetFormatError(lung_path, f"lung mask size differs from {image_path}")
            if transpose:
                image, mask = image.T, mask.T
            if image_path in copies:
                image_path = copies[image_path]
                staged.stage(
                    image_path,
                    lambda f, a=np.ascontiguousarray(image): Image.fromarray(a).save(
                        f, format="PNG"
                    ),
                )
            coco = splits["val" if group in val_groups else "train"]
            image_id = next(image_ids)
            coco["images"].append(
                {
                    "id": image_id,
                    "file_name": os.path.relpath(image_path, image_root).replace(os.sep, "/"),
                    "height": int(mask.shape[0]),
                    "width": int(mask.shape[1]),
                    "group": group,
                }
            )
            if lung_path is not None:
                coco["images"][-1]["lung_file"] = os.path.relpath(lung_path, image_root).replace(
                    os.sep, "/"
                )
            for ann in mask_to_annotations(mask, categories, min_area):
                ann.update(id=next(ann_ids), image_id=image_id)
                coco["annotations"].append(ann)
        for split, path in outputs.items():
            staged.stage(path, lambda f, obj=splits[split]: json.dump(obj, f), mode="w")
        staged.commit()
    for split, path in outputs.items():
        logger.info(
            "%s: %d images, %d instances",
            path,
            len(splits[split]["images"]),
            len(splits[split]["annotations"]),
        )
    return outputs


def _png_name(path):
    return os.path.splitext(os.path.basename(path))[0] + ".png"


# layout name -> (lister, declared mask values, merged categories, separate categories, transposed)
LAYOUTS = {
    "cncb": (list_cncb_pairs, CNCB_VALUES, CNCB_MERGED, CNCB_SEPARATE, False),
    "binary-folder": (None, BINARY_VALUES, BINARY_MERGED, None, False),
    "two-label-folder": (None, TWO_LABEL_VALUES, TWO_LABEL_MERGED, TWO_LABEL_SEPARATE, False),
    "medseg-multiclass": (None, TWO_LABEL_VALUES, TWO_LABEL_MERGED, TWO_LABEL_SEPARATE, True),
    "covid19-ct-seg": (list_volume_pairs, BINARY_VALUES, BINARY_MERGED, None, False),
}


def convert_layout(
    layout,
    input_dir,
    output_dir,
    *,
    separate=False,
    val_fraction=0.2,
    seed=0,
    min_area=100,
    overwrite=False,
):
    """Convert a dataset folder of a known layout to COCO JSON with a train/val split by group.

    Layouts: ``cncb`` (``image/<scan>/<frame>.jpg``, ``mask/<scan>/<frame>.png``, labels 0 bg,
    1 lung, 2 GGO, 3 consolidation; split by scan); ``binary-folder`` (``images/``, ``masks/``
    with 0/1, e.g. medseg100); ``two-label-folder`` (``images/``, ``masks/`` with 0 bg, 1 GGO,
    2 consolidation, e.g. the synthetic set); ``medseg-multiclass`` (the same, stored transposed);
    ``covid19-ct-seg`` (``images/``, ``masks/`` 0/255, optional ``lungs/`` 0/255 and
    ``volumes.csv``; split by volume). The other folder layouts split by file name, as they
    carry no scan id. Slices are kept as stored (upside-down volumes are not turned).

    Args:
        separate (bool): keep GGO and consolidation apart instead of merging them into Lesion.

    Returns:
        dict[str, str]: split name -> JSON path.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    lister, values, merged, apart, transpose = LAYOUTS[layout]
    if separate and apart is None:
        raise ValueError(f"layout {layout!r} has a single lesion label; it cannot be separated")
    if lister is None:
        pairs = list_folder_pairs(
            os.path.join(input_dir, "images"), os.path.join(input_dir, "masks")
        )
    else:
        pairs = lister(input_dir)
    if not pairs:
        raise DatasetFormatError(input_dir, "no image/mask pairs found")
    return convert_pairs(
        pairs,
        output_dir,
        categories=apart if separate else merged,
        mask_values=values,
        val_groups=split_by_group([g for _, _, g in pairs], val_fraction, seed),
        image_root=input_dir,
        transpose=transpose,
        min_area=min_area,
        overwrite=overwrite,
        lung_masks=lung_mask_files(pairs, os.path.join(input_dir, "lungs")),
    )
