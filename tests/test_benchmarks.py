"""The benchmark tooling's pieces: tables from fixed results, the worker harness (memory cap, timeout,
crash), the family table of a small model for two kinds, and the sweep's command line."""
import os
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import harness  # noqa: E402  (benchmarks/ is a folder of scripts)
import report  # noqa: E402
import sweep_report  # noqa: E402


# ---------------------------------------------------------------- report: markdown from fixed results

def test_a_benchmark_section_from_fixed_results():
    train = {"sres18": {"times": {"base": [0.10, 0.12, 0.11], "acb": [0.22, 0.20, 0.24], "repopt": [0.11, 0.12, 0.11]},
                        "macs": {"base": 1000, "acb": 1670, "repopt": 1000}}}
    folded = {"sres18": {"stock": [0.010, 0.012, 0.011], "acb": [0.011, 0.013, 0.010]}}
    text = report.kinds_section(8, 224, ["acb"], train, folded)
    lines = text.split("\n")
    assert lines[0] == "### Block kinds: training step and folded latency (224×224)"
    assert "| `sres18` | base | 110 [100–120] | 1.00 | 1.00 |" in lines
    assert "| `sres18` | acb | 220 [200–240] | 2.00 | 1.67 |" in lines
    # RepOpt's row (a training form beside the kinds, no folded latency of its own) follows them
    assert lines.index("| `sres18` | repopt | 110 [110–120] | 1.00 | 1.00 |") == lines.index(
        "| `sres18` | acb | 220 [200–240] | 2.00 | 1.67 |") + 1
    # medians 11 / 11 ms; minima 10 / 10 ms
    assert "| `sres18` | acb | 11.0 [10.0–13.0] | 1.000 | 1.000 |" in lines


def test_merge_section_replaces_its_own_section_and_keeps_the_others():
    text = "Measured before.\n\n### A (x)\n\nold a\n\n### B\n\nold b\n\n(benchmark run took 5 s)\n"
    merged = report.merge_section(text, "### A (y)\n\nnew a", "Measured now.\nCommand")
    assert merged == ("Measured before.\n\n### A (y)\n\n(this section: Measured now)\n\nnew a\n\n### B\n\nold b\n\n"
                      "(benchmark run took 5 s)\n")


def sweep_record(model, status, **fields):
    return dict(dict(model=model, block_type="rep", family="resnet", amp="O2", opt="momentum", errors={},
                     seconds=40.0, peak_rss_mb=2048, code="abc1234", stage="logits"), status=status, **fields)


def test_the_sweep_document_from_fixed_records():
    records = {
        "resnet18": sweep_record("resnet18", "ok", blocks=17, size=64, finite=True, logits_rel_err=2e-7),
        "resnet101": sweep_record("resnet101", "ok", blocks=33, size=64, finite=True, logits_rel_err=2e3,
                                  overflow_at="layer2.2.conv2", sites_rel_err=8.2e-7),
        "seresnet101": sweep_record("seresnet101", "ok", blocks=34, size=64, finite=True, logits_rel_err=0.31,
                                    rounding_rel=0.3, sites_rel_err=3.3e-7),
        "vit_b_16_224": sweep_record("vit_b_16_224", "no_block", stage="build", reason="no k x k conv"),
        "hrnet_w32": sweep_record("hrnet_w32", "killed", stage="train", blocks=272, size=64,
                                  errors={"train": "killed: resident memory 10.1 GB over the 10 GB cap"}),
    }
    setup = dict(kind="rep", label="rep block", command="make sweep BLOCK_TYPE=rep", script_args=" --block_type rep",
                 jsonl="sweep_out/sweep_rep.jsonl", versions="mindspore 2.8.0", family_of={}, sizes=(64, 224),
                 batch=2, lr=0.01, tol=1e-4, why={"hrnet_w*": "its memory"},
                 recipes=("recipes", ("O2", "momentum"), {"resnet": ("O2", "momentum")}, {}))
    text = sweep_report.sweep_doc(records, sorted(records) + ["other"], setup)
    lines = text.split("\n")
    assert lines[0] == "# Recipe sweep: every MindCV model with rep blocks, one training step, conversion, strict load"
    assert ("**5 of 6 MindCV models** in this table: pass every step 3, fail 1, no rep block 1, stock model does "
            "not run 0 (3 min of runs; mindspore 2.8.0; code: abc1234).") in lines
    assert "| `resnet18` | 17 | O2 / momentum | 64 | ok | ok | ok | 2.0e-07 | 40 | 2.0 |" in lines
    assert ("| `resnet101` | 33 | O2 / momentum | 64 | ok | ok | ok | 2.0e+03 (overflow at `layer2.2.conv2`; sites "
            "8.2e-07) | 40 | 2.0 |") in lines
    assert ("| `seresnet101` | 34 | O2 / momentum | 64 | ok | ok | ok | 3.1e-01 (the sites' error at every rep block "
            "moves them 3.0e-01; sites 3.3e-07) | 40 | 2.0 |") in lines
    assert "| `vit_b_16_224` | no rep block | O2 / momentum | — | — | — | — | — | 40 | 2.0 |" in lines
    assert "| `hrnet_w32` | 272 | O2 / momentum | 64 | **fail** | — | — | — | 40 | 2.0 |" in lines
    assert ("- `hrnet_w32` (O2, momentum), train step: killed: resident memory 10.1 GB over the 10 GB cap. "
            "*Why:* its memory.") in lines
    assert "- `vit_b_16_224`: no k x k conv" in lines and "## No rep block (1)" in lines
    # a table made with MindCV 0.3 says where what differs under 0.5.0 is written; a 0.5.0 one does not
    made = sweep_report.sweep_doc(records, sorted(records), dict(setup, versions="mindspore 2.8.0, mindcv 0.3.0"))
    assert "mindcv 0.3.0; code: abc1234). Under MindCV 0.5.0 (GitHub main) the model names are the same" in made
    assert "docs/compatibility.md, \"What changes under MindCV 0.5.0\"." in made
    assert "\n## What changes under MindCV 0.5.0\n" in open(os.path.join(ROOT, "docs", "compatibility.md")).read()
    assert "Under MindCV" not in sweep_report.sweep_doc(records, sorted(records),
                                                         dict(setup, versions="mindspore 2.8.0, mindcv 0.5.0"))


