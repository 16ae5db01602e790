"""Atlases: fetching with a recorded status, anatomical labels for peaks and clusters.

Every atlas goes through nilearn's own fetcher (``data_dir=`` or, when it is None,
the ``NILEARN_DATA`` / ``NILEARN_SHARED_DATA`` variables and ``~/nilearn_data``, as
nilearn searches them). A fetch never raises: it returns a :class:`LoadedAtlas`
whose :class:`AtlasStatus` says whether the atlas could be loaded and, if not, why
(so the report can show the reason in a callout). Atlases that are not on disk are
downloaded into a scratch folder (never into the shared data folder), with short
network time-outs, so an offline run fails in about a second.

Anatomical labels are only meaningful in MNI space: every labelling function takes a
``space`` argument and, for any other space, returns :data:`NATIVE_LABEL` instead of
an atlas label.

Labels come from the Harvard-Oxford maximum-probability atlases (thresholded at 25 %,
2 mm) [@desikan2006; @makris2006; @frazier2005; @goldstein2007]: the cortical atlas
first, the subcortical one for deep grey matter (its "Cerebral Cortex", "Cerebral White
Matter" and "Lateral Ventricle" classes are tissue classes, not regions: a point there
takes the nearest cortical label within ``search_radius`` mm, else the tissue class).

Examples
--------
>>> atlases = load_label_atlases(data_dir="../shared/nilearn_data")  # doctest: +SKIP
>>> label_coordinates([(-42, -22, 8)], atlases, space="MNI152NLin2009cAsym")["Label"][0]  # doctest: +SKIP
"Left Heschl's Gyrus (includes H1 and H2)"
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .serial import JSON_CONFIG
from .text import fmt_pct

__all__ = [
    "NATIVE_LABEL", "UNLABELLED", "ATLAS_SPECS", "YEO7_NETWORKS", "LABEL_ATLASES",
    "AtlasSpec", "FetchAttempt", "AtlasStatus", "LoadedAtlas",
    "is_mni", "fetch_atlas", "fetch_all", "load_label_atlases", "unavailable_atlases",
    "label_coordinates", "region_shares", "label_cluster_table", "label_caption",
    "atlas_comparison_table", "lookup_labels",
]

NATIVE_LABEL = "n/a (native space)"
UNLABELLED = "Unlabelled"
#: Yeo et al. (2011) names of the 7 networks (LUT rows ``7Networks_1`` .. ``7Networks_7``).
YEO7_NETWORKS = {1: "Visual", 2: "Somatomotor", 3: "Dorsal Attention", 4: "Ventral Attention",
                 5: "Limbic", 6: "Frontoparietal", 7: "Default"}
_TISSUE_CLASSES = ("Cerebral Cortex", "Cerebral White Matter", "Lateral Ventricle")
DEFAULT_BUDGET = 60.0  # seconds, whole fetch attempt


@dataclass(frozen=True)
class AtlasSpec:
    """What an atlas is, independent of whether it could be loaded in this run."""

    key: str
    title: str
    kind: str  # "deterministic" | "probabilistic" | "coordinates"
    fetcher: str  # nilearn function name
    kwargs: tuple[tuple[str, Any], ...]
    dataset_dir: str | None  # nilearn's folder name for the dataset (None: ships with nilearn)
    resolution: str  # nominal, e.g. "2 mm"
    regions: str  # nominal, e.g. "400 parcels"
    networks: str  # nominal, e.g. "7"
    citation: str  # pandoc key(s), e.g. "@yeo2011"

    @property
    def call(self) -> str:
        """The fetcher call as text, e.g. ``fetch_atlas_yeo_2011(n_networks=7, thickness='thick')``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"{self.fetcher}({args})"


