"""Reference images for registration: the bundled MNI152 atlas, or a site's own file (SimpleITK).

The atlas is the MNI152 T1 template at 2 mm that ships inside the nilearn wheel (no download),
turned from NIfTI's RAS axes into the LPS patient coordinates of DICOM and SimpleITK.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from common.errors import DataFormatError

__all__ = ["ATLAS", "atlas_image", "nifti_to_image", "read_reference"]

#: The ``--register`` value that registers to the bundled atlas.
ATLAS = "atlas"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def nifti_to_image(image: nib.Nifti1Image) -> sitk.Image:
    """A NIfTI image (RAS world axes) as a float32 SimpleITK image in LPS coordinates."""
    affine = np.asarray(image.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _RAS_TO_LPS @ (affine[:3, :3] / spacing)
    data = np.asarray(image.get_fdata(), dtype=np.float32)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    out.SetSpacing(spacing.tolist())
    out.SetDirection(direction.ravel().tolist())
    out.SetOrigin((_RAS_TO_LPS @ affine[:3, 3]).tolist())
    return out


def atlas_image() -> sitk.Image:
    """The MNI152 T1 template (2 mm, 99 x 117 x 95 voxels) as a SimpleITK image."""
    # imported here: nilearn takes seconds to import; it ships no type information
    from nilearn.datasets import load_mni152_template  # type: ignore[import-untyped]

    return nifti_to_image(load_mni152_template(resolution=2))


def read_reference(path: Path) -> sitk.Image:
    """A site's reference volume (NIfTI, NRRD, MHA: what SimpleITK reads), as float32 3D.

    Raises:
        DataFormatError: the file cannot be read or is not a 3D single-channel volume.
    """
    if not path.is_file():
        raise DataFormatError(path, "no such reference file (--reference)")
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError:
        raise DataFormatError(path, "not a volume SimpleITK can read (--reference)") from None
    if image.GetDimension() != 3 or min(image.GetSize()) < 4:
        raise DataFormatError(path, f"reference must be a 3D volume, got size {image.GetSize()}")
    return image
