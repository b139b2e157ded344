"""Markdown from measurements: the benchmark tables and the family tables (the sweep's document:
:mod:`sweep_report`).

Every function here takes results (the JSON the workers return, or records
built from it) and returns text: nothing runs a model, so the tables can be
rebuilt and tested from saved results.
"""
import fnmatch
import os
import statistics


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def md(text):
    """``text`` safe in a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def explain(table, key):
    """The explanation of ``key`` in ``table`` (glob pattern -> text), or None."""
    return next((text for pattern, text in table.items() if fnmatch.fnmatch(key, pattern)), None)


# ---------------------------------------------------------------- figures

def med(values):
    return statistics.median(values)


def fmt(values, scale=1.0, digits=1):
    """``median [min–max]`` of ``values`` times ``scale``."""
    values = [v * scale for v in values]
    return f"{med(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


# ---------------------------------------------------------------- the family tables

FAMILY_COLUMNS = "| family | member | k×k convs (k > 1) | {label}s (where the fold's bias goes) | stayed plain, and why |"


def family_table_row(family, name, row):
    """One row of a kind's family table (docs/families.md) from :func:`families.family_row`'s dict."""
    slots = ", ".join(f"{n} {where}" for where, n in row["slots"].items())
    plain = "; ".join(f"{n}: {reason}" for reason, n in row["plain"].items()) or "none"
    return f"| {family} | `{name}` | {row['convs']} | {row['blocks']} ({slots}) | {plain} |"


def family_table(records, kind, label):
    """The family table of one kind: ``records`` maps family -> a member's record (``families.run_member``);
    members whose stock model does not run, or whose kind form did not build, are left out (listed apart)."""
    rows = [family_table_row(family, rec["model"], rec["kinds"][kind]["row"])
            for family, rec in records.items() if "row" in rec.get("kinds", {}).get(kind, {})]
    return FAMILY_COLUMNS.format(label=label) + "\n|---|---|---|---|---|\n" + "\n".join(rows)


def conversion_cell(out):
    """A member's conversion under one kind: ``ok (relative error)``, ``**fail** (stage)`` or ``—``."""
    if "error" in out:
        return f"**fail** ({out['error']['stage']})"
    if "convert" in out:
        return f"ok ({out['convert']['rel_err']:.0e})"
    return "—"


def conversion_table(records, kinds):
    """member x kind: each conversion's outcome; and the CPU seconds of the member's kinds."""
    head = "| family | member | " + " | ".join(kinds) + " | CPU s |\n|---|---|" + "---|" * len(kinds) + "---:|"
    rows = []
    for family, rec in records.items():
        if rec.get("stock_error") or not rec.get("kinds"):
            continue
        outs = [rec["kinds"].get(k, {}) for k in kinds]
        cpu = sum(o.get("cpu_s", 0) for o in outs)
        rows.append(f"| {family} | `{rec['model']}` | " + " | ".join(conversion_cell(o) for o in outs) +
                    f" | {cpu:.0f} |")
    return head + "\n" + "\n".join(rows)


def family_failures(records, kinds, why):
    """One line per failure (a kind's build or conversion, or a member's worker), with its explanation
    from ``why`` (``"kind:member"`` glob pattern -> text)."""
    lines = []
    for family, rec in records.items():
        if rec.get("worker_error"):
            lines.append(f"- `{rec['model']}`: {md(rec['worker_error'])}")
        for kind in kinds:
            err = rec.get("kinds", {}).get(kind, {}).get("error")
            if err:
                text = explain(why, f"{kind}:{rec['model']}")
                lines.append(f"- {kind}, `{rec['model']}`, {err['stage']}: {md(err['text'])}"
                             + (f". *Why:* {text}" if text else ""))
    return lines


