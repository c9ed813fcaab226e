"""The ``crop`` step: batched MTCNN face detection and fixed-size face crops.

facenet-pytorch's MTCNN batch mode needs equal-sized images and its ``forward()`` raises on a
batch holding a faceless image (timesler/facenet-pytorch#224), so this module groups images by size,
calls ``detect()`` on downscaled copies, maps the boxes back to full resolution and crops itself.

Detections are cached per image content hash and detector settings, so label, fold or training
edits never detect again and new images are the only ones detected. Crops are stored as one
uint8 ``.npy`` array per split: training memory-maps it and decodes nothing.
"""

from maskpipe.crop.detect import BoxCache, DetectorSettings, detect_boxes, make_detector
from maskpipe.crop.geometry import CropGeometry, crop_region, cut, fallback_box, group_boxes
from maskpipe.crop.shoots import ShootGrouping, group_shoots
from maskpipe.images import look
from maskpipe.crop.placement import SOURCES, Placement
from maskpipe.crop.splits import DetectionPass, crop_split, crop_splits, detector_passes

__all__ = ["SOURCES", "BoxCache", "CropGeometry", "DetectionPass", "DetectorSettings", "Placement",
           "ShootGrouping", "crop_region", "crop_split", "cut", "detect_boxes", "detector_passes",
           "fallback_box", "group_boxes", "group_shoots", "look", "make_detector", "crop_splits"]
