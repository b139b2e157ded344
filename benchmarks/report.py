"""Markdown from measurements: the benchmark tables, the sweep's document, the family tables.

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
        for kind in ["base"] + names:
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
            "exactly its extra arithmetic.\n\n"
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


# ---------------------------------------------------------------- the sweep's document (benchmarks/sweep.py)

SWEEP_STAGES = ("build", "input", "train", "save", "convert", "load", "logits")
SWEEP_STAGE_TEXT = {"build": "build ({label} form)", "input": "input size", "train": "train step",
                    "save": "save checkpoint", "convert": "convert", "load": "strict load", "logits": "logits",
                    "stock": "stock model", "start": "start-up"}
SWEEP_FAILED = ("failed", "killed", "crashed")


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def stage_text(stage, label):
    return SWEEP_STAGE_TEXT.get(stage, stage).format(label=label)


def _sweep_cell(rec, stage):
    if stage in rec["errors"]:
        return "**fail**"
    reached = (SWEEP_STAGES.index(rec.get("stage", "build")) >= SWEEP_STAGES.index(stage)
               if rec.get("stage") in SWEEP_STAGES else False)
    return "ok" if reached and rec["status"] != "no_block" else "—"


def sweep_row(rec, label):
    """One model's row of the results table."""
    name = f"`{rec['model']}`"
    gb = f"{rec.get('peak_rss_mb', 0) / 1024:.1f}"
    secs = f"{rec.get('seconds', 0):.0f}"
    recipe = f"{rec.get('amp', '?')} / {rec.get('opt', '?')}"
    if rec["status"] in ("no_block", "stock_fails"):
        shown = f"no {label}" if rec["status"] == "no_block" else "stock fails"
        return f"| {name} | {shown} | {recipe} | — | — | — | — | — | {secs} | {gb} |"
    errors = rec["errors"]
    train = "**fail**" if "train" in errors or "save" in errors else _sweep_cell(rec, "train")
    if rec.get("diverged"):
        train = "**diverged**"
    if train == "ok" and rec.get("finite") is False:
        train = "ok (overflow)"
    logits = "—"
    if "logits_rel_err" in rec:
        logits = f"{rec['logits_rel_err']:.1e}" + (" **fail**" if "logits" in errors else "")
        if rec.get("overflow_at"):
            logits += f" (overflow at `{rec['overflow_at']}`; sites {rec.get('sites_rel_err', 0):.1e})"
        elif rec.get("rounding_rel") is not None:
            logits += (f" (the sites' error at every {label} moves them {rec['rounding_rel']:.1e}; "
                       f"sites {rec.get('sites_rel_err', 0):.1e})")
    elif "logits" in errors:
        logits = "**fail**"
    size = f"{rec['size']}" if rec.get("size") else ("**fail**" if "input" in errors else "—")
    blocks = rec.get("blocks", "**fail**" if "build" in errors else "—")
    return (f"| {name} | {blocks} | {recipe} | {size} | {train} | {_sweep_cell(rec, 'convert')} | "
            f"{_sweep_cell(rec, 'load')} | {logits} | {secs} | {gb} |")


def sweep_summary(recs, all_models, versions, label):
    """The paragraph of counts: how many models passed, failed, have no block, whose stock model fails."""
    counts = {}
    for rec in recs:
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    codes = ", ".join(dict.fromkeys(r.get("code", "unknown") for r in recs)) or "none"
    minutes = sum(r.get("seconds", 0) for r in recs) / 60
    spent = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
    failed = sum(counts.get(s, 0) for s in SWEEP_FAILED)
    return (f"**{len(recs)} of {len(all_models)} MindCV models** in this table: pass every step "
            f"{counts.get('ok', 0)}, fail {failed}, no {label} {counts.get('no_block', 0)}, stock model does not run "
            f"{counts.get('stock_fails', 0)} ({spent} of runs; {versions}; code: {codes}).")


