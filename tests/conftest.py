"""Shared fixtures: small synthetic images with planted signal, and one full simulated run per session."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SHARED_NILEARN_DATA = PROJECT.parent / "shared" / "nilearn_data"
if "NILEARN_DATA" not in os.environ and SHARED_NILEARN_DATA.exists():
    os.environ["NILEARN_DATA"] = str(SHARED_NILEARN_DATA)
elif os.environ.get("NILEARN_DATA") and not Path(os.environ["NILEARN_DATA"]).is_absolute():
    # the README's command gives it relative to the project; the renders run in a temporary copy elsewhere
    os.environ["NILEARN_DATA"] = str(Path(os.environ["NILEARN_DATA"]).resolve())

def atlas_dir(subfolder: str) -> Path | None:
    """The nilearn data folder holding ``subfolder`` (NILEARN_DATA, else ../shared/nilearn_data), or None."""
    for cand in (os.environ.get("NILEARN_DATA"), SHARED_NILEARN_DATA):
        if cand and (Path(cand) / subfolder).is_dir():
            return Path(cand)
    return None


SHAPE = (7, 8, 9)
T_R = 7.0
N_SCANS = 84
ONSETS = (42.0, 126.0, 210.0, 294.0, 378.0, 462.0, 546.0)
CUBE = (slice(1, 4), slice(2, 5), slice(3, 6))  # where the block signal is planted


def _affine() -> np.ndarray:
    return np.diag([3.0, 3.0, 3.0, 1.0])


def _events() -> pd.DataFrame:
    return pd.DataFrame({"onset": ONSETS, "duration": [42.0] * 7, "trial_type": ["listening"] * 7})


def _bold_img(rng: np.random.Generator | None = None, effect: float = 3.0) -> nib.Nifti1Image:
    """A (7, 8, 9, 84) run: baseline 100, white noise sd 1, a block response of ``effect`` % in CUBE."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    rng = rng or np.random.default_rng(0)
    frame_times = np.arange(N_SCANS) * T_R
    reg = make_first_level_design_matrix(frame_times, _events(), hrf_model="spm", drift_model=None)["listening"]
    reg = reg.to_numpy() / reg.max()
    data = 100.0 + rng.standard_normal(SHAPE + (N_SCANS,))
    data[CUBE] += effect * reg
    img = nib.Nifti1Image(data.astype(np.float32), _affine())
    img.header.set_zooms((3.0, 3.0, 3.0, T_R))
    img.header.set_xyzt_units("mm", "sec")
    return img


@pytest.fixture
def rng():
    return np.random.default_rng(42)


@pytest.fixture
def affine():
    return _affine()


@pytest.fixture
def events():
    return _events()


@pytest.fixture
def bold_img(rng):
    return _bold_img(rng)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def write_config(folder: Path, cache_dir: Path | None = None, **sections) -> Path:
    """A TOML config for the simulated dataset writing into ``folder`` (cache in ``cache_dir`` if given)."""
    lines = ["[data]", 'dataset = "simulated"', "", "[output]", f'dir = "{folder}"']
    lines += [f'cache_dir = "{cache_dir}"', ""] if cache_dir else [""]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false"))
        lines.append("")
    path = folder / "analysis.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def sim_config_path(tmp_path_factory) -> Path:
    """Config of the one full-size simulated analysis shared by the end-to-end tests."""
    return write_config(tmp_path_factory.mktemp("simulated"))


@pytest.fixture(scope="session")
def sim_results(sim_config_path):
    """The full pipeline on the simulated dataset, run once per session."""
    from analysis import run

    return run(sim_config_path)


@pytest.fixture(scope="session")
def rendered_default(tmp_path_factory):
    """One real ``quarto render`` (html, typst, docx) of the default profile per session (tests/rendered.py)."""
    from rendered import render

    return render(tmp_path_factory.mktemp("render-default"), "default")


@pytest.fixture(scope="session")
def rendered_statmap(tmp_path_factory):
    """One real ``quarto render --profile statmap`` of a planted z map per session (tests/rendered.py)."""
    from rendered import render

    return render(tmp_path_factory.mktemp("render-statmap"), "statmap")


@pytest.fixture(scope="session")
def rendered_study(tmp_path_factory):
    """A 5 x 2 simulated study computed and rendered with ``quarto render --profile study`` (tests/study_render.py)."""
    from study_render import render_study

    return render_study(tmp_path_factory.mktemp("render-study"))
