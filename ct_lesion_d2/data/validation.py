"""Dataset checks to run before hours of training are spent on a dataset.

``ValidationReport`` collects, for each bad file, every problem found with it (so each bad file
is listed once), warnings, and per-split counts printed as a table. The checks:

- ``check_coco`` (cheap, no decoding; also run when a lesion dataset is loaded): the JSON
  structure, unique ids, image files present, annotations pointing at existing images and
  categories, boxes inside their image, polygons of 3 points or more, masks of the image's size
  and not empty, instance counts per category.
- ``check_images`` (decodes every image): readable, and of the size the annotations declare.
- ``check_mask_pairs``: image and mask readable and of one size, mask values among those the
  layout declares (before conversion).
- ``check_classification``: class ids, readable images, crop boxes inside them, counts per class.
- ``check_split_overlap``: no file, identical file content, or scan / patient / source document
  in two splits.
"""

import hashlib
import json
import logging
import os
from collections import Counter, OrderedDict

import pycocotools.mask as mask_util
from tqdm import tqdm

from .classification import COVIDX_CLASS_NAMES, parse_covidx_split
from .converters import LAYOUTS, list_folder_pairs
from .io import DatasetFormatError
from .readers import is_high_bit_depth, read_grey_image, read_mask

logger = logging.getLogger(__name__)

# Images smaller than this on a side are reported (a warning: they are valid but suspicious).
MIN_SIDE_WARNING = 32
# Boxes and polygons may stick out of their image by this many pixels (rounding) before it is
# an error.
BOX_TOLERANCE = 1.0


class ValidationReport:
    """Problems found in a dataset, by file, and counts by split."""

    def __init__(self):
        self.errors = OrderedDict()  # file or subject -> [problem, ...]
        self.warnings = OrderedDict()
        self.counts = OrderedDict()  # split -> Counter

    def error(self, path, problem):
        """Record an error with ``path`` (a file, or a subject such as ``group 'scan_07'``)."""
        problems = self.errors.setdefault(str(path), [])
        if problem not in problems:
            problems.append(problem)

    def warn(self, path, problem):
        problems = self.warnings.setdefault(str(path), [])
        if problem not in problems:
            problems.append(problem)

    def add_error(self, error):
        """Record a ``DatasetFormatError``."""
        self.error(error.path, error.problem)

    def count(self, split, key, n=1):
        self.counts.setdefault(split, Counter())[key] += n

    @property
    def ok(self):
        return not self.errors

    def table(self):
        """The per-split counts as a fixed-width text table."""
        columns = []
        for counter in self.counts.values():
            columns += [k for k in counter if k not in columns]
        header = ["split"] + columns
        rows = [
            [split] + [str(counter.get(c, 0)) for c in columns]
            for split, counter in self.counts.items()
        ]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines = [
            "  ".join(
                h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(r, widths))
            )
            for r in [header] + rows
        ]
        return "\n".join(lines)

    def summary(self):
        """The table, then every bad file once with its problems, then the warnings."""
        parts = [self.table()]
        for title, entries in (("errors", self.errors), ("warnings", self.warnings)):
            if entries:
                parts.append(f"\n{len(entries)} file(s) with {title}:")
                parts += [f"  {path}: {'; '.join(problems)}" for path, problems in entries.items()]
        parts.append(
            "\nOK: no errors" if self.ok else f"\nFAILED: {len(self.errors)} file(s) with errors"
        )
        return "\n".join(parts)

    def raise_if_errors(self, source, hint=None, limit=5):
        """Raise one ``DatasetFormatError`` on ``source`` summarising the first errors."""
        if self.ok:
            return
        listed = [f"{p}: {'; '.join(v)}" for p, v in list(self.errors.items())[:limit]]
        more = len(self.errors) - len(listed)
        text = f"{len(self.errors)} bad file(s): " + " | ".join(listed)
        if more:
            text += f" | ... and {more} more"
        raise DatasetFormatError(source, text + (f". {hint}" if hint else ""))