# ---------------------------------------------------------------- harness: a tiny worker in a process of its own

WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {benchmarks!r})
    import harness

    def echo(spec, result_path):
        return dict(got=spec["value"])

    def grow(spec, result_path):
        blocks = []
        for _ in range(200):  # up to 4 GB, 20 MB at a time, every page touched
            blocks.append(b"\\x01" * (20 * 2 ** 20))
            time.sleep(0.02)
        return dict(survived=True)

    def stall(spec, result_path):
        harness.write_result(result_path, dict(stage="stalling"))
        time.sleep(60)

    def fail(spec, result_path):
        raise RuntimeError("this worker fails")

    harness.worker_entry(dict(echo=echo, grow=grow, stall=stall, fail=fail))
""")


@pytest.fixture(scope="module")
def worker_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("worker") / "tiny_worker.py"
    path.write_text(WORKER.format(benchmarks=os.path.join(ROOT, "benchmarks")))
    return str(path)


def test_the_harness_returns_a_workers_json_with_its_memory_and_time(worker_script):
    run = harness.run(worker_script, dict(kind="echo", value=[1, 2]), cap_mb=2000, timeout=60)
    assert run.ok and run.stopped is None and run.returncode == 0
    assert run.result["got"] == [1, 2]
    assert 0 < run.result["peak_rss_mb"] <= run.peak_mb < 2000 and run.seconds > 0


def test_the_harness_stops_a_worker_over_its_memory_cap(worker_script):
    run = harness.run(worker_script, dict(kind="grow"), cap_mb=300, timeout=120, poll=0.05)
    assert not run.ok and run.result is None
    assert run.stopped.startswith("killed: resident memory") and run.stopped.endswith("MB over the 300 MB cap")
    assert 300 < run.peak_mb < 2000


def test_the_harness_stops_a_worker_at_its_timeout_and_keeps_what_it_wrote(worker_script):
    run = harness.run(worker_script, dict(kind="stall"), timeout=3)
    assert run.stopped == "killed: timeout after 3 s" and 3 <= run.seconds < 30
    assert run.result["stage"] == "stalling"  # written before the stall


def test_the_harness_reports_a_crashed_workers_last_line(worker_script):
    run = harness.run(worker_script, dict(kind="fail"), timeout=60)
    assert run.stopped == "crashed (exit status 1): RuntimeError: this worker fails"
    assert run.returncode == 1 and run.result is None


def test_a_terminated_parent_takes_its_worker_with_it(worker_script, tmp_path):
    """``kill <sweep>`` (SIGTERM) stops the parent as Ctrl-C does: the worker, in a session of its own, goes too
    (it once ran on alone, holding gigabytes), and the parent exits as interrupted."""
    import signal
    import subprocess

    parent = tmp_path / "parent.py"
    parent.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(ROOT, "benchmarks")!r})
        import harness
        try:
            harness.run({worker_script!r}, dict(kind="stall"), timeout=120)
        except KeyboardInterrupt:
            sys.exit(130)
    """))
    proc = subprocess.Popen([sys.executable, str(parent)])
    deadline = time.time() + 60
    worker = None
    while worker is None and time.time() < deadline:
        time.sleep(0.2)
        worker = next((pid for pid in _children(proc.pid)), None)
    assert worker, "the worker did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{worker}") or _zombie(worker), "the worker outlived its parent"


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---------------------------------------------------------------- the family table of one model, two kinds

