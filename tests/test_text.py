import pytest

from analysis import text


@pytest.mark.parametrize("value, expected", [(0.0004, "p < .001"), (0.0324, "p = .032"), (0.5, "p = .500"),
                                             (1.0, "p = 1")])
def test_p_values_are_apa_style(value, expected):
    assert text.fmt_p(value) == expected


def test_formatters():
    assert text.fmt_mni((-52.4, -20.0, 8.6)) == "(\u221252, \u221220, 9) mm"
    assert text.fmt_z(-3.456) == "\u22123.46" and text.fmt_z(5.0) == "5.00"
    assert text.fmt_k(1) == "1 voxel" and text.fmt_k(1234) == "1,234 voxels"
    assert text.fmt_list(["a", "b", "c"]) == "a, b and c"


def test_blank_lines_make_paragraphs_and_block_tags_do_not(tmp_path, monkeypatch):
    (tmp_path / "t.md.j2").write_text("{% if x %}\nA is {{ v | z }}.\n{% endif %}\nB.\n\nC.\n")
    monkeypatch.setattr(text, "TEMPLATE_DIR", tmp_path)
    assert text.render("t.md.j2", x=True, v=2) == "A is 2.00. B.\n\nC."