def load_json(path, report):
    """Parse a JSON file; a missing or malformed file is an error in ``report``."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        report.error(path, "file not found")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        report.error(path, f"not valid JSON ({e})")
    return None


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_polygons(segmentation, image, where, report, json_file):
    if not segmentation:
        report.error(json_file, f"{where}: no polygon (empty segmentation)")
        return
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) % 2:
            report.error(json_file, f"{where}: a polygon is not a flat list of x, y pairs")
        elif len(polygon) < 6:
            report.error(
                json_file,
                f"{where}: polygon of {len(polygon) // 2} point(s); at least " "3 are needed",
            )
        elif not _inside(polygon[0::2], polygon[1::2], image):
            report.error(json_file, f"{where}: polygon outside the image")


def _inside(xs, ys, image):
    t = BOX_TOLERANCE
    return (
        min(xs) >= -t
        and min(ys) >= -t
        and max(xs) <= image["width"] + t
        and max(ys) <= image["height"] + t
    )


def _check_rle(segmentation, image, where, report, json_file):
    size = segmentation.get("size")
    if list(size or []) != [image["height"], image["width"]]:
        report.error(
            json_file,
            f"{where}: mask size {size} (height, width) differs from its "
            f"image's {[image['height'], image['width']]}",
        )
        return
    try:
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_util.frPyObjects(rle, *size)
        area = int(mask_util.area(rle))
    except Exception as e:
        report.error(json_file, f"{where}: unreadable RLE mask ({e})")
        return
    if area == 0:
        report.error(json_file, f"{where}: empty mask")


def _check_annotation(ann, image, where, report, json_file):
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4):
        report.error(json_file, f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    elif bbox[2] <= 0 or bbox[3] <= 0:
        report.error(json_file, f"{where}: empty box {bbox}")
    elif not _inside([bbox[0], bbox[0] + bbox[2]], [bbox[1], bbox[1] + bbox[3]], image):
        report.error(
            json_file,
            f"{where}: box {bbox} outside the image of "
            f"{image['width']}x{image['height']} (width x height)",
        )
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        _check_polygons(segmentation, image, where, report, json_file)
    elif isinstance(segmentation, dict):
        _check_rle(segmentation, image, where, report, json_file)
    elif segmentation is not None:
        report.error(json_file, f"{where}: segmentation is neither polygons nor RLE")


def check_coco(coco, json_file, image_root, report, split=None, check_files=True):
    """Check a COCO instance JSON without decoding any image.

    Args:
        coco (dict): the parsed JSON.
        json_file (str): its path, named in the problems found in it.
        image_root (str): folder the ``file_name`` entries are relative to.
        report (ValidationReport): where problems and counts go.
        split (str or None): the split name of the counts (default: the file stem).
        check_files (bool): check that each image file exists.

    Returns:
        list[dict]: the well-formed image entries, each with its absolute ``path``.
    """
    split = split or os.path.splitext(os.path.basename(json_file))[0]
    lists = {k: coco.get(k) for k in ("images", "annotations", "categories")}
    missing = [k for k, v in lists.items() if not isinstance(v, list)]
    if missing:
        report.error(json_file, f"not a COCO instance file: no list {missing}")
        return []
    categories = {c.get("id"): c.get("name", str(c.get("id"))) for c in lists["categories"]}
    images, seen_names = {}, {}
    for entry in lists["images"]:
        image_id = entry.get("id")
        where = f"image id {image_id!r}"
        if image_id in images:
            report.error(json_file, f"{where}: id used twice")
            continue
        if not isinstance(entry.get("file_name"), str) or not (
            _positive_int(entry.get("width")) and _positive_int(entry.get("height"))
        ):
            report.error(json_file, f"{where}: needs file_name and positive integer width, height")
            continue
        path = os.path.normpath(os.path.join(image_root, entry["file_name"]))
        if path in seen_names:
            report.error(
                path,
                f"listed twice in {json_file} (image ids {seen_names[path]!r} and "
                f"{image_id!r})",
            )
        seen_names[path] = image_id
        if check_files and not os.path.isfile(path):
            report.error(path, f"image file not found (listed in {json_file})")
        images[image_id] = dict(entry, path=path, num_instances=0)
    report.count(split, "images", len(images))
    ann_ids = set()
    for index, ann in enumerate(lists["annotations"]):
        where = f"annotation id {ann.get('id', f'#{index}')!r}"
        if ann.get("id") in ann_ids:
            report.error(json_file, f"{where}: id used twice")
        ann_ids.add(ann.get("id"))
        image = images.get(ann.get("image_id"))
        if image is None:
            report.error(
                json_file,
                f"{where}: dangling, its image id {ann.get('image_id')!r} is " "not in images",
            )
            continue
        if ann.get("category_id") not in categories:
            report.error(
                json_file,
                f"{where}: category id {ann.get('category_id')!r} is not in " "categories",
            )
            continue
        _check_annotation(ann, image, f"{where} (image {image['file_name']})", report, json_file)
        image["num_instances"] += 1
        report.count(split, categories[ann["category_id"]])
    report.count(split, "no instance", sum(im["num_instances"] == 0 for im in images.values()))
    return list(images.values())


def file_digest(path):
    """SHA-1 of the file's bytes (finds one slice stored under two names)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_image(path, report, expected_size=None, eight_bit=False):
    """Decode one image (JPEG strictly); errors and a size differing from ``expected_size``
    (height, width) go to ``report``.

    Args:
        eight_bit (bool): warn about an image of more than 8 bits (the project's mappers
            scale it, but Detectron2's ``read_image`` clips it to 0-255).

    Returns:
        tuple[int, int] or None: the (height, width) read.
    """
    try:
        image = read_grey_image(path, strict=True)
    except DatasetFormatError as e:
        report.add_error(e)
        return None
    if eight_bit and is_high_bit_depth(path):
        report.warn(
            path,
            "image of more than 8 bits, which Detectron2's read_image (Visualizer, "
            "DefaultPredictor) clips to 0-255; tools/convert_dataset.py annotates 8-bit "
            "copies",
        )
    height, width = image.shape[:2]
    if expected_size is not None and tuple(expected_size) != (height, width):
        report.error(
            path,
            f"image is {width}x{height} (width x height) but the annotations say "
            f"{expected_size[1]}x{expected_size[0]}",
        )
    if min(height, width) < MIN_SIDE_WARNING:
        report.warn(path, f"image is only {width}x{height} pixels")
    return height, width


