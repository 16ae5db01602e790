"""Quarto's freeze is emptied whenever results or package code change, and kept otherwise."""

import yaml

from analysis.freeze import fingerprint, sync_freeze
from conftest import PROJECT


def _package(tmp_path, template="A {{ x }}."):
    pkg = tmp_path / "pkg"
    (pkg / "templates").mkdir(parents=True, exist_ok=True)
    (pkg / "mod.py").write_text("X = 1\n")
    (pkg / "templates" / "t.md.j2").write_text(template)
    return pkg


def _frozen(project):
    d = project / "_freeze" / "chapters" / "03-results"
    d.mkdir(parents=True, exist_ok=True)
    (d / "execute-results.json").write_text("{}")
    return d


def test_freeze_kept_when_nothing_changed_and_emptied_when_anything_does(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    pkg = _package(tmp_path)
    assert sync_freeze("key1", project, cache, pkg)  # first render: nothing to keep
    frozen = _frozen(project)
    assert not sync_freeze("key1", project, cache, pkg) and frozen.exists()  # prose edit only: keep

    assert sync_freeze("key2", project, cache, pkg) and not frozen.exists()  # new results: discard
    frozen = _frozen(project)
    _package(tmp_path, template="B {{ x }}.")  # a template edit changes the prose of every chapter
    assert sync_freeze("key2", project, cache, pkg) and not frozen.exists()


def test_fingerprint_covers_code_and_templates(tmp_path):
    pkg = _package(tmp_path)
    a = fingerprint("k", pkg)
    (pkg / "mod.py").write_text("X = 2\n")
    assert fingerprint("k", pkg) != a and fingerprint("k", pkg) != fingerprint("other", pkg)


def test_project_freezes_with_the_hook_in_place():
    cfg = yaml.safe_load((PROJECT / "_quarto.yml").read_text())
    assert cfg["execute"]["freeze"] == "auto"
    assert cfg["project"]["pre-render"].strip() == "python -m analysis --prerender"
