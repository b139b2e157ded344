"""A result dict as presented: its printed table, its figure, and both written as files."""
import json
import os

from ..cli import UserError
from . import input_robustness, kernel_magnitude, kernel_sparsity, weight_quantization
from .common import _pyplot

#: the module of each analysis, by its result's ``analysis`` name
ANALYSES = {"magnitude": kernel_magnitude, "sparsity": kernel_sparsity, "robustness": input_robustness,
            "quantization": weight_quantization}


def table(result):
    """The printed table of a result dict."""
    return "\n".join(ANALYSES[result["analysis"]].table_lines(result))


def figure(result):
    """A matplotlib Figure of a result dict."""
    return ANALYSES[result["analysis"]].figure(result)


def write(result, out_dir):
    """Write ``<analysis>.json`` and ``<analysis>.png`` into ``out_dir`` (created if needed), atomically.

    Both files are first written under temporary names in ``out_dir`` and
    renamed only once both are complete.  Returns the two paths.
    """
    name = result["analysis"]
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    paths = [os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.png")]
    tmps = [os.path.join(out_dir, f".{os.path.basename(p)}.{os.getpid()}.tmp") for p in paths]
    try:
        with open(tmps[0], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        fig = figure(result)
        try:
            fig.savefig(tmps[1], format="png", dpi=110)
        finally:
            _pyplot().close(fig)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{out_dir}: cannot write {name} results ({err.strerror})") from None
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return paths
