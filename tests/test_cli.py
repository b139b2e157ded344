"""Every entry point's --help works on its own: usage and options on stdout, exit 0, nothing else needed."""
import pytest
from conftest import assert_clean_exit, run_script

HELP = {
    ("train.py",): ["--config", "--model", "--block_type", "--data_dir", "--ckpt_save_dir", "--image_resize"],
    ("validate.py",): ["--ckpt_path", "--data_dir", "--deploy", "--json", "--model", "--val_list"],
    ("convert.py",): ["--ckpt_path", "--output", "--overwrite", "--fold_bn", "--export", "--input_shape", "--int8",
                      "--calib_data", "--calib_samples", "--calib_method"],
    ("analyze.py",): ["magnitude", "sparsity", "robustness", "quantization", "--ckpt_path", "--labels", "--out",
                      "--ratios", "--seeds", "--groups", "--calib_data", "validate.py"],
    ("analyze.py", "quantization"): ["--ckpt_path", "--labels", "--out", "--calib_data", "--calib_samples",
                                     "--calib_method", "validate.py"],
    ("analyze.py", "sparsity"): ["--ckpt_path", "--labels", "--out", "--ratios", "--seeds", "--groups",
                                 "validate.py"],
}


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_help_alone_prints_usage_and_options(command, flag):
    res = run_script(*command, flag, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert_clean_exit(res)
    assert "error" not in res.stderr, res.stderr
    assert res.stdout.startswith(f"usage: {' '.join(command)} "), res.stdout[:300]
    for option in HELP[command]:
        assert option in res.stdout, (option, res.stdout[:3000])


def test_a_sub_command_help_lists_only_its_options():
    res = run_script("analyze.py", "magnitude", "--help", timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("usage: analyze.py magnitude ")
    assert "--ckpt_path" in res.stdout and "--out" in res.stdout
    assert "--ratios" not in res.stdout  # sparsity's
    assert "--calib_data" not in res.stdout  # quantization's


def test_validate_without_a_checkpoint_is_still_an_error():
    res = run_script("validate.py", "--data_dir", ".", timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == "error: --ckpt_path is required", res.stderr
