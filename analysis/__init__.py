"""First-level fMRI GLM analysis behind the Quarto report."""
