"""Inference at a site: predict with a trained medfed model on new images (``medfed predict``).

Modules, one job each: :mod:`.model` loads a checkpoint, :mod:`.inputs` reads and preprocesses
images, :mod:`.geometry` maps model-size outputs back to the source images, :mod:`.saliency`
computes Grad-CAM maps, :mod:`.overlays` draws PNG overlays, :mod:`.writers` writes CSV and
NIfTI files, :mod:`.dicom_seg` writes DICOM SEG objects and :mod:`.predict` runs it all.
"""
