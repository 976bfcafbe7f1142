"""Object-detection data: COCO, YOLO and VOC readers into one in-memory form, augmentation, scene builder."""

from lobell.data.detection.augment import DetectionDataset, detection_collate, detection_transform
from lobell.data.detection.boxes import DetectionData, DetectionSample
from lobell.data.detection.formats import detect_format, read_detection

__all__ = ["DetectionData", "DetectionSample", "DetectionDataset", "detect_format", "detection_collate",
           "detection_transform", "read_detection"]
