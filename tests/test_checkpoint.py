"""The fast .ckpt reader agrees with mindspore.load_checkpoint, entry by entry."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from acnet_ms import create_model
from acnet_ms.io.checkpoint import META_KEY, _read_plain, read_checkpoint, write_checkpoint


def reference(path):
    return {k: v if isinstance(v, str) else v.asnumpy() for k, v in ms.load_checkpoint(path).items()}


def assert_same(ours, theirs):
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        if isinstance(value, str):
            assert ours[name] == value
        else:
            assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
            assert ours[name].flags.aligned, name  # MindSpore 2.7 refuses an unaligned array
            np.testing.assert_array_equal(ours[name], value, err_msg=name)


def test_reader_matches_mindspore_on_a_training_style_checkpoint(tmp_path, monkeypatch):
    from mindspore.train import serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1024)  # KiB: tensors over 1 MiB are written in slices
    rng = np.random.default_rng(0)
    arrays = {
        "big.weight": rng.normal(size=(512, 512, 3, 3)).astype(np.float32),  # 9 MiB: written in slices
        "half": rng.normal(size=(7, 3)).astype(np.float16),
        "global_step": np.array([42], np.int32),
        "step64": np.array(7, np.int64),
        "flag": np.array([True, False]),
        "scalar": np.float32(0.5),
    }
    path = str(tmp_path / "a.ckpt")
    write_checkpoint(path, arrays, {"model": "sres18", "note": "ünïcode"})
    slices = -(-arrays["big.weight"].nbytes // (1024 * 1024))
    assert slices > 1 and open(path, "rb").read().count(b"big.weight") == slices
    assert_same(_read_plain(path), reference(path))
    got, meta = read_checkpoint(path)
    assert meta == {"model": "sres18", "note": "ünïcode"} and META_KEY not in got


def test_reader_matches_mindspore_on_a_cell_saved_by_mindspore(tmp_path):
    net = create_model("src20", block_type="acb")
    path = str(tmp_path / "cell.ckpt")
    ms.save_checkpoint(net, path, append_dict={"epoch_num": 3, "text": "hello"})
    assert_same(_read_plain(path), reference(path))
    crc = str(tmp_path / "crc.ckpt")
    ms.save_checkpoint(nn.Dense(3, 2), crc, crc_check=True)
    assert_same(_read_plain(crc), reference(crc))


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_damaged_files_fall_back_to_mindspores_error(tmp_path, cut):
    from acnet_ms.cli import UserError

    path = str(tmp_path / "a.ckpt")
    write_checkpoint(path, {"w": np.ones((64, 64), np.float32), "v": np.ones(3, np.float32)})
    data = open(path, "rb").read()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(UserError, match="not a readable MindSpore checkpoint"):
        read_checkpoint(str(bad))


def test_arrays_read_back_load_into_a_network(tmp_path):
    net = create_model("src20")
    path = str(tmp_path / "n.ckpt")
    write_checkpoint(path, {p.name: p.asnumpy() for p in net.get_parameters()})
    arrays, _ = read_checkpoint(path)
    other = create_model("src20")
    for p in other.get_parameters():
        p.set_data(Tensor(arrays[p.name]))
    for a, b in zip(net.get_parameters(), other.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