def sweep_method(kind, label, sizes, batch, lr, tol, mode=1, rounding_factor=10):
    """The numbered description of the stages."""
    return [
        "For each model, in a process of its own (killed after `--timeout` seconds, default 600, or when its "
        "resident memory, watched four times a second, passes `--mem_gb`, default 10 GB; its address space is "
        "also limited to twice that plus 4 GB):",
        "",
        f"1. **{label}s**: the {label} form is built by the project's factory, "
        f"`acnet_ms.create_model(name, num_classes=10, block_type=\"{kind}\")`; the column is the number of k x k "
        f"convs that became {label}s (`acnet_ms.block_summary`). *no {label}*: the model has no eligible k x k conv "
        "(transformers, MLPs); the reasons are listed below. *stock fails*: MindCV's own model does not run a "
        f"training-mode forward pass at any of the sizes (listed below): not {article(label)} {label} problem.",
        f"2. **input**: the smallest of {', '.join(map(str, sizes))} px at which stock MindCV's model runs a "
        f"forward pass in training mode (most run at 64; vgg needs 224, its classifier expects 7 x 7 features; "
        f"inception_v3 299, for its auxiliary head, which only runs in training). The batch: {batch} random "
        f"images (normal noise, seed 0), int32 labels.",
        "3. **train step**: one step of the project's train step (`acnet_ms.training.factories.build_train_step`, "
        f"the options of `acnet_ms.config.loader.defaults()` with the recipe's `amp_level` and `opt`, constant "
        f"lr {lr}, no warm-up, fixed loss scale 1) "
        + ("in **graph mode** on CPU, the mode the recipes train in (the input size and the logits run in "
           "PyNative: only the step is compiled)" if mode == 0 else
           "in **PyNative mode** on CPU (one step does not repay compiling a graph)")
        + ". *ok (overflow)*: the step ran but its gradients were not all finite. *diverged*: the step ran "
        "but left weights that are not finite (their logits are not compared).",
        "4. The step cell is saved with `acnet_ms.io.checkpoint.write_checkpoint` and the metadata training writes "
        "(identity, `block_layout`, epoch, step, lr, config, loss-scale state), so the optimizer's slots are in "
        "the file as after a real epoch. If the step raised an error, the later steps still run, on the initial "
        "weights.",
        f"5. **convert**: `acnet_ms.convert.pipeline.convert_checkpoint` on that file (and it folds as many {label}s as the "
        "model has).",
        "6. **strict load**: the converted file goes into the stock `mindcv.create_model(name, num_classes=10)` "
        "with `mindspore.load_param_into_net(..., strict_load=True)`: nothing missing, nothing unused.",
        f"7. **logits**: in eval mode and float32, first site by site: each {label} of a fresh {label} model "
        "holding the training checkpoint's weights against the stock model's conv holding the converted ones (and "
        "its BN, where the block took the BN's place), on a random 16 x 16 input of its own; then the whole "
        "models on the same batch: max |difference| over max(1, the largest |logit|); above "
        f"{tol:.0e} is a failure (as in `tests/test_mindcv_families.py`). *overflow at X*: after one step at batch "
        f"{batch} the BNs' running statistics are far from the batch's and a deep model's eval-mode activations "
        f"grow past float32's range from block X on; the two models then overflow at different places, their "
        "logits are shown but not compared, and the site-by-site error (shown beside them) decides. *the sites' "
        f"error at every {label} moves them Y*: the logits differ by more than {tol:.0e}, so the {label} model's "
        f"eval-mode logits are measured again with every {label}'s output changed by the site check's error "
        "(its largest |value| times the sites' relative error, at least 2^-24, with a random sign per element; two draws); "
        f"where that alone moves them by Y and the difference is at most {rounding_factor} times Y, errors no "
        "larger than the site check allows explain it (deep models whose eval-mode BNs do not yet normalise "
        "amplify them), the exact sites decide and the row passes; "
        f"beyond {rounding_factor} times Y it fails.",
    ]


def sweep_rerun(recs, total, command, script_args, jsonl):
    """How to run it again (``command``: the make line; ``script_args``: what the script needs beyond
    ``--models`` for this kind; ``jsonl``: the default JSON-lines file)."""
    return [
        "**s**: wall time of the model's process (start-up and model builds included); **RSS**: its peak "
        "resident memory.",
        "",
        f"Run everything again: `{command}` (about {_estimate(recs, total)}; on a shared machine "
        f"`nice -n 10 {command}`). Some models: "
        f"`.venv/bin/python benchmarks/sweep.py{script_args} --models resnet18,'mobilenet_v3_*'` (names or glob "
        "patterns); their new results replace their old rows. Continue an interrupted sweep: add `--resume` (models "
        "already in the JSON lines file are skipped). Other options: `--timeout` seconds, `--mem_gb` (0: no "
        f"cap), `--jsonl` (default `{jsonl}`: one line per model, with the error tracebacks), "
        "`--out`.",
    ]