def families_doc(records, kinds, labels, convert=True, tol=1e-4, why=None, intro=""):
    """The whole document: one family table per kind, the conversions, the failures, the stock failures."""
    parts = ["# MindCV families, for every block kind", "",
             "Written by `benchmarks/families.py` (`make families`); do not edit by hand.", ""]
    if intro:
        parts += [intro, ""]
    for kind in kinds:
        parts += [f"## {kind}", "", family_table(records, kind, labels[kind]), ""]
    if convert:
        parts += ["## Conversion into stock MindCV", "",
                  "Each member's form of each kind, its BN statistics and affine parameters randomised, saved, "
                  "converted by `convert_checkpoint`, strict-loaded into the stock model and compared in eval "
                  f"mode: *ok* (max |difference| of the logits over max(1, the largest |logit|), at most {tol:.0e}) "
                  "or the stage that failed. CPU s: the member's conversions and builds of every kind.", "",
                  conversion_table(records, kinds), ""]
    failures = family_failures(records, kinds, why or {})
    parts += [f"## Failures ({len(failures)})", ""] + (failures or ["None."]) + [""]
    broken = [f"| {family} | `{rec['model']}` | {md(rec['stock_error'])} |"
              for family, rec in records.items() if rec.get("stock_error")]
    if broken:
        parts += ["## Stock MindCV models that do not run as shipped", "",
                  "MindCV 0.3.0 models that do not run on MindSpore 2.8 (stock model, one eval-mode forward pass):",
                  "", "| family | model | error |", "|---|---|---|"] + broken + [""]
    return "\n".join(parts)


def member_line(family, rec):
    """A progress line for one member: each kind's outcome."""
    if rec.get("stock_error"):
        return f"{family} ({rec['model']}): stock model fails: {rec['stock_error']}"
    outs = ", ".join(f"{k} {conversion_cell(o) if 'error' in o or 'convert' in o else o.get('row', {}).get('blocks')}"
                     for k, o in rec.get("kinds", {}).items())
    return (f"{family} ({rec['model']}): {outs or rec.get('worker_error', '')}; {rec.get('seconds', 0):.0f} s, "
            f"{rec.get('peak_mb', 0) / 1024:.1f} GB")


# ---------------------------------------------------------------- the benchmark sections (benchmarks/bench.py)

INFER_FORMS = ["acb", "folded", "deploy", "mindcv"]


