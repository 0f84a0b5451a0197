"""Lesion overlays drawn with Detectron2's ``Visualizer``."""

import os

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

# Small slices are drawn enlarged so that labels stay legible.
_MIN_PANEL_SIDE = 512


def panel_scale(image):
    """Output size over input size of a drawn slice: small slices are enlarged to 512 pixels."""
    return max(1.0, _MIN_PANEL_SIDE / max(image.shape[:2]))


def draw_predictions(image_rgb, instances, metadata, score_threshold=0.0):
    """Boxes, masks, class and confidence of predicted lesions over an RGB uint8 image.

    Args:
        score_threshold (float): detections scoring below it are not drawn.
    """
    instances = instances.to("cpu")
    instances = instances[instances.scores >= score_threshold]
    vis = Visualizer(
        image_rgb, metadata, scale=panel_scale(image_rgb), instance_mode=ColorMode.IMAGE
    )
    return vis.draw_instance_predictions(instances).get_image()


def draw_ground_truth(image_rgb, record, metadata):
    """The annotated lesions of a dataset record over an RGB uint8 image."""
    vis = Visualizer(image_rgb, metadata, scale=panel_scale(image_rgb))
    return vis.draw_dataset_dict(record).get_image()


def save_prediction_panels(
    predictor, records, dataset_name, output_dir, score_threshold=0.5, overwrite=False
):
    """Write one PNG per record: the prediction on the left, the ground truth on the right.

    Args:
        predictor (DefaultPredictor): a trained lesion model.
        records (list[dict]): Detectron2 dataset dicts.
        dataset_name (str): for the class names in ``MetadataCatalog``.
        output_dir (str): created if missing.
        score_threshold (float): the lowest confidence drawn.
        overwrite (bool): replace existing panels.

    Returns:
        list[str]: the written paths.
    """
    metadata = MetadataCatalog.get(dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for record in records:
        name = os.path.splitext(os.path.basename(record["file_name"]))[0] + "_panel.png"
        path = os.path.join(output_dir, name)
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        image_bgr = read_image(record["file_name"], format="BGR")
        prediction = predictor(image_bgr)["instances"]
        image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        panel = np.concatenate(
            [
                draw_predictions(image_rgb, prediction, metadata, score_threshold),
                draw_ground_truth(image_rgb, record, metadata),
            ],
            axis=1,
        )
        Image.fromarray(panel).save(path)
        paths.append(path)
    return paths
