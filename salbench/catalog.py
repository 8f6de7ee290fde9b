"""What ``salbench list`` says of each registered name: a one-line description, the cost
(model passes per image at the paper defaults) and what it needs (a weight file, an extra).

Descriptions come from the registries (each entry's docstring); costs of the built-in
methods from :data:`METHOD_COSTS` (a formula on the entry's defaults), those of metrics
from their documented protocol; a plugin without an entry says "see its docs".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

P = dict[str, Any]

#: Method name -> its cost per image at the given parameters ("fwd+bwd": a forward and a
#: backward pass of the model; "fwd": a forward pass only).
METHOD_COSTS: dict[str, Callable[[P], str]] = {
    "vg": lambda p: "1 fwd+bwd",
    "gxi": lambda p: "1 fwd+bwd",
    "ig": lambda p: f"{p['steps']} fwd+bwd",
    "ig_p1": lambda p: f"{p['steps']} fwd+bwd",
    "ig_p2": lambda p: f"{p['steps']} fwd+bwd",
    "idgi_ig": lambda p: f"{p['steps']} fwd+bwd",
    "smoothgrad": lambda p: f"{p['samples']} fwd+bwd",
    "smoothgrad_sq": lambda p: f"{p['samples']} fwd+bwd",
    "gig": lambda p: f"{p['steps']} fwd+bwd",
    "gig_p1": lambda p: f"{p['steps']} fwd+bwd",
    "gig_p2": lambda p: f"{p['steps']} fwd+bwd",
    "idgi_gig": lambda p: f"{p['steps']} fwd+bwd",
    "blurig": lambda p: f"{p['steps']} fwd+bwd",
    "idgi_blurig": lambda p: f"{p['steps']} fwd+bwd",
    "g3": lambda p: f"{p['iterations']} fwd+bwd",
    "ggig": lambda p: f"{p['steps'] * p['iterations']} fwd+bwd",
    "geg": lambda p: f"{p['samples']} fwd+bwd (perturbed models)",
    "igos": lambda p: (f"{p['iterations'] * p['ig_steps']} fwd+bwd + up to "
                       f"{1 + 12 * p['iterations']} fwd (line search)"),
    "meaningful_perturbation": lambda p: f"{p['iterations']} fwd+bwd + 2 fwd",
    "dga": lambda p: f"{p['steps']} fwd+bwd",
    "dga_gxi": lambda p: f"{p['steps']} fwd+bwd",
    "fullgrad": lambda p: "1 fwd+bwd",
    "samp": lambda p: "~224*224/step pixels fwd+bwd (one per path step)",
    "samp_pp": lambda p: "~224*224/step pixels fwd+bwd (one per path step)",
    "gradcam": lambda p: "1 fwd+bwd",
    "gradcam_pp": lambda p: "1 fwd+bwd",
    "xgradcam": lambda p: "1 fwd+bwd",
    "layercam": lambda p: "1 fwd+bwd",
    "hirescam": lambda p: "1 fwd+bwd",
    "eigencam": lambda p: "1 fwd",
    "scorecam": lambda p: _per_channel(p),
    "ablationcam": lambda p: _per_channel(p),
    "rise": lambda p: f"{p['masks']} fwd",
    "xrai": lambda p: f"{2 * p['steps']} fwd+bwd + segmentation (CPU)",
    "lrp": lambda p: "1 fwd+bwd (modified rules)",
    "deeplift": lambda p: "1 fwd+bwd on 2 rows (input and reference)",
}

def _per_channel(p: P) -> str:
    cap = p.get("channels")
    per = "per channel of the layer" if cap is None else f"per channel, at most {cap}"
    return f"1 fwd + 1 fwd {per}"


#: Model name -> what it needs besides the core install.
MODEL_NEEDS: dict[str, str] = {
    "efficientnet_lite0": "nothing (weights ship with a core dependency)",
    "efficientnet_lite1": "the [models] extra",
    "efficientnet_lite2": "the [models] extra",
    "digits_cnn": "nothing (trained in seconds, cached)",
    "tiny_cnn": "nothing (random weights, tests)",
    "tiny_smooth": "nothing (random weights, tests)",
}


#: The five papers: the project's number (docstrings use it) -> (the short name users see,
#: the reference that defines it). The report and ``salbench list`` use these, never numbers.
PAPER_REFS: dict[str, tuple[str, str]] = {
    "000": ("Geometrically Guided Saliency paper",
            'Rahman, Lewis & Plis, "Geometrically Guided Saliency Maps"'),
    "001": ("IDGI paper", 'Yang, Wang & Bilgic, "IDGI: A Framework to Eliminate Explanation '
                          'Noise from Integrated Gradients", CVPR 2023'),
    "002": ("I-GOS paper", 'Qi, Khorram & Li, "Visualizing Deep Networks by Optimizing with '
                           'Integrated Gradients" (I-GOS), AAAI 2020'),
    "003": ("DGA paper", 'Jeon, Jeong & Choi, "Distilled Gradient Aggregation" (DGA), '
                         "NeurIPS 2022, supplement"),
    "004": ("SAMP paper", 'Zhang, Zheng, Zhou & Lu, "Path Choice Matters for Clear Attribution '
                          'in Path Methods" (SAMP), ICLR 2024'),
}
#: "paper 001" -> "IDGI paper": the papers by the names users know them by.
PAPERS = {f"paper {number}": short for number, (short, _) in PAPER_REFS.items()}
#: The design spec's section references ("SPEC 4", "SPEC 2 and 4"): developers' words only.
_SPEC_REF = re.compile(r"[;,]?\s*\bSPEC \d+(?:(?:,| and) \d+)*")
_NOT_AN_END = ("al.", "Alg.", "Eq.", "e.g.", "i.e.", "Sec.", "Fig.", "vs.")
LIMIT = 100


def first_sentence(text: str) -> str:
    """The first sentence of a docstring (at most :data:`LIMIT` characters), without its
    tensor-shape contract, papers named by title."""
    words, out, depth = " ".join(text.split()).split(" "), [], 0
    for word in words:
        out.append(word)
        depth += word.count("(") - word.count(")")
        if depth <= 0 and word.endswith((".", ":")) and not word.endswith(_NOT_AN_END):
            break
    line = " ".join(out).rstrip(":,. ")
    for number, title in PAPERS.items():
        line = line.replace(number, title)
    line = re.sub(r"\(\s*[;,]\s*", "(", _SPEC_REF.sub("", line))
    line = " ".join(re.sub(r"\(\s*\)", "", line).split())
    return line if len(line) <= LIMIT else line[: LIMIT - 3].rstrip() + "..."


def _model_needs(name: str) -> str:
    if name in MODEL_NEEDS:
        return MODEL_NEEDS[name]
    try:
        from salbench.models.torchvision_models import SPECS
    except ImportError:
        return ""
    if name in SPECS:
        return (f"a weight file {SPECS[name][1]} ($SALBENCH_WEIGHTS; "
                f"`salbench weights pull {name}`)")
    return ""


def entries(what: str) -> list[dict[str, str]]:
    """One dict per registered name of ``what`` (models, methods, metrics, datasets):
    ``name``, ``description``, ``cost``, ``needs``."""
    import salbench

    out: list[dict[str, str]] = []
    if what == "methods":
        for name in salbench.methods.names():
            spec = salbench.methods.get(name)
            cost = METHOD_COSTS.get(name)
            out.append({"name": name, "description": first_sentence(spec.description),
                        "cost": cost(spec.defaults) if cost else "see its docs",
                        "needs": _method_needs(name)})
    elif what == "metrics":
        for name in salbench.metrics.names():
            spec = salbench.metrics.get(name)
            where = {"model": "model stage", "cpu": "CPU stage"}.get(spec.stage, spec.stage)
            if spec.prepare is not None:
                where = "CPU bokeh images + model scoring"
            extra = " (re-runs the method)" if spec.needs_method else ""
            out.append({"name": name, "description": first_sentence(spec.description),
                        "cost": where + extra, "needs": ""})
    elif what == "models":
        for name in salbench.models.names():
            out.append({"name": name, "description": "", "cost": "",
                        "needs": _model_needs(name)})
    elif what == "datasets":
        for name in salbench.datasets.names():
            out.append({"name": name, "description": "", "cost": "", "needs": ""})
    else:
        raise ValueError(f"unknown listing {what!r}")
    return out


def _method_needs(name: str) -> str:
    return {"lrp": "the [lrp] extra (zennit)"}.get(name, "")


__all__ = ["METHOD_COSTS", "MODEL_NEEDS", "PAPERS", "PAPER_REFS", "entries", "first_sentence"]