def inference_section(results):
    """``results``: model -> the ``infer`` worker's result for the forms :data:`INFER_FORMS`."""
    rows, ratios = [], []
    for model, res in results.items():
        lat = res["latency"]
        for variant in INFER_FORMS:
            thr = [32 / t for t in res["throughput"][variant]]
            rows.append(f"| `{model}` | {variant} | {fmt(lat[variant], 1000)} | {fmt(thr)} |")
        ratios.append(f"| `{model}` | {med(lat['folded']) / med(lat['mindcv']):.3f} | "
                      f"{med(lat['deploy']) / med(lat['mindcv']):.3f} | {med(lat['acb']) / med(lat['mindcv']):.3f} | "
                      f"{min(lat['folded']) / min(lat['mindcv']):.3f} | {min(lat['deploy']) / min(lat['mindcv']):.3f} |")
    return ("### Inference (224×224)\n\n| model | form | latency, batch 1, ms | throughput, batch 32, images/s |\n"
            "|---|---|---|---|\n" + "\n".join(rows) +
            "\n\nForms: `acb` = ACB training form in eval mode; `folded` = our base model (what convert.py's "
            "output loads into); `deploy` = fully folded, no BN (`create_model(name, deploy=True)`); "
            "`mindcv` = stock MindCV model of the same architecture. The four forms of a model are timed "
            "round-robin in one process.\n\n"
            "Latency ratios from medians and from minima: interference on a shared host only ever "
            "adds time, so the fastest of many runs estimates a graph's own cost best.\n\n"
            "| model | folded ÷ MindCV latency | fully folded ÷ MindCV | ACB training form ÷ MindCV | "
            "folded ÷ MindCV, minima | fully folded ÷ MindCV, minima |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(ratios))


def folded_families_section(results):
    """``results``: model -> the ``infer`` worker's result for the forms folded, deploy, mindcv."""
    rows = []
    for model, res in results.items():
        lat = res["latency"]
        rows.append(f"| `{model}` | {fmt(lat['mindcv'], 1000)} | {med(lat['folded']) / med(lat['mindcv']):.3f} | "
                    f"{min(lat['folded']) / min(lat['mindcv']):.3f} | {med(lat['deploy']) / med(lat['mindcv']):.3f} |")
    return ("### Folded MindCV models (batch-1 latency, 224×224)\n\n"
            "A converted checkpoint loads into the stock model, so the folded form *is* MindCV's graph; "
            "`folded` here is `acnet_ms.create_model(name)` timed against a second `mindcv.create_model(name)` "
            "instance, round-robin (the spread of identical graphs), and `deploy` the fully folded form.\n\n"
            "| model | stock MindCV, ms | folded ÷ stock, medians | folded ÷ stock, minima | "
            "fully folded ÷ stock |\n|---|---|---|---|---|\n" + "\n".join(rows))


#: the ratios of the training section: (label, (model, form), (model, form)) of step medians
TRAIN_RATIOS = [
    ("ACB `sres18` ÷ base `sres18`", ("sres18", "acb"), ("sres18", "folded")),
    ("ACB without branch BNs (one conv) `sres18` ÷ base `sres18`", ("sres18", "acb_onebn"), ("sres18", "folded")),
    ("ACB `skresnet18` ÷ base `skresnet18`", ("skresnet18", "acb"), ("skresnet18", "folded")),
    ("our base `skresnet18` ÷ MindCV `skresnet18`", ("skresnet18", "folded"), ("skresnet18", "mindcv")),
    ("ACB `mobilenet_v2_100` ÷ base", ("mobilenet_v2_100", "acb"), ("mobilenet_v2_100", "folded")),
    ("ACB `regnet_x_400mf` ÷ base", ("regnet_x_400mf", "acb"), ("regnet_x_400mf", "folded")),
]
#: the peak-memory ratios of the training section: (label, model)
TRAIN_PEAK_RATIOS = [("peak RSS (compile + two steps), ACB `sres18` ÷ base (target ≤ 1.5)", "sres18"),
                     ("peak RSS, ACB `mobilenet_v2_100` ÷ base", "mobilenet_v2_100")]


def train_section(batch, times, peaks):
    """``times``: model -> form -> step seconds (the ``train`` worker); ``peaks``: model -> form -> peak
    RSS in MB (the ``train_memory`` worker's process)."""
    rows, meds = [], {}
    for model, forms in times.items():
        for variant, values in forms.items():
            meds[(model, variant)] = med(values)
            rows.append(f"| `{model}` | {'base' if variant == 'folded' else variant} | "
                        f"{fmt(values, 1000, 0)} | {batch / med(values):.1f} | {peaks[model][variant]:.0f} |")
    ratio = [f"| {label} | {meds[a] / meds[b]:.3f} |" for label, a, b in TRAIN_RATIOS]
    ratio += [f"| {label} | {peaks[model]['acb'] / peaks[model]['folded']:.2f} |" for label, model in TRAIN_PEAK_RATIOS]
    return (f"### Training step (forward + backward + SGD update, batch {batch}, 224×224)\n\n"
            "Step times of a model's forms are taken round-robin in one process; peak RSS (compile + "
            "two steps) in a process of its own per form. `acb_onebn` = `acb_branch_bn: false` (one BN after "
            "the summed convs, trained as one conv over the summed kernel). Base forms of MindCV names are "
            "MindCV's models.\n\n"
            "| model | form | step, ms | images/s | peak RSS, MB |\n|---|---|---|---|---|\n" + "\n".join(rows) +
            "\n\n| ratio | value |\n|---|---|\n" + "\n".join(ratio))


def memory_section(cap_gb, peaks):
    """``peaks``: model -> mode -> form (base, acb, acb_onebn) -> peak RSS in MB, ``None`` if stopped at the cap."""
    rows = []
    for model, modes in peaks.items():
        for mode, forms in modes.items():
            shown = {v: f"{p / 1024:.2f}" if p else f"> {cap_gb} (stopped)" for v, p in forms.items()}

            def ratio(v):
                if forms[v] and forms["base"]:
                    return f"{forms[v] / forms['base']:.2f}"
                return f"> {cap_gb * 1024 / forms['base']:.2f}" if forms["base"] else "—"
            rows.append(f"| `{model}` | {mode} | {shown['base']} | {shown['acb']} | {ratio('acb')} | "
                        f"{shown['acb_onebn']} | {ratio('acb_onebn')} |")
    return ("### Memory of compiling and running one training step (64 px, batch 2)\n\n"
            "Peak RSS of a process that builds the model and runs one step of the project's train step "
            "(momentum): in graph mode that includes compiling the step's graph. `acb_onebn` = ACB without "
            f"branch BNs (one conv over the summed kernel). A process past {cap_gb} GB is stopped. "
            "Target: ACB ÷ base ≤ 1.5.\n\n"
            "| model | mode | base, GB | ACB, GB | ACB ÷ base | ACB one-conv, GB | one-conv ÷ base |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def onnx_section(res):
    """``res``: runtime -> batch-1 seconds (the ``onnx`` worker), ``mindspore_stock`` among them."""
    stock = med(res["mindspore_stock"])
    rows = [f"| {name} | {fmt(t, 1000)} | {med(t) / stock:.2f} |" for name, t in res.items()]
    return ("### Deployed speed: the exported ONNX graph (fully folded `sres18`, batch 1, 224×224)\n\n"
            "`convert.py --fold_bn --export onnx` output in onnxruntime (CPU provider), next to the same "
            "fully folded model and stock MindCV `resnet18` in MindSpore graph mode, timed round-robin.\n\n"
            "| runtime | latency, ms | ÷ MindSpore stock `resnet18` |\n|---|---|---|\n" + "\n".join(rows))


def int8_section(results):
    """``results``: ``[{"model", "batch", "fp32": seconds, "int8": seconds}, ...]`` (the ``int8`` worker)."""
    rows = [f"| `{r['model']}` | {r['batch']} | {fmt(r['fp32'], 1000)} | {fmt(r['int8'], 1000)} | "
            f"{med(r['int8']) / med(r['fp32']):.2f} |" for r in results]
    return ("### INT8 in onnxruntime (fully folded graph, 224×224, CPU provider)\n\n"
            "The exported FP32 graph and its static INT8 quantization (`convert.py --int8`: QDQ, per-channel "
            "INT8 weights, UINT8 activations; random weights and calibration images, which do not change the "
            "speed), timed round-robin. Target: INT8 ÷ FP32 ≤ 0.6 for `sres18` at batch 16.\n\n"
            "| model | batch | FP32, ms | INT8, ms | INT8 ÷ FP32 |\n|---|---|---|---|---|\n" + "\n".join(rows))


def acb_layer_section(res):
    """``res``: formulation -> seconds (the ``acb_layer`` worker), ``plain`` among them."""
    base = med(res["plain"])
    rows = [f"| {name} | {fmt(t, 1000)} | {med(t) / base:.2f} |" for name, t in res.items()]
    return ("### One 3×3 layer, forward + backward in training mode (64→64 channels, 56×56, batch 16)\n\n"
            "The same function (every branch normalised by its own batch statistics) in three formulations.\n\n"
            "| formulation | ms | ÷ plain conv + BN |\n|---|---|---|\n" + "\n".join(rows))


def convert_section(results):
    """``results``: ``[{"model", "bytes": input file, "walls": seconds, "rss": MB per run}, ...]``."""
    rows = [f"| `{r['model']}` | {r['bytes'] / 1e6:.0f} | {fmt(r['walls'], 1, 2)} | {max(r['rss']):.0f} |"
            for r in results]
    return ("### convert.py (ACB checkpoint with optimizer state → plain checkpoint)\n\n"
            "| model | input file, MB | wall incl. start-up, s | peak RSS, MB |\n|---|---|---|---|\n" + "\n".join(rows))


def pipeline_section(results):
    """``results``: ``[{"workers": n, "images_per_s": [...]}, ...]``."""
    rows = [f"| {r['workers']} | {fmt(r['images_per_s'])} |" for r in results]
    return ("### Input pipeline (JPEG 500×375 decode + random resized crop 224 + flip + normalize, batch 32)\n\n"
            "| parallel workers | images/s |\n|---|---|\n" + "\n".join(rows))


def kinds_section(batch, size, names, train, folded):
    """``names``: the kinds; ``train``: model -> the ``kinds_train`` worker's result (times and multiply-adds
    per kind, ``base`` among them); ``folded``: model -> the ``kinds_folded`` worker's (seconds per kind and
    ``stock``)."""
    train_rows, lat_rows = [], []
    for model in train:
        times, macs = train[model]["times"], train[model]["macs"]
        for kind in ["base"] + names + [k for k in times if k not in names and k != "base"]:
            train_rows.append(f"| `{model}` | {kind} | {fmt(times[kind], 1000, 0)} | "
                              f"{med(times[kind]) / med(times['base']):.2f} | {macs[kind] / macs['base']:.2f} |")
        lat = folded[model]
        for kind in names:
            lat_rows.append(f"| `{model}` | {kind} | {fmt(lat[kind], 1000)} | {med(lat[kind]) / med(lat['stock']):.3f} | "
                            f"{min(lat[kind]) / min(lat['stock']):.3f} |")
    return (f"### Block kinds: training step and folded latency ({size}×{size})\n\n"
            f"Training step (forward + backward + momentum update, batch {batch}) of each kind's training form, "
            "timed round-robin with the base model in one process. Multiply-add ratio: the training form's "
            "forward multiply-adds ÷ base's (`count_macs`: convs, dense layers and average pools; a kind "
            "trained as one conv counts that conv), the step's FLOP floor: a step at that ratio costs "
            "exactly its extra arithmetic. `rep-csla`: rep's constant-scale form (RepOpt's hyper-search model, "
            "one conv per site); `repopt`: the plain model under RepOpt's optimizer (`RepOptMomentum`, "
            "docs/repopt.md).\n\n"
            "| model | kind | step, ms | step ÷ base | multiply-adds ÷ base |\n|---|---|---|---|---|\n" +
            "\n".join(train_rows) +
            "\n\nFolded latency (batch 1): the stock MindCV model holding each kind's folded weights against the "
            "stock model with its own, round-robin.\n\n"
            "| model | kind | folded, ms | folded ÷ stock, medians | folded ÷ stock, minima |\n|---|---|---|---|---|\n"
            + "\n".join(lat_rows))


def merge_section(text, section, header):
    """``text`` (a results file) with ``section`` in place of the section of the same title (its heading up to
    the first parenthesis), or added before the closing line; a line of when and where it was measured
    follows the heading."""
    title = section.split("\n", 1)[0].split("(")[0].strip()
    lines = text.rstrip("\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("### ")]
    closing = next((i for i, line in enumerate(lines) if line.startswith("(benchmark run took")), len(lines))
    mine = next((i for i in starts if lines[i].split("(")[0].strip() == title), None)
    if mine is None:
        begin = end = closing
    else:
        begin, end = mine, next((i for i in starts if i > mine), closing)
    head, body = section.split("\n", 1)
    stamp = "(this section: " + header.split("\n", 1)[0].rstrip(".") + ")"
    new = ([""] if begin and lines[begin - 1] else []) + [head, "", stamp] + body.split("\n") + [""]
    return "\n".join(lines[:begin] + new + lines[end:]) + "\n"
