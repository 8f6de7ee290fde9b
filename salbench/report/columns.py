"""The papers' names for a run's methods: the column (or row) names of each paper's tables.

A run names its methods by label (a config entry's ``alias``, else its ``name``). A paper
table of the report shows, for each label, the name the paper's own table gives that method
(paper 003 supplement Table 1: "G*I", "DGA (G*I)", "DGA"; ...), found from the registered
name and the parameters that make the paper's variant (``dga`` with ``mask: wc`` is DGA_W).
Parameters a config leaves out take the method's registered defaults. A label whose method
the paper does not have keeps its label; two labels that would get one name get the name
with the label in brackets. docs/REPRODUCTION.md maps each paper's columns the other way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: paper key -> [(paper's name, registered method name, parameters that must match)], in the
#: order of the paper's tables. 002: I-GOS Tables 1-2; 003: DGA supplement Tables 1-3;
#: 004: SAMP Table 1.
PAPER_COLUMNS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "002": [
        ("Mask", "meaningful_perturbation", {}),
        ("GradCam", "gradcam", {}),
        ("RISE", "rise", {}),
        ("Integrated Gradients", "ig", {}),
        ("I-GOS", "igos", {}),
    ],
    "003": [
        ("G*I", "gxi", {}),
        ("DGA (G*I)", "dga_gxi", {"mask": "both"}),
        ("DGA (G*I)", "dga", {"local": "gxi", "mask": "both"}),
        ("IG_p1", "ig_p1", {}),
        ("IG_p2", "ig_p2", {}),
        ("GIG_p1", "gig_p1", {}),
        ("GIG_p2", "gig_p2", {}),
        ("DGA_W", "dga", {"local": "fullgrad", "mask": "wc"}),
        ("DGA_E", "dga", {"local": "fullgrad", "mask": "epc"}),
        ("DLIFT", "deeplift", {}),
        ("LRP", "lrp", {}),
        ("SG", "smoothgrad", {}),
        ("RISE", "rise", {}),
        ("GCAM", "gradcam", {}),
        ("DGA", "dga", {"local": "fullgrad", "mask": "both"}),
    ],
    "004": [
        ("LRP", "lrp", {}),
        ("Grad-CAM", "gradcam", {}),
        ("IG", "ig", {}),
        ("SmoothGrads", "smoothgrad", {}),
        ("DeepLIFT", "deeplift", {}),
        ("RISE", "rise", {}),
        ("XRAI", "xrai", {}),
        ("Blur IG", "blurig", {}),
        ("Guided IG", "gig", {}),
        ("SAMP", "samp", {"direction": "deletion"}),
        ("SAMP, insertion path", "samp", {"direction": "insertion"}),
        ("SAMP++", "samp_pp", {"direction": "deletion"}),
        ("SAMP++, insertion path", "samp_pp", {"direction": "insertion"}),
    ],
}

#: A paper's own abbreviation spelt out, for a table's caption.
SPELLED_OUT = {"DLIFT": "DeepLIFT", "SG": "SmoothGrad", "GCAM": "Grad-CAM",
               "G*I": "gradient x input", "Mask": "meaningful perturbation"}


def config_methods(config: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label -> (registered name, parameters: the registered defaults updated with the config
    entry's own) for each method of a recorded run config, in config order. A method this
    process cannot resolve (a plugin not importable here) gets its entry's parameters only."""
    from salbench import methods

    out: dict[str, tuple[str, dict[str, Any]]] = {}
    raw = config.get("methods")
    for item in raw if isinstance(raw, list) else []:
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping) or "name" not in entry:
            continue
        name = str(entry["name"])
        try:
            params = dict(methods.get(name).defaults)
        except Exception:  # noqa: BLE001 - any failure to resolve: the entry's own parameters
            params = {}
        params.update({k: v for k, v in entry.items() if k not in ("name", "alias")})
        out[str(entry.get("alias", name))] = (name, params)
    return out


def paper_name(paper: str, name: str, params: Mapping[str, Any]) -> str | None:
    """The name paper ``paper`` gives method ``name`` run with ``params``; None if the paper
    has no such method."""
    for title, method, required in PAPER_COLUMNS.get(paper, []):
        if method == name and all(params.get(k) == v for k, v in required.items()):
            return title
    return None


def paper_order(paper: str, title: str) -> int:
    """The position of ``title`` among the paper's columns (after them all if absent)."""
    titles = list(dict.fromkeys(t for t, _, _ in PAPER_COLUMNS.get(paper, [])))
    return titles.index(title) if title in titles else len(titles)


def paper_labels(paper: str, config: Mapping[str, Any], labels: list[str]) -> dict[str, str]:
    """Run method label -> its name in paper ``paper``'s tables, for ``labels`` (the run's
    methods): the paper's name, the label itself when the paper has no such method, and
    "Name [label]" when several labels get one name."""
    resolved = config_methods(config)
    names = {}
    for label in labels:
        name, params = resolved.get(label, (label, {}))
        names[label] = paper_name(paper, name, params) or label
    counts: dict[str, int] = {}
    for title in names.values():
        counts[title] = counts.get(title, 0) + 1
    return {label: (f"{t} [{label}]" if counts[t] > 1 and t != label else t)
            for label, t in names.items()}


def paper_layout(paper: str, config: Mapping[str, Any],
                 labels: list[str]) -> tuple[list[str], dict[str, str], str]:
    """The labels in the paper's column order (the paper's methods first, in its order; the
    others after, in run order), their paper names, and a caption line saying which run
    method each paper name is."""
    names = paper_labels(paper, config, labels)
    order = sorted(labels, key=lambda lb: (paper_order(paper, names[lb].split(" [")[0]),
                                           labels.index(lb)))
    legend = []
    for lb in (lb for lb in order if names[lb] != lb):
        spelled = SPELLED_OUT.get(names[lb].split(" [")[0])
        legend.append(f"{names[lb]}{f' ({spelled})' if spelled else ''} = {lb}")
    caption = ("Columns named as in the paper: " + "; ".join(legend) + ".") if legend else ""
    return order, names, caption