ATLAS_SPECS: dict[str, AtlasSpec] = {s.key: s for s in [
    AtlasSpec("harvard_oxford_cort", "Harvard-Oxford cortical", "deterministic", "fetch_atlas_harvard_oxford",
              (("atlas_name", "cort-maxprob-thr25-2mm"),), "fsl", "2 mm", "48 cortical regions", "none",
              "@desikan2006; @makris2006; @frazier2005; @goldstein2007"),
    AtlasSpec("harvard_oxford_sub", "Harvard-Oxford subcortical", "deterministic", "fetch_atlas_harvard_oxford",
              (("atlas_name", "sub-maxprob-thr25-2mm"),), "fsl", "2 mm", "21 structures", "none",
              "@desikan2006; @makris2006; @frazier2005; @goldstein2007"),
    AtlasSpec("yeo_2011", "Yeo 2011", "deterministic", "fetch_atlas_yeo_2011",
              (("n_networks", 7), ("thickness", "thick")), "yeo_2011", "1 mm", "7 networks", "7", "@yeo2011"),
    AtlasSpec("yeo_2011_thin", "Yeo 2011 (thin)", "deterministic", "fetch_atlas_yeo_2011",
              (("n_networks", 7), ("thickness", "thin")), "yeo_2011", "1 mm", "7 networks", "7", "@yeo2011"),
    AtlasSpec("schaefer_2018", "Schaefer 2018", "deterministic", "fetch_atlas_schaefer_2018",
              (("n_rois", 400), ("yeo_networks", 7), ("resolution_mm", 2)), "schaefer_2018", "2 mm",
              "400 parcels", "7", "@schaefer2018"),
    AtlasSpec("seitzman_2018", "Seitzman 2020", "coordinates", "fetch_coords_seitzman_2018", (), None,
              "spheres of 4-5 mm radius", "300 ROIs", "13 (+ unassigned)", "@seitzman2020"),
    AtlasSpec("difumo", "DiFuMo", "probabilistic", "fetch_atlas_difumo",
              (("dimension", 64), ("resolution_mm", 2)), "difumo_atlases", "2 mm", "64 components", "none",
              "@dadi2020"),
    AtlasSpec("msdl", "MSDL", "probabilistic", "fetch_atlas_msdl", (), "msdl_atlas", "4 mm", "39 regions", "17",
              "@varoquaux2011"),
]}
#: The atlases used for anatomical labels, in order of precedence.
LABEL_ATLASES = ("harvard_oxford_cort", "harvard_oxford_sub")
COMPARISON_ATLASES = ("difumo", "schaefer_2018", "harvard_oxford_cort", "harvard_oxford_sub", "yeo_2011", "msdl",
                      "seitzman_2018")


@dataclass(frozen=True)
class FetchAttempt:
    """One call of a nilearn fetcher: what was called, where, how long it took and how it ended."""

    call: str
    data_dir: str | None  # as given (None: nilearn's default search path)
    searched: tuple[str, ...]  # folders searched for an existing copy
    found_in: str | None  # folder holding an existing copy, if any
    downloaded: bool  # True when the fetcher was allowed to download
    ok: bool
    error: str  # "" when ok, else "ExceptionType: message"
    seconds: float


@dataclass(frozen=True)
class AtlasStatus:
    """Whether an atlas could be loaded in this run, and what it holds (nominal values if not loaded)."""

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    key: str
    title: str
    kind: str
    resolution: str
    regions: str
    networks: str
    citation: str
    available: bool
    reason: str  # "" when available
    attempt: FetchAttempt | None = None

    @property
    def status_text(self) -> str:
        """``"loaded"`` or ``"not available: <reason>"``."""
        return "loaded" if self.available else f"not available: {self.reason}"


@dataclass(frozen=True)
class LoadedAtlas:
    """An atlas as nilearn returned it (``bunch``, None when unavailable) with its status."""

    status: AtlasStatus
    bunch: Any = field(default=None, repr=False, compare=False)

    @property
    def available(self) -> bool:
        return self.status.available

    @property
    def maps_img(self) -> nib.Nifti1Image | None:
        """The atlas image (loaded from the path nilearn returns when needed)."""
        if self.bunch is None or "maps" not in self.bunch:
            return None
        maps = self.bunch["maps"]
        return nib.load(maps) if isinstance(maps, (str, Path)) else maps

    @property
    def labels(self) -> list[str]:
        if self.bunch is None or "labels" not in self.bunch:
            return []
        return [str(lab) for lab in self.bunch["labels"]]


def is_mni(space: str | None) -> bool:
    """True for MNI template spaces (``MNI152NLin2009cAsym``, ``MNI152NLin6Asym``, ``MNI``...)."""
    return space is not None and str(space).strip().upper().startswith("MNI")


# --------------------------------------------------------------------------------------------
# fetching
# --------------------------------------------------------------------------------------------

def _search_dirs(data_dir: str | os.PathLike | None) -> list[str]:
    from nilearn.datasets import get_data_dirs

    return [str(d) for d in get_data_dirs(data_dir=None if data_dir is None else str(data_dir))]


def _existing_copy(dataset_dir: str, dirs: Sequence[str]) -> str | None:
    for d in dirs:
        path = Path(d) / dataset_dir
        if path.is_dir() and any(path.iterdir()):
            return d
    return None


