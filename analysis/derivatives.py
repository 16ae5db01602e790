"""The output folder as a BIDS derivatives dataset: entity names, sidecars, ``dataset_description.json``.

Every map the analysis writes goes to ``derivatives/`` (``derivatives/sub-<label>/func/`` for a run's maps) with
the run's entities in its name (``sub``, ``ses``, ``task``, ``run``, ``space``, then ``contrast``, ``stat``,
``desc``) and a JSON sidecar; figures and tables carry the same entities. The statistical-map entities
``contrast`` and ``stat`` are not in BIDS 1.x's core; :data:`PYBIDS_CONFIG` declares them for pybids, as FitLins
does (``bids.BIDSLayout(root / "derivatives", config=["bids", "derivatives", PYBIDS_CONFIG], validate=False)``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RunEntities", "bids_name", "write_image", "write_sidecar", "write_dataset_description",
           "PYBIDS_CONFIG", "ENTITY_ORDER", "DERIVATIVES"]

DERIVATIVES = "derivatives"
ENTITY_ORDER = ("sub", "ses", "task", "run", "space", "contrast", "stat", "desc")
PYBIDS_CONFIG = Path(__file__).with_name("bids_statmaps.json")
_LABEL = re.compile(r"[A-Za-z0-9]+")
_NATIVE = {"", "native"}  # scanner space: BIDS leaves the space entity out


@dataclass(frozen=True)
class RunEntities:
    """The entities that name every output of one run (labels without their ``sub-`` etc. prefixes)."""

    sub: str = ""
    ses: str = ""
    task: str = ""
    run: str = ""
    space: str = ""  # "" or "native" for scanner space (no space entity)
    extra: dict[str, str] = field(default_factory=dict)

    def with_space(self, space: str) -> RunEntities:
        from dataclasses import replace

        return replace(self, space=space)

    def as_dict(self) -> dict[str, str]:
        out = {"sub": self.sub, "ses": self.ses, "task": self.task, "run": self.run,
               "space": "" if self.space in _NATIVE else self.space}
        return {k: v for k, v in {**out, **self.extra}.items() if v}

    @property
    def folder(self) -> str:
        """``derivatives/sub-01/func`` (``derivatives/sub-01/ses-2/func``), or ``derivatives`` without a subject."""
        if not self.sub:
            return DERIVATIVES
        return "/".join([DERIVATIVES, f"sub-{self.sub}", *([f"ses-{self.ses}"] if self.ses else []), "func"])


def bids_name(entities: RunEntities | Mapping[str, str], suffix: str, extension: str, **more: str) -> str:
    """``sub-01_task-auditory_space-MNI152NLin2009aSym_contrast-listening_stat-z_statmap.nii.gz``.

    Entities in BIDS order; empty values are left out. Labels must be letters and digits.
    """
    values = dict(entities.as_dict() if isinstance(entities, RunEntities) else entities)
    values.update({k: v for k, v in more.items() if v})
    parts = []
    for key in [*ENTITY_ORDER, *sorted(set(values) - set(ENTITY_ORDER))]:
        value = values.get(key, "")
        if not value:
            continue
        if not _LABEL.fullmatch(str(value)):
            raise ValueError(f"BIDS entity {key}-{value!r}: a label holds letters and digits only")
        parts.append(f"{key}-{value}")
    return "_".join([*parts, suffix]) + extension


def write_sidecar(path: Path, sidecar: Mapping) -> Path:
    """The JSON sidecar of ``path`` (``x.nii.gz`` -> ``x.json``), keys sorted."""
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    side = path.with_name(stem + ".json")
    side.write_text(json.dumps(dict(sidecar), indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return side


def write_image(root: Path, img, relative: str, sidecar: Mapping) -> str:
    """Save ``img`` at ``root / relative`` with its sidecar; returns ``relative``."""
    import nibabel as nib

    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    write_sidecar(path, sidecar)
    return relative


def write_dataset_description(root: Path, *, version: str, source: str, versions: Mapping[str, str]) -> str:
    """``derivatives/dataset_description.json`` with ``GeneratedBy`` (BIDS 1.9 derivatives)."""
    desc = {
        "Name": "Task-fMRI GLM report: first-level maps, thresholded maps, cluster labels and network masks",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fmri-report (Python package analysis)", "Version": version,
                         "Description": "nilearn first-level GLM, thresholds, cluster tables, DMN analysis"},
                        {"Name": "nilearn", "Version": versions.get("nilearn", "")}],
        "SourceDatasets": [{"Description": source}],
    }
    path = root / DERIVATIVES / "dataset_description.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(desc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return f"{DERIVATIVES}/dataset_description.json"