def recipe_table(source, default, family_recipes, model_recipes, family_of):
    """The AMP level and optimizer of each family, and the models whose own recipe differs."""
    lines = [
        "## AMP level and optimizer per family",
        "",
        f"From {source}: the level most of a family's recipes use, and their optimizer; the models "
        "whose own recipe differs are listed after the family. A family without a recipe runs "
        f"{default[0]} with {default[1]} (O2 is the level most of MindCV's Ascend recipes use).",
        "",
        "| family | AMP | optimizer | models with their own level/optimizer |",
        "|---|---|---|---|",
    ]
    for family, (amp, opt) in sorted(family_recipes.items()):
        own = ", ".join(f"`{m}` {a}/{o}" for m, (a, o) in sorted(model_recipes.items())
                        if family_of.get(m) == family and (a, o) != (amp, opt))
        lines.append(f"| {family} | {amp} | {opt} | {own} |")
    return lines


def sweep_failures(failures, label, why):
    """One line per failed stage, with what is known of it (``why``: model pattern -> text)."""
    lines = []
    for rec in failures:
        for stage in SWEEP_STAGES + ("start",):
            if stage not in rec["errors"]:
                continue
            later = ""
            if stage == "train" and rec.get("diverged"):
                later = " (convert and strict load then ran on these weights; logits not compared)"
            elif stage == "train" and rec.get("stage") in ("convert", "load", "logits"):
                later = " (convert, load and logits then ran on the initial weights)"
            text = explain(why, rec["model"])
            lines.append(f"- `{rec['model']}` ({rec.get('amp')}, {rec.get('opt')}), "
                         f"{stage_text(stage, label)}: {md(rec['errors'][stage])}{later}"
                         + (f". *Why:* {text}." if text else ""))
    return lines


def sweep_doc(records, all_models, setup):
    """The sweep's document. ``records``: model -> its record; ``setup``: a dict of kind, label, command,
    script_args, jsonl, versions, family_of, why, sizes, batch, lr, tol, recipes (source, default, family
    recipes, model recipes)."""
    s = setup
    label = s["label"]
    recs = [records[n] for n in all_models if n in records]
    failures = [r for r in recs if r["status"] in SWEEP_FAILED]
    graph = " (train step in graph mode)" if s.get("mode", 1) == 0 else ""
    lines = [f"# Recipe sweep: every MindCV model with {label}s, one training step, conversion, strict load{graph}",
             "",
             f"Written by `benchmarks/sweep.py` (`{s['command']}`); do not edit by hand.", "",
             sweep_summary(recs, all_models, s["versions"], label), ""]
    lines += sweep_method(s["kind"], label, s["sizes"], s["batch"], s["lr"], s["tol"], s.get("mode", 1),
                          s.get("rounding_factor", 10)) + [""]
    lines += sweep_rerun(recs, len(all_models), s["command"], s["script_args"], s["jsonl"]) + [""]
    lines += recipe_table(*s["recipes"], s["family_of"])
    lines += ["", "## Results", "",
              f"| model | {label}s | AMP / opt | input | train step | convert | strict load | logits (max rel. err) "
              "| s | RSS (GB) |",
              "|---|---:|---|---:|---|---|---|---:|---:|---:|"]
    lines += [sweep_row(r, label) for r in recs]
    lines += ["", f"## Failures ({len(failures)})", ""]
    lines += sweep_failures(failures, label, s["why"]) or ["None."]
    stock = [r for r in recs if r["status"] == "stock_fails"]
    if stock:
        lines += ["", f"## Stock MindCV model does not run ({len(stock)})", ""]
        lines += [f"- `{r['model']}`: {md(r.get('stock_error') or '')}" for r in stock]
    no_block = [r for r in recs if r["status"] == "no_block"]
    if no_block:
        lines += ["", f"## No {label} ({len(no_block)})", ""]
        lines += [f"- `{r['model']}`: {md(r.get('reason') or '')}" for r in no_block]
    return "\n".join(lines) + "\n"


def _estimate(recs, total):
    timed = [r["seconds"] for r in recs if r.get("seconds")]
    if not timed:
        return "an unknown time"
    minutes = sum(timed) / len(timed) * total / 60
    text = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
    return text if len(recs) == total else f"{text}, extrapolated from the {len(recs)} models above"
