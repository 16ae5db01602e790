"""Figures: one function per figure, ``plot_*(..., out_file) -> Path``; they draw, never compute."""