def check_images(entries, report, progress=True, desc="reading images"):
    """Decode every image of a lesion dataset's ``entries`` (dicts with ``path`` and optional
    ``height``, ``width``) and hash its bytes; images of more than 8 bits are reported.

    Returns:
        dict[str, str]: path -> SHA-1 of the files that could be read.
    """
    digests = {}
    for entry in tqdm(entries, desc=desc, unit="image", disable=not progress):
        path = entry["path"]
        if path in report.errors and any("not found" in p for p in report.errors[path]):
            continue
        size = (entry["height"], entry["width"]) if entry.get("height") else None
        if check_image(path, report, size, eight_bit=True) is not None:
            digests[path] = file_digest(path)
    return digests


def check_mask_pairs(pairs, mask_values, report, split="all", progress=True):
    """Check (image, mask, group) pairs of a source layout before conversion.

    Each image and mask must decode, have one size, and the mask hold only ``mask_values``.

    Returns:
        dict[str, str]: path -> SHA-1 of the readable images.
    """
    digests = {}
    for image_path, mask_path, _ in tqdm(
        pairs, desc="reading pairs", unit="pair", disable=not progress
    ):
        report.count(split, "images")
        size = check_image(image_path, report)
        try:
            mask = read_mask(mask_path, mask_values)
        except DatasetFormatError as e:
            report.add_error(e)
            continue
        if size is not None:
            digests[image_path] = file_digest(image_path)
            if mask.shape != size:
                report.error(
                    mask_path,
                    f"mask size {mask.shape[::-1]} differs from image "
                    f"{image_path} size {size[::-1]} (width, height)",
                )
                continue
        labels = [int(v) for v in set(mask.ravel().tolist()) if v]
        report.count(split, "no label" if not labels else "labelled")
    return digests