def _default_download_dir() -> Path:
    return Path(tempfile.gettempdir()) / "analysis-nilearn-downloads"


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    readme = root / "README.md"
    if readme.exists() and len(list(root.iterdir())) == 1:
        readme.unlink()


def _call_with_budget(func, kwargs: dict, budget: float):
    """Call a nilearn fetcher in a daemon thread, giving up waiting for it after ``budget`` seconds.

    nilearn has no public setting for its HTTP time-outs (its own default is 15 s to connect, 61 s per read),
    so the budget alone bounds the wait; a download still running then finishes or fails in the background,
    in the scratch download folder.
    """
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = func(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(budget)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {budget:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "Failed to resolve" in text or "Name or service not known" in text or "NameResolutionError" in text:
        text = "no network (host name could not be resolved)"
    elif "Max retries exceeded" in text:
        text = "no network (connection failed)"
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}"


def _describe_loaded(spec: AtlasSpec, bunch) -> dict[str, str]:
    """Resolution and number of regions measured on the atlas as loaded."""
    out: dict[str, str] = {}
    try:
        if spec.kind == "coordinates":
            rois = bunch["rois"]
            radius = np.unique(np.asarray(bunch.get("radius", []), dtype=float))
            out["regions"] = f"{len(rois)} ROIs"
            if radius.size:
                r = "-".join(f"{v:g}" for v in (radius.min(), radius.max())) if radius.size > 1 else f"{radius[0]:g}"
                out["resolution"] = f"spheres of {r} mm radius"
            nets = pd.unique(pd.Series(np.asarray(bunch["networks"]).astype(str)))
            named = [n for n in nets if n.lower() != "unassigned"]
            out["networks"] = f"{len(named)}" + (" (+ unassigned)" if len(named) < len(nets) else "")
            return out
        maps = bunch["maps"]
        img = nib.load(maps) if isinstance(maps, (str, Path)) else maps
        zooms = img.header.get_zooms()[:3]
        out["resolution"] = (f"{zooms[0]:g} mm" if len(set(np.round(zooms, 3))) == 1
                             else " x ".join(f"{z:g}" for z in zooms) + " mm")
        labels = [str(lab) for lab in bunch.get("labels", [])]
        labels = [lab for lab in labels if lab.lower() != "background"]
        if spec.kind == "probabilistic" and len(img.shape) == 4:
            out["regions"] = f"{img.shape[3]} {'components' if spec.key == 'difumo' else 'regions'}"
        elif spec.key.startswith("yeo_2011"):
            out["regions"] = f"{len(labels)} networks"
        elif spec.key == "schaefer_2018":
            out["regions"] = f"{len(labels)} parcels"
        elif spec.key == "harvard_oxford_cort":
            out["regions"] = f"{len(labels)} cortical regions"
        elif spec.key == "harvard_oxford_sub":
            out["regions"] = f"{len(labels)} structures"
        elif labels:
            out["regions"] = f"{len(labels)} regions"
        if spec.key == "msdl" and "networks" in bunch:
            out["networks"] = str(len(set(map(str, bunch["networks"]))))
    except Exception:  # noqa: BLE001 - descriptive only; keep the nominal values
        pass
    return out


def fetch_atlas(key: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                download_dir: str | os.PathLike | None = None, budget: float = DEFAULT_BUDGET) -> LoadedAtlas:
    """Fetch one atlas of :data:`ATLAS_SPECS` with nilearn's fetcher; never raises.

    Parameters
    ----------
    key : str
        A key of :data:`ATLAS_SPECS` (``"harvard_oxford_cort"``, ``"yeo_2011"``, ``"difumo"``...).
    data_dir : path or None
        nilearn's ``data_dir``; None searches ``NILEARN_SHARED_DATA``, ``NILEARN_DATA`` and
        ``~/nilearn_data`` as nilearn does. Several folders may be joined with ``os.pathsep``.
    download : bool
        Whether an atlas that is not on disk may be downloaded. When False, its status says so.
    download_dir : path or None
        Where a download goes (default: a scratch folder under the system temp dir), so the
        data folder, which may be shared and read-only, is never written to.
    budget : float
        The whole attempt gives up after this many seconds.

    Returns
    -------
    LoadedAtlas
        ``status.available`` is False, with ``status.reason``, when the atlas could not be loaded.
    """
    import nilearn.datasets as nl_datasets

    spec = ATLAS_SPECS[key]
    nominal = dict(resolution=spec.resolution, regions=spec.regions, networks=spec.networks)
    searched = tuple(_search_dirs(data_dir))
    found_in = _existing_copy(spec.dataset_dir, searched) if spec.dataset_dir else None
    kwargs = dict(spec.kwargs)
    if spec.dataset_dir is not None:
        kwargs["verbose"] = 0
    start = time.perf_counter()
    scratch = None
    error = ""
    bunch = None
    if spec.dataset_dir is None or found_in is not None:
        may_download, call_dir = False, found_in
    elif download:
        scratch = Path(download_dir) if download_dir is not None else _default_download_dir()
        may_download, call_dir = True, str(scratch)
    else:
        may_download, call_dir = False, None
        error = "not found in " + (", ".join(searched) or "the nilearn data folders") + "; downloads disabled"
    if not error:
        if spec.dataset_dir is not None:
            kwargs["data_dir"] = call_dir
        try:
            func = getattr(nl_datasets, spec.fetcher)
            if scratch is not None:
                scratch.mkdir(parents=True, exist_ok=True)
            bunch = _call_with_budget(func, kwargs, budget)
            img_ok = spec.kind == "coordinates" or bunch.get("maps") is not None
            if not img_ok:
                raise ValueError("the fetcher returned no maps")
        except BaseException as exc:  # noqa: BLE001
            bunch = None
            error = _short_error(exc)
            if may_download:
                error = f"download failed ({error})"
            if scratch is not None:
                _remove_empty_dirs(scratch)
    attempt = FetchAttempt(call=spec.call, data_dir=None if data_dir is None else str(data_dir),
                           searched=searched, found_in=found_in, downloaded=may_download, ok=bunch is not None,
                           error=error, seconds=round(time.perf_counter() - start, 3))
    if bunch is not None:
        nominal.update(_describe_loaded(spec, bunch))
    status = AtlasStatus(key=spec.key, title=spec.title, kind=spec.kind, citation=spec.citation,
                         available=bunch is not None, reason=error, attempt=attempt, **nominal)
    return LoadedAtlas(status=status, bunch=bunch)


def fetch_all(keys: Iterable[str] = COMPARISON_ATLASES, data_dir=None, **kwargs) -> dict[str, LoadedAtlas]:
    """:func:`fetch_atlas` for each key; returns ``{key: LoadedAtlas}`` in the given order."""
    return {k: fetch_atlas(k, data_dir, **kwargs) for k in keys}


def load_label_atlases(data_dir=None, **kwargs) -> dict[str, LoadedAtlas]:
    """The Harvard-Oxford cortical and subcortical atlases used for anatomical labels."""
    return fetch_all(LABEL_ATLASES, data_dir, **kwargs)


def unavailable_atlases(atlases: Mapping[str, LoadedAtlas | AtlasStatus]) -> dict[str, str]:
    """``{title: reason}`` for the atlases that could not be loaded (for a callout)."""
    out = {}
    for a in atlases.values():
        st = a.status if isinstance(a, LoadedAtlas) else a
        if not st.available:
            out[st.title] = st.reason
    return out


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------

def _as_label_atlases(atlases, data_dir) -> dict[str, LoadedAtlas]:
    if atlases is None:
        return load_label_atlases(data_dir)
    return dict(atlases)


def _lookup(img: nib.Nifti1Image, xyz: np.ndarray) -> np.ndarray:
    """Integer atlas values at world coordinates (nearest voxel; 0 outside the image)."""
    data = np.asarray(img.dataobj)
    xyz = np.atleast_2d(np.asarray(xyz, dtype=float))
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), xyz)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(data.shape[:3])), axis=1)
    out = np.zeros(len(xyz), dtype=np.int64)
    if inside.any():
        i = ijk[inside]
        out[inside] = np.rint(data[i[:, 0], i[:, 1], i[:, 2]]).astype(np.int64)
    return out


