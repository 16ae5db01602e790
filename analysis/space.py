"""Which MNI space an image is in, and whether a raw run already is in MNI space.

Names follow TemplateFlow:

* :data:`TEMPLATE_SPACE`: nilearn's bundled template (``load_mni152_template``), the file
  ``mni_icbm152_t1_tal_nlin_sym_09a``: the ICBM 2009a nonlinear *symmetric* template
  [@fonov2011]. The simulated data live on it and the ANTs normalisation targets it.
* :data:`ATLAS_SPACE`: FSL's MNI152 template, in which the Harvard-Oxford, Yeo 2011 and
  Schaefer 2018 atlases that nilearn fetches are distributed.

The two are both "MNI space" but not the same image: local differences of a few millimetres
mean that an atlas label near a region border is uncertain by about a voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TEMPLATE_SPACE", "ATLAS_SPACE", "DETECTED_SPACE", "SpaceCheck", "detect_mni"]

TEMPLATE_SPACE = "MNI152NLin2009aSym"
ATLAS_SPACE = "MNI152NLin6Asym"
DETECTED_SPACE = "MNI152"  # a raw run found to be in MNI space; which MNI template it was normalised to is unknown
MIN_DICE = 0.88  # brain mask of the run vs the MNI152 brain mask
MIN_INSIDE = 0.9  # share of the run's brain inside the MNI152 brain mask


@dataclass(frozen=True)
class SpaceCheck:
    """The evidence for (or against) an image being in MNI space."""

    is_mni: bool
    axis_aligned: bool
    dice: float  # Dice overlap of the run's EPI brain mask with the MNI152 brain mask on the run's grid
    inside: float  # share of the run's brain mask inside the MNI152 brain mask

    @property
    def reason(self) -> str:
        verdict = "in MNI space" if self.is_mni else "not in MNI space"
        return (f"detected as {verdict}: {'axis-aligned' if self.axis_aligned else 'oblique'} voxel grid, brain "
                f"mask overlapping the MNI152 brain mask with Dice {self.dice:.2f} ({100 * self.inside:.0f} % of "
                f"it inside; MNI needs an axis-aligned grid, Dice >= {MIN_DICE:g} and >= {100 * MIN_INSIDE:.0f} %)")


def detect_mni(img) -> SpaceCheck:
    """Is a 3D or 4D image already in MNI space? Decided from its affine and its brain's coverage.

    An image normalised to MNI152 is written on an axis-aligned grid and its brain coincides with the
    template's brain; a raw run in scanner coordinates generally does neither (head pose, neck, skull).
    The run's brain is nilearn's EPI mask of its mean image.
    """
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import mean_img, resample_to_img
    from nilearn.masking import compute_epi_mask

    rot = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    axis_aligned = bool(np.allclose(np.abs(rot), np.eye(3), atol=1e-3))
    ref = mean_img(img, copy_header=True) if len(img.shape) == 4 else img
    data = np.nan_to_num(np.asarray(ref.dataobj, dtype=np.float32))
    brain = np.asarray(compute_epi_mask(nib.Nifti1Image(data, ref.affine)).dataobj) > 0
    mni = resample_to_img(load_mni152_brain_mask(resolution=2), nib.Nifti1Image(brain.astype(np.uint8), ref.affine),
                          interpolation="nearest", force_resample=True, copy_header=True)
    mni = np.asarray(mni.dataobj) > 0
    both = int((brain & mni).sum())
    dice = 2 * both / (brain.sum() + mni.sum()) if (brain.sum() + mni.sum()) else 0.0
    inside = both / brain.sum() if brain.sum() else 0.0
    return SpaceCheck(is_mni=axis_aligned and dice >= MIN_DICE and inside >= MIN_INSIDE, axis_aligned=axis_aligned,
                      dice=float(dice), inside=float(inside))