def check_classification(records, class_names, report, split, decode=True, progress=True):
    """Check classification records (``file_name``, ``class_id``, optional ``crop``).

    Returns:
        dict[str, str]: path -> SHA-1 of the readable images (empty without ``decode``).
    """
    digests = {}
    for record in tqdm(records, desc=f"reading {split}", unit="image", disable=not progress):
        path = record["file_name"]
        class_id = record.get("class_id")
        report.count(split, "images")
        if not isinstance(class_id, int) or not 0 <= class_id < len(class_names):
            report.error(path, f"class id {class_id!r} not in 0..{len(class_names) - 1}")
        else:
            report.count(split, class_names[class_id])
        if not decode:
            if not os.path.isfile(path):
                report.error(path, "image file not found")
            continue
        size = check_image(path, report)
        if size is None:
            continue
        digests[path] = file_digest(path)
        crop = record.get("crop")
        if crop is not None and (
            crop[0] >= size[1] or crop[1] >= size[0] or crop[2] <= 0 or crop[3] <= 0
        ):
            report.error(
                path,
                f"crop box {crop} does not overlap the image of "
                f"{size[1]}x{size[0]} (width x height)",
            )
    return digests


def check_split_overlap(files, groups, report, digests=None, group_kind="group"):
    """No file, file content or group in two splits.

    Args:
        files (dict[str, list[str]]): split -> image paths.
        groups (dict[str, dict[str, str]]): split -> {path: group (scan, patient, document)}.
        digests (dict[str, str] or None): path -> SHA-1, to find copies under other names.
        group_kind (str): what a group is, for the messages.
    """
    owner = {}
    for split, paths in files.items():
        for path in paths:
            key = os.path.realpath(path)
            if key in owner and owner[key] != split:
                report.error(path, f"in two splits: {owner[key]} and {split}")
            owner.setdefault(key, split)
    if digests:
        by_digest = {}
        for split, paths in files.items():
            for path in paths:
                digest = digests.get(path)
                if digest is None:
                    continue
                first = by_digest.setdefault(digest, (split, path))
                same_file = os.path.realpath(first[1]) == os.path.realpath(path)
                if first[0] != split and not same_file:  # the same file is reported above
                    report.error(path, f"same content as {first[1]} ({first[0]}), but in {split}")
    group_splits = {}
    for split, members in groups.items():
        for path, group in members.items():
            if group is not None:
                group_splits.setdefault(group, OrderedDict()).setdefault(split, path)
    for group, splits in group_splits.items():
        if len(splits) > 1:
            where = ", ".join(f"{s} ({os.path.basename(p)})" for s, p in splits.items())
            report.error(f"{group_kind} {group!r}", f"in {len(splits)} splits: {where}")
    for split, members in groups.items():
        report.count(split, f"{group_kind}s", len({g for g in members.values() if g is not None}))


# ----------------------------------------------------------------------------- whole datasets


def coco_image_root(coco, json_file):
    """The folder of the images of a converted COCO JSON: its ``info.image_root`` (relative to
    the JSON's folder), or None when the JSON does not record one."""
    root = (coco.get("info") or {}).get("image_root") if isinstance(coco, dict) else None
    if root is None:
        return None
    return root if os.path.isabs(root) else os.path.join(os.path.dirname(json_file), root)


def _coco_split(json_file, split, report, decode, progress):
    """Check one COCO JSON as the split ``split``; without ``info.image_root`` the images are
    looked for beside the JSON.

    Returns:
        tuple or None: (paths, path -> scan, path -> SHA-1), None when the JSON is unreadable.
    """
    coco = load_json(json_file, report)
    if not isinstance(coco, dict):
        if coco is not None:
            report.error(json_file, "not a COCO instance file (top level is not an object)")
        return None
    root = coco_image_root(coco, json_file) or os.path.dirname(os.path.abspath(json_file))
    entries = check_coco(coco, json_file, root, report, split)
    digests = check_images(entries, report, progress, desc=f"reading {split}") if decode else {}
    return [e["path"] for e in entries], {e["path"]: e.get("group") for e in entries}, digests