def _hemisphere(x: float) -> str:
    return "Left" if x < -0.5 else "Right" if x > 0.5 else ""


def _with_hemi(name: str, x: float) -> str:
    hemi = _hemisphere(x)
    return f"{hemi} {name}" if hemi and not name.startswith(("Left", "Right")) else name


def _name(labels: Sequence[str], value: int) -> str:
    if value <= 0 or value >= len(labels):
        return ""
    return labels[value]


class _Labeller:
    """Vectorised Harvard-Oxford labelling of world coordinates."""

    def __init__(self, cort: LoadedAtlas | None, sub: LoadedAtlas | None, search_radius: float):
        self.cort = cort if cort is not None and cort.available else None
        self.sub = sub if sub is not None and sub.available else None
        self.cort_img = self.cort.maps_img if self.cort else None
        self.sub_img = self.sub.maps_img if self.sub else None
        self.cort_labels = self.cort.labels if self.cort else []
        self.sub_labels = self.sub.labels if self.sub else []
        self.search_radius = float(search_radius)
        self._cort_tree = None

    def _nearest_cortical(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.spatial import cKDTree

        if self._cort_tree is None:
            data = np.asarray(self.cort_img.dataobj)
            ijk = np.argwhere(data > 0)
            self._cort_vals = np.rint(data[tuple(ijk.T)]).astype(np.int64)
            self._cort_tree = cKDTree(nib.affines.apply_affine(self.cort_img.affine, ijk))
        dist, idx = self._cort_tree.query(xyz, k=1, distance_upper_bound=self.search_radius + 1e-6)
        found = np.isfinite(dist)
        vals = np.zeros(len(xyz), dtype=np.int64)
        vals[found] = self._cort_vals[idx[found]]
        return vals, np.where(found, dist, np.nan)

    def label(self, xyz: np.ndarray) -> pd.DataFrame:
        xyz = np.atleast_2d(np.asarray(xyz, dtype=float)).reshape(-1, 3)
        n = len(xyz)
        cort_v = _lookup(self.cort_img, xyz) if self.cort_img is not None else np.zeros(n, np.int64)
        sub_v = _lookup(self.sub_img, xyz) if self.sub_img is not None else np.zeros(n, np.int64)
        cort_names = [_name(self.cort_labels, v) for v in cort_v]
        sub_names = [_name(self.sub_labels, v) for v in sub_v]
        labels, dist = [], np.full(n, np.nan)
        need_near = [i for i in range(n) if not cort_names[i] and (not sub_names[i] or sub_names[i].endswith(
            _TISSUE_CLASSES))]
        near_v, near_d = (self._nearest_cortical(xyz[need_near]) if need_near and self.cort_img is not None
                          else (np.zeros(len(need_near), np.int64), np.full(len(need_near), np.nan)))
        near = {i: (near_v[j], near_d[j]) for j, i in enumerate(need_near)}
        for i in range(n):
            x = xyz[i, 0]
            if cort_names[i]:
                labels.append(_with_hemi(cort_names[i], x))
                dist[i] = 0.0
            elif sub_names[i] and not sub_names[i].endswith(_TISSUE_CLASSES):
                labels.append(sub_names[i])
                dist[i] = 0.0
            elif i in near and near[i][0] > 0:
                labels.append(_with_hemi(_name(self.cort_labels, near[i][0]), x))
                dist[i] = near[i][1]
            elif sub_names[i]:
                labels.append(sub_names[i])  # white matter / ventricle / unassigned cortex
                dist[i] = 0.0
            else:
                labels.append(UNLABELLED)
        cort_col = [_with_hemi(c, xyz[i, 0]) if c else UNLABELLED for i, c in enumerate(cort_names)]
        sub_col = [s if s else UNLABELLED for s in sub_names]
        return pd.DataFrame({"Harvard-Oxford cortical": cort_col, "Harvard-Oxford subcortical": sub_col,
                             "Label": labels, "Label distance (mm)": dist})


def _unavailable_text(atlas: LoadedAtlas | None, title: str) -> str:
    reason = atlas.status.reason if atlas is not None else "not loaded"
    return f"unavailable ({title}: {reason})"


def label_coordinates(coords, atlases: Mapping[str, LoadedAtlas] | None = None,
                      space: str = "MNI152NLin2009cAsym", *, data_dir=None,
                      search_radius: float = 4.0) -> pd.DataFrame:
    """Harvard-Oxford labels of MNI coordinates.

    Parameters
    ----------
    coords : array-like of shape (n, 3) or DataFrame with X, Y, Z columns
        World coordinates in mm.
    atlases : mapping or None
        ``{"harvard_oxford_cort": LoadedAtlas, "harvard_oxford_sub": LoadedAtlas}`` as
        :func:`load_label_atlases` returns; None fetches them from ``data_dir``.
    space : str
        Space of the coordinates. Anything but an MNI space gives :data:`NATIVE_LABEL`.
    data_dir : path or None
        Used only when ``atlases`` is None.
    search_radius : float
        A point outside every cortical region (or in the subcortical atlas's cortex/white
        matter classes) takes the nearest cortical label within this distance (mm).

    Returns
    -------
    DataFrame
        Columns ``X``, ``Y``, ``Z``, ``Harvard-Oxford cortical`` (hemisphere prefixed),
        ``Harvard-Oxford subcortical``, ``Label`` (the combined label) and ``Label distance (mm)``
        (0 on a direct hit, NaN when unlabelled). An atlas that could not be loaded leaves its
        column as ``"unavailable (<atlas>: <reason>)"``.
    """
    if isinstance(coords, pd.DataFrame):
        xyz = coords[["X", "Y", "Z"]].to_numpy(dtype=float)
    else:
        xyz = np.asarray(coords, dtype=float).reshape(-1, 3)
    out = pd.DataFrame(xyz, columns=["X", "Y", "Z"])
    if not is_mni(space):
        for col in ("Harvard-Oxford cortical", "Harvard-Oxford subcortical", "Label"):
            out[col] = NATIVE_LABEL
        out["Label distance (mm)"] = np.nan
        return out
    atlases = _as_label_atlases(atlases, data_dir)
    cort, sub = atlases.get("harvard_oxford_cort"), atlases.get("harvard_oxford_sub")
    labels = _Labeller(cort, sub, search_radius).label(xyz) if len(xyz) else pd.DataFrame(
        columns=["Harvard-Oxford cortical", "Harvard-Oxford subcortical", "Label", "Label distance (mm)"])
    if cort is None or not cort.available:
        labels["Harvard-Oxford cortical"] = _unavailable_text(cort, "Harvard-Oxford cortical")
    if sub is None or not sub.available:
        labels["Harvard-Oxford subcortical"] = _unavailable_text(sub, "Harvard-Oxford subcortical")
    if (cort is None or not cort.available) and (sub is None or not sub.available):
        labels["Label"] = "unavailable (no Harvard-Oxford atlas could be loaded)"
    return pd.concat([out, labels.reset_index(drop=True)], axis=1)


def lookup_labels(xyz, atlases: Mapping[str, LoadedAtlas], search_radius: float = 4.0) -> list[str]:
    """Combined Harvard-Oxford label of each MNI coordinate (no space check)."""
    return list(_Labeller(atlases.get("harvard_oxford_cort"), atlases.get("harvard_oxford_sub"),
                          search_radius).label(np.asarray(xyz, dtype=float))["Label"])


def _cluster_voxels(clusters) -> tuple[dict[str, np.ndarray], float]:
    """``{cluster id: xyz of its voxels}`` and the voxel volume (mm3).

    ``clusters`` is an integer label image (value = cluster number), or a mapping
    ``{cluster id: boolean mask image}``.
    """
    out: dict[str, np.ndarray] = {}
    if isinstance(clusters, Mapping):
        vol = None
        for cid, img in clusters.items():
            data = np.asarray(img.dataobj) > 0
            ijk = np.argwhere(data)
            out[str(cid)] = nib.affines.apply_affine(img.affine, ijk)
            vol = float(abs(np.linalg.det(img.affine[:3, :3])))
        return out, vol or 0.0
    img = clusters
    data = np.rint(np.asarray(img.dataobj)).astype(np.int64)
    for value in np.unique(data[data > 0]):
        out[str(int(value))] = nib.affines.apply_affine(img.affine, np.argwhere(data == value))
    return out, float(abs(np.linalg.det(img.affine[:3, :3])))


def region_shares(clusters, atlases: Mapping[str, LoadedAtlas] | None = None,
                  space: str = "MNI152NLin2009cAsym", *, stat_img: nib.Nifti1Image | None = None,
                  data_dir=None, search_radius: float = 0.0) -> pd.DataFrame:
    """Share of each cluster's voxels per Harvard-Oxford region.

    Parameters
    ----------
    clusters : Nifti1Image or mapping
        An integer label image (voxel value = cluster number, 0 elsewhere), or
        ``{cluster id: boolean mask image}``.
    atlases, space, data_dir
        As in :func:`label_coordinates`.
    stat_img : Nifti1Image, optional
        When given, the mean and extreme statistic of the cluster's voxels in each region.
    search_radius : float
        Nearest-cortical-label search for voxels outside the cortical atlas (0: none, so
        white matter voxels count as white matter).

    Returns
    -------
    DataFrame
        One row per cluster and region, largest share first: ``Cluster ID``, ``Region``,
        ``Voxels``, ``Share`` (fraction of the cluster) and, with ``stat_img``, ``Mean Stat``.
        In a non-MNI space one row per cluster with ``Region`` = :data:`NATIVE_LABEL`.
    """
    voxels, _ = _cluster_voxels(clusters)
    rows = []
    stat = None
    if stat_img is not None:
        stat = np.asarray(stat_img.dataobj, dtype=float)
        inv = np.linalg.inv(stat_img.affine)
    if is_mni(space):
        atlases = _as_label_atlases(atlases, data_dir)
        labeller = _Labeller(atlases.get("harvard_oxford_cort"), atlases.get("harvard_oxford_sub"), search_radius)
        if labeller.cort is None and labeller.sub is None:
            labeller = None
    for cid, xyz in voxels.items():
        n = len(xyz)
        values = None
        if stat is not None and n:
            ijk = np.rint(nib.affines.apply_affine(inv, xyz)).astype(int)
            values = stat[tuple(ijk.T)]
        if not is_mni(space) or labeller is None:
            region = NATIVE_LABEL if not is_mni(space) else "unavailable (no Harvard-Oxford atlas could be loaded)"
            row = {"Cluster ID": cid, "Region": region, "Voxels": n, "Share": 1.0 if n else math.nan}
            if stat is not None:
                row["Mean Stat"] = float(values.mean()) if n else math.nan
            rows.append(row)
            continue
        names = np.array(labeller.label(xyz)["Label"]) if n else np.array([], dtype=object)
        uniq, counts = np.unique(names, return_counts=True)
        order = np.lexsort((uniq, -counts))
        for j in order:
            row = {"Cluster ID": cid, "Region": str(uniq[j]), "Voxels": int(counts[j]), "Share": counts[j] / n}
            if stat is not None:
                row["Mean Stat"] = float(values[names == uniq[j]].mean())
            rows.append(row)
    cols = ["Cluster ID", "Region", "Voxels", "Share"] + (["Mean Stat"] if stat is not None else [])
    return pd.DataFrame(rows, columns=cols)


def _find_cluster(xyz: np.ndarray, label_imgs: Sequence[nib.Nifti1Image]) -> tuple[int, int] | None:
    """(map index, label value) of the cluster containing a peak coordinate."""
    for m, img in enumerate(label_imgs):
        value = int(_lookup(img, xyz)[0])
        if value > 0:
            return m, value
    return None


def label_cluster_table(cluster_table: pd.DataFrame, label_maps=None,
                        atlases: Mapping[str, LoadedAtlas] | None = None,
                        space: str = "MNI152NLin2009cAsym", *, data_dir=None, search_radius: float = 4.0,
                        top_regions: int = 3) -> pd.DataFrame:
    """Add Harvard-Oxford labels to a cluster table (peaks and sub-peaks) and region shares per cluster.

    Parameters
    ----------
    cluster_table : DataFrame
        As :func:`nilearn.reporting.get_clusters_table` returns it (``Cluster ID``, ``X``, ``Y``, ``Z``,
        ``Peak Stat``, ``Cluster Size (mm3)``; sub-peaks have IDs such as ``"1a"``); extra columns are kept.
    label_maps : Nifti1Image, list of Nifti1Image, mapping or None
        The cluster label image(s): nilearn's ``label_maps`` (``return_label_maps=True``), one label
        image whose values are the cluster numbers, or ``{cluster id: mask image}``. Each cluster is
        found through the voxel under its main peak, so nilearn's numbering of negative clusters
        does not matter. None: no region shares.
    atlases, space, data_dir, search_radius
        As in :func:`label_coordinates`.
    top_regions : int
        How many regions the ``Regions`` text lists per cluster.

    Returns
    -------
    DataFrame
        The input columns plus ``Label``, ``Harvard-Oxford cortical``, ``Harvard-Oxford subcortical``,
        ``Label distance (mm)`` for every row, and, on main-peak rows, ``Top Region``,
        ``Top Region Share`` (fraction) and ``Regions`` (e.g. ``"Left Heschl's Gyrus 62.5 %; ..."``).
        The caption naming the atlases is :func:`label_caption` (kept in ``Results.atlas``).
    """
    table = cluster_table.reset_index(drop=True).copy()
    if is_mni(space):
        atlases = _as_label_atlases(atlases, data_dir)
    labels = label_coordinates(table[["X", "Y", "Z"]] if len(table) else np.zeros((0, 3)), atlases, space,
                               search_radius=search_radius)
    for col in ("Label", "Harvard-Oxford cortical", "Harvard-Oxford subcortical", "Label distance (mm)"):
        table[col] = labels[col].to_numpy() if len(table) else pd.Series(dtype=object)
    ids = table["Cluster ID"].astype(str) if len(table) else pd.Series(dtype=str)
    is_main = ids.str.fullmatch(r"\d+") if len(table) else pd.Series(dtype=bool)
    top, top_share, text = [None] * len(table), [math.nan] * len(table), [""] * len(table)
    if label_maps is not None and len(table):
        if isinstance(label_maps, Mapping):
            masks = {str(k): v for k, v in label_maps.items()}
        else:
            maps = [label_maps] if isinstance(label_maps, nib.spatialimages.SpatialImage) else list(label_maps)
            masks = {}
            for i in np.flatnonzero(is_main.to_numpy()):
                hit = _find_cluster(table.loc[i, ["X", "Y", "Z"]].to_numpy(dtype=float), maps)
                if hit is not None:
                    img = maps[hit[0]]
                    data = np.rint(np.asarray(img.dataobj)).astype(np.int64) == hit[1]
                    masks[ids[i]] = nib.Nifti1Image(data.astype(np.uint8), img.affine)
        shares = region_shares(masks, atlases, space) if masks else pd.DataFrame(
            columns=["Cluster ID", "Region", "Voxels", "Share"])
        for i in np.flatnonzero(is_main.to_numpy()):
            sub = shares[shares["Cluster ID"] == ids[i]]
            if sub.empty:
                continue
            top[i], top_share[i] = sub["Region"].iloc[0], float(sub["Share"].iloc[0])
            text[i] = "; ".join(f"{r} {fmt_pct(s)}" for r, s in
                                zip(sub["Region"].iloc[:top_regions], sub["Share"].iloc[:top_regions]))
        table["Top Region"] = top
        table["Top Region Share"] = top_share
        table["Regions"] = text
    return table


def label_caption(atlases: Mapping[str, LoadedAtlas | AtlasStatus] | None, space: str) -> str:
    """One sentence naming the atlas behind the labels (or why there are none), with citations."""
    if not is_mni(space):
        return (f"Data are in {space} space, not MNI space: MNI atlas labels do not apply, "
                f"so no anatomical labels are given.")
    ho = ATLAS_SPECS["harvard_oxford_cort"]
    text = ("Anatomical labels: Harvard-Oxford cortical and subcortical structural atlases "
            f"(maximum-probability maps thresholded at 25 %, 2 mm, in FSL's MNI152 space) [{ho.citation}]")
    missing = unavailable_atlases(atlases or {})
    if missing:
        text += "; unavailable in this run: " + "; ".join(f"{k} ({v})" for k, v in missing.items())
    return text + "."


# --------------------------------------------------------------------------------------------
# comparison table
# --------------------------------------------------------------------------------------------

COMPARISON_COLUMNS = ["Atlas", "Type", "Resolution", "Regions", "Networks", "Loaded", "Status", "Citation",
                      "Fetcher"]


def atlas_comparison_table(atlases: Mapping[str, LoadedAtlas | AtlasStatus] | None = None, *, data_dir=None,
                           keys: Sequence[str] = COMPARISON_ATLASES, **fetch_kwargs) -> pd.DataFrame:
    """Compare the atlases used (or considered) for the DMN and labels, as fetched in this run.

    Parameters
    ----------
    atlases : mapping or None
        Results of earlier fetches (``LoadedAtlas`` or ``AtlasStatus``); missing keys are fetched now
        with :func:`fetch_atlas` (``data_dir`` and ``fetch_kwargs``).
    keys : sequence of str
        Rows, in order.

    Returns
    -------
    DataFrame
        Columns ``Atlas``, ``Type`` (deterministic / probabilistic / coordinates), ``Resolution``,
        ``Regions``, ``Networks``, ``Loaded`` (bool), ``Status`` (``"loaded"`` or
        ``"not available: <reason>"``), ``Citation`` (pandoc keys), ``Fetcher`` (the nilearn call).
        Resolution and region counts are measured on the loaded atlas, nominal otherwise.
    """
    atlases = dict(atlases or {})
    rows = []
    for key in keys:
        item = atlases.get(key)
        if item is None:
            item = fetch_atlas(key, data_dir, **fetch_kwargs)
        st = item.status if isinstance(item, LoadedAtlas) else item
        rows.append({"Atlas": st.title, "Type": st.kind, "Resolution": st.resolution, "Regions": st.regions,
                     "Networks": st.networks, "Loaded": bool(st.available), "Status": st.status_text,
                     "Citation": st.citation, "Fetcher": ATLAS_SPECS[key].call})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
