"""The papers' names for a run's methods in the report's paper tables
(salbench/report/columns.py): the mapping, and the paper tables of a hand-written run."""

from __future__ import annotations

import copy

from salbench.report.columns import paper_labels, paper_layout
from salbench.report.data import read_run
from salbench.report.tables import dga_tables, igos_tables, tables_markdown
from tests.test_report import CONFIG, make_run, md_rows

DGA_METHODS = [
    "gxi",
    {"name": "dga", "local": "gxi", "alias": "dga_with_gxi"},
    {"name": "dga", "local": "fullgrad"},
    {"name": "dga", "local": "fullgrad", "mask": "wc", "alias": "dga_w"},
    {"name": "dga", "local": "fullgrad", "mask": "epc", "alias": "dga_e"},
    "smoothgrad",
    "rise",
    "gradcam",
    "ig",
]


def test_paper_003_names_from_names_and_parameters():
    names = paper_labels("003", {"methods": DGA_METHODS},
                         ["gxi", "dga_with_gxi", "dga", "dga_w", "dga_e", "smoothgrad", "rise",
                          "gradcam", "ig"])
    assert names == {"gxi": "G*I", "dga_with_gxi": "DGA (G*I)", "dga": "DGA", "dga_w": "DGA_W",
                     "dga_e": "DGA_E", "smoothgrad": "SG", "rise": "RISE", "gradcam": "GCAM",
                     "ig": "ig"}  # Table 2 has no plain IG: the label stays


def test_the_registered_defaults_decide_when_a_config_leaves_a_parameter_out():
    from salbench import methods

    local = methods.get("dga").defaults["local"]
    names = paper_labels("003", {"methods": ["dga"]}, ["dga"])
    assert names["dga"] == {"fullgrad": "DGA", "gxi": "DGA (G*I)"}[local]
    # an entry this process cannot resolve keeps its label
    assert paper_labels("003", {"methods": ["no_such_method"]},
                        ["no_such_method"]) == {"no_such_method": "no_such_method"}


def test_other_papers_and_clashes():
    cfg = {"methods": ["gradcam", "rise", "ig", "igos",
                       {"name": "meaningful_perturbation", "alias": "mask"}]}
    assert paper_labels("002", cfg, ["gradcam", "rise", "ig", "igos", "mask"]) == {
        "gradcam": "GradCam", "rise": "RISE", "ig": "Integrated Gradients", "igos": "I-GOS",
        "mask": "Mask"}
    cfg = {"methods": [{"name": "samp", "direction": "deletion"},
                       {"name": "samp", "direction": "insertion", "alias": "samp_ins"},
                       {"name": "gig"}, {"name": "gig", "steps": 50, "alias": "gig50"}]}
    assert paper_labels("004", cfg, ["samp", "samp_ins", "gig", "gig50"]) == {
        "samp": "SAMP", "samp_ins": "SAMP, insertion path", "gig": "Guided IG [gig]",
        "gig50": "Guided IG [gig50]"}


def test_layout_puts_the_papers_columns_first_in_its_order():
    labels = ["ig", "gradcam", "dga", "gxi", "dga_with_gxi"]
    order, names, caption = paper_layout("003", {"methods": DGA_METHODS}, labels)
    assert order == ["gxi", "dga_with_gxi", "gradcam", "dga", "ig"]
    assert caption == ("Columns named as in the paper: G*I (gradient x input) = gxi; "
                       "DGA (G*I) = dga_with_gxi; GCAM (Grad-CAM) = gradcam; DGA = dga.")


def test_report_paper_tables_use_the_papers_names(tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["methods"] = DGA_METHODS[:5] + ["gradcam", "ig"]
    cfg["metrics"] = ["pixel_flip", "deletion_igos", "insertion_igos"]
    run_dir = make_run(tmp_path, "cols", cfg, errors=False)
    run = read_run(run_dir)
    md = "\n".join(tables_markdown(dga_tables(run) + igos_tables(run)))
    header, rows = md_rows(md, "DGA paper, supplement Tables 1-3: tiny_cnn")
    assert header == ["method", "LeRF (↑)", "MoRF (↓)"]
    assert [r[0] for r in rows] == ["G*I", "DGA (G*I)", "DGA_W", "DGA_E", "GCAM", "DGA", "ig"]
    _, rows = md_rows(md, "I-GOS paper, Tables 1-2: tiny_cnn")
    assert [r[0] for r in rows] == ["GradCam", "Integrated Gradients", "gxi", "dga_with_gxi",
                                    "dga", "dga_w", "dga_e"]
    assert "Columns named as in the paper: GradCam = gradcam; Integrated Gradients = ig." in md
    assert md.count("Columns named as in the paper: G*I (gradient x input) = gxi;") == 1