def _classification_split(records, class_names, split, report, decode, progress):
    """Check classification records as the split ``split`` (groups: ``group`` or ``patient``).

    Returns:
        tuple: (paths, path -> group, path -> SHA-1).
    """
    digests = check_classification(records, class_names, report, split, decode, progress)
    paths = [r["file_name"] for r in records]
    return paths, {r["file_name"]: r.get("group", r.get("patient")) for r in records}, digests


def _validate_splits(splits, report, group_kind="group"):
    """The one loop of the whole-dataset checks: run each split's check, then the overlap.

    Args:
        splits (iterable): (split name, callable returning ``(paths, groups, digests)`` or None
            when the split could not be read).
        report (ValidationReport): receives every problem.
        group_kind (str): what a group is, in the messages ("scan", "patient").

    Returns:
        ValidationReport
    """
    files, groups, digests = OrderedDict(), OrderedDict(), {}
    for split, check in splits:
        result = check()
        if result is None:
            continue
        files[split], groups[split], found = result
        digests.update(found)
    check_split_overlap(files, groups, report, digests, group_kind=group_kind)
    return report


def validate_coco_files(json_files, decode=True, progress=True, report=None):
    """Validate COCO JSON files as the splits of one dataset (split = file stem).

    Args:
        decode (bool): also decode every image (else only the cheap checks).

    Returns:
        ValidationReport
    """
    report = report or ValidationReport()
    splits = [
        (split, lambda f=f, split=split: _coco_split(f, split, report, decode, progress))
        for f, split in ((f, os.path.splitext(os.path.basename(f))[0]) for f in json_files)
    ]
    return _validate_splits(splits, report, group_kind="scan")


def validate_layout(layout, folder, progress=True):
    """Validate a source folder of a converter layout (``converters.LAYOUTS``): pairs, sizes and
    mask values, before conversion."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    lister, values = LAYOUTS[layout][0], LAYOUTS[layout][1]
    report, errors = ValidationReport(), []
    try:
        if lister is None:
            pairs = list_folder_pairs(
                os.path.join(folder, "images"), os.path.join(folder, "masks"), errors
            )
        else:
            pairs = lister(folder, errors)
    except DatasetFormatError as e:
        report.add_error(e)
        return report
    for error in errors:
        report.add_error(error)
    if not pairs and not errors:
        report.error(folder, "no image/mask pairs found")
    check_mask_pairs(pairs, values, report, split=layout, progress=progress)
    return report


def validate_covidx(
    folder, decode=True, progress=True, images="2A_images", split_file="{}_COVIDx_CT-1.txt"
):
    """Validate the COVIDx-CT split files of ``folder`` (every line, every image), and that no
    patient is in two splits."""
    report = ValidationReport()

    def check(split):
        path = os.path.join(folder, split_file.format(split))
        if not os.path.isfile(path):
            report.error(path, "split file not found")
            return None
        errors = []
        records = parse_covidx_split(path, os.path.join(folder, images), errors)
        for error in errors:
            report.add_error(error)
        return _classification_split(records, COVIDX_CLASS_NAMES, split, report, decode, progress)

    splits = [(split, lambda split=split: check(split)) for split in ("train", "val", "test")]
    return _validate_splits(splits, report, group_kind="patient")


def validate_datasets(names, decode=True, progress=True):
    """Validate registered datasets as the splits of one dataset: lesion datasets through their
    COCO JSON (``json_file`` metadata), classification datasets through their records.

    Returns:
        ValidationReport
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    report = ValidationReport()

    def check(name):
        if name not in DatasetCatalog.list():
            report.error(f"dataset {name!r}", "not registered")
            return None
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type") == "ct_classification":
            try:
                records = DatasetCatalog.get(name)
            except DatasetFormatError as e:
                report.add_error(e)
                return None
            classes = meta.get("thing_classes", [])
            return _classification_split(records, classes, name, report, decode, progress)
        if meta.get("json_file"):
            return _coco_split(meta.json_file, name, report, decode, progress)
        report.error(f"dataset {name!r}", "has neither a json_file nor classification records")
        return None

    return _validate_splits([(name, lambda name=name: check(name)) for name in names], report)
