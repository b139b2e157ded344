"""Markdown from measurements: the sweep's document (``benchmarks/sweep.py``), from its JSON lines.

Nothing here runs a model: the document is rebuilt and tested from saved records.
"""
from harness import mindcv_note
from report import explain, md


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
            f"{counts.get('stock_fails', 0)} ({spent} of runs; {versions}; code: {codes}).{mindcv_note(versions)}")


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