def test_the_family_table_of_a_small_model_for_two_kinds():
    import families

    acb, _ = families.family_row("resnet18", "acb")
    assert acb == dict(convs=17, blocks=16, slots={"BN slot": 16},
                       plain={"kernel 7x7 (ACNet converts odd k with 1 < k < 7)": 1})
    orepa, _ = families.family_row("resnet18", "orepa")
    assert orepa == dict(convs=17, blocks=17, slots={"kernel alone": 17}, plain={})
    # the ACB row is docs/families.md's
    with open(os.path.join(ROOT, "docs", "families.md"), encoding="utf-8") as f:
        assert report.family_table_row("ResNet", "resnet18", acb) + "\n" in f.read()
    table = report.family_table({"ResNet": dict(model="resnet18", kinds={"orepa": dict(row=orepa)})},
                                "orepa", "OREPA block")
    assert table.split("\n")[0] == ("| family | member | k×k convs (k > 1) | OREPA blocks (where the fold's bias goes) "
                                    "| stayed plain, and why |")
    assert table.split("\n")[2] == "| ResNet | `resnet18` | 17 | 17 (17 kernel alone) | none |"


# ---------------------------------------------------------------- the sweep's command line

def test_the_sweep_takes_any_kind_and_names_its_files_after_it(capsys):
    import sweep

    args = sweep.parse(["--block_type", "dbb"])
    assert args.kind.name == "dbb"
    assert args.out == os.path.join(ROOT, "docs", "sweep_dbb.md")
    assert args.jsonl == os.path.join(ROOT, "sweep_out", "sweep_dbb.jsonl")
    assert sweep.parse([]).out == os.path.join(ROOT, "docs", "sweep.md")
    assert sweep.select("resnet*", ["a", "resnet18", "resnet50", "resnet101"], limit=2) == ["resnet18", "resnet50"]
    with pytest.raises(ValueError, match="'resnet7' matches no MindCV model .did you mean resnet18"):
        sweep.select("resnet7", ["resnet18"])
    with pytest.raises(SystemExit) as exit_:
        sweep.parse(["--block_type", "acbb"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: --block_type: block_type must be one of base, acb")


@pytest.mark.slow
def test_the_maxpool_shift_script_scores_both_paddings(capsys):
    """benchmarks/maxpool_shift.py (docs/pretrained.md's top-1 table), untrained and small: one row, both
    scores, and a logit change that is not zero (the paddings compute different functions)."""
    import maxpool_shift

    maxpool_shift.main(["--size", "16", "--epochs", "0", "--seeds", "0"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 |")]
    assert len(rows) == 1, rows
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert all(0.0 <= float(c) <= 1.0 for c in cells[1:3]) and float(cells[4]) > 0, cells


def test_the_sweeps_site_check_passes_a_right_fold_and_names_a_wrong_site(tmp_path):
    """benchmarks/sweep_step.py's site-by-site fold check (what decides where a deep model's eval-mode logits
    overflow float32): each block against the stock conv (and BN) holding its folded weights."""
    import mindcv
    import mindspore as ms
    import numpy as np
    import sweep_step
    from helpers import load_strict, training_checkpoint

    from acnet_ms.convert.pipeline import convert_checkpoint

    src, dst = str(tmp_path / "train.ckpt"), str(tmp_path / "plain.ckpt")
    fresh = training_checkpoint(src, "resnet18", block_type="dbb")
    convert_checkpoint(src, dst, log=lambda *_: None)
    stock = load_strict(mindcv.create_model("resnet18", num_classes=10), dst)
    err, _ = sweep_step.site_errors(fresh, stock, np, ms)
    assert err < 1e-5
    conv = dict(stock.cells_and_names())["layer3.0.conv1"]
    conv.weight.set_data(ms.Tensor(conv.weight.asnumpy() * 1.01))
    err, site = sweep_step.site_errors(fresh, stock, np, ms)
    assert site == "layer3.0.conv1" and 1e-3 < err < 0.1
    conv.weight.set_data(ms.Tensor(np.full(conv.weight.shape, np.nan, np.float32)))  # as after a diverged step
    assert sweep_step.site_errors(fresh, stock, np, ms) == (np.inf, "layer3.0.conv1")
    x = ms.Tensor(np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32))
    logits, overflow = sweep_step.first_overflow(fresh.set_train(False), x, np)
    assert overflow is None
    # a well-conditioned model: an error of one rounding at each block output moves the logits by about that, so the
    # rounding rule cannot excuse a difference the size of a fold error there
    assert 0 < sweep_step.site_error_movement(fresh, x, logits, np, ms, 2.0 ** -24) < 1e-5
