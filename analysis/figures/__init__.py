"""Figures: one function per figure, ``plot_*(..., out_file) -> Path``; they draw, never compute."""

MNI_BACKGROUND = "MNI152"
"""``bg_img`` value meaning nilearn's MNI152 T1 template at 2 mm, loaded where the figure is drawn (once per
process): the analysis process need not resample the template, nor send it to the drawing processes.
(Defined here, not in ``_base``, so that naming it does not import matplotlib.)"""
