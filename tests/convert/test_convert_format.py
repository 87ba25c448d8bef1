"""The converted-checkpoint format: a genuine orbax checkpoint, chunked per layer, with a marker."""

import json
import math

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

import mdu_jax as mj
from checkpoints_convert import ConversionError, import_checkpoint, parse_size
from mdu_jax.checkpoints.hf_export import plan_shards
from mdu_jax.checkpoints import orbax_params as ckpt
from mdu_jax.models import hf_tensors
from mdu_jax.models.params import flatten_paths
from tests.fixtures import write_hf_checkpoint


def test_params_folder_is_restorable_by_plain_orbax(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path / "hf", "dream", dtype="bfloat16", shards=3, seed=41, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    cfg = mj.ModelConfig.from_hf(tmp_path / "hf", param_dtype="bfloat16")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), mj.abstract_params(cfg))
    with ocp.StandardCheckpointer() as c:
        restored = c.restore(tmp_path / "ckpt" / "params", abstract)
    _, reference, _ = mj.load_pretrained(tmp_path / "hf", param_dtype="bfloat16")
    for path, value in flatten_paths(reference).items():
        np.testing.assert_array_equal(np.asarray(flatten_paths(restored)[path]), np.asarray(value), err_msg=str(path))


def test_marker_records_family_dtype_and_every_source_tensor_dtype(tmp_path):
    write_hf_checkpoint(tmp_path / "hf", "llada", dtype="float32", seed=42, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", dtype="bf16", progress=False)
    info = json.loads((tmp_path / "ckpt" / "mdu_jax.json").read_text())
    cfg = mj.ModelConfig.from_hf(tmp_path / "hf")
    assert info["format"] == "mdu_jax" and info["version"] == ckpt.FORMAT_VERSION
    assert info["family"] == "llada" and info["param_dtype"] == "bfloat16"
    assert info["hf_dtypes"] == {t.name: "F32" for t in hf_tensors(cfg)}
    assert (tmp_path / "ckpt" / "config.json").read_bytes() == (tmp_path / "hf" / "config.json").read_bytes()


def test_stacked_params_are_chunked_one_layer_at_a_time(tmp_path):
    write_hf_checkpoint(tmp_path / "hf", "llada", seed=43, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    zarr = json.loads((tmp_path / "ckpt" / "params" / "layers.q.kernel" / "zarr.json").read_text())
    assert zarr["shape"] == [2, 32, 4, 8]
    assert zarr["chunk_grid"]["configuration"]["chunk_shape"] == [1, 32, 4, 8]


@pytest.mark.parametrize("shape,itemsize,stacked", [
    ((32, 4096, 12288), 2, True),    # LLaDA-8B gate/up
    ((126464, 4096), 2, False),      # LLaDA-8B embedding
    ((28, 3584, 4, 128), 4, True),   # Dream-7B k kernel in fp32
    ((4096,), 2, False),
])
def test_chunks_are_at_most_one_layer_and_64_mib(shape, itemsize, stacked):
    chunk = ckpt.chunk_shape(shape, itemsize, stacked)
    assert len(chunk) == len(shape) and all(1 <= c <= s for c, s in zip(chunk, shape))
    assert math.prod(chunk) * itemsize <= ckpt.CHUNK_BYTES
    if stacked:
        assert chunk[0] == 1
    if math.prod(shape) * itemsize <= ckpt.CHUNK_BYTES and not stacked:
        assert chunk == shape


def test_params_writer_refuses_incomplete_or_mismatched_writes(tmp_path):
    layout = {("w",): ((3, 4, 2), np.float32), ("b",): ((2,), ml_dtypes.bfloat16)}
    writer = ckpt.ParamsWriter(tmp_path / "p", layout, stacked=[("w",)])
    with pytest.raises(mj.CheckpointError, match=r"layer 1 of parameter 'w' expects \[4, 2\] float32, got \[4, 3\]"):
        writer.write(("w",), np.zeros((4, 3), np.float32), layer=1)
    with pytest.raises(mj.CheckpointError, match=r"parameter 'b' expects \[2\] bfloat16, got \[2\] float32"):
        writer.write(("b",), np.zeros(2, np.float32))
    writer.write(("b",), np.zeros(2, ml_dtypes.bfloat16))
    writer.write(("w",), np.ones((4, 2), np.float32), layer=0)
    writer.write(("w",), np.ones((4, 2), np.float32), layer=2)
    with pytest.raises(mj.CheckpointError, match=r"parameter 'w' is missing layer\(s\) \[1\]"):
        writer.close()
    assert not (tmp_path / "p" / "_METADATA").exists()


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 5 * 10**8
    assert parse_size("2GiB") == 2 * 2**30 and parse_size(1234) == 1234 and parse_size("1.5kb") == 1500
    for bad in ("", "-1GB", "0", "5 parsecs", "GB"):
        with pytest.raises(ConversionError, match="max_shard_size"):
            parse_size(bad)


def test_plan_shards_fills_files_in_order_up_to_the_limit():
    cfg = mj.ModelConfig.from_hf({
        "model_type": "llada", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 48,
        "rope_theta": 5e5, "weight_tying": False, "vocab_size": 96, "mask_token_id": 95, "eos_token_id": 1,
        "pad_token_id": 1})
    table = hf_tensors(cfg)
    dtypes = {t.name: "BF16" for t in table}
    size = {t.name: math.prod(t.shape) * 2 for t in table}
    one = plan_shards(table, dtypes, 10**9)
    assert [s.name for s in one] == ["model.safetensors"] and len(one[0].tensors) == len(table)
    shards = plan_shards(table, dtypes, 5000)
    n = len(shards)
    assert [s.name for s in shards] == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    assert [t.name for s in shards for t in s.tensors] == [t.name for t in table]
    for s in shards:
        total = sum(size[t.name] for t in s.tensors)
        assert total <= 5000 or len(s.tensors) == 1
    for a, b in zip(shards, shards[1:]):  # a file is closed only when the next tensor would not fit
        assert sum(size[t.name] for t in a.tensors) + size[b.tensors[0].name] > 5000


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (513, 260), (256, 256)])
def test_blockwise_transpose_equals_numpy_transpose(shape):
    from mdu_jax.checkpoints.hf_params import transpose_copy

    a = np.random.default_rng(0).standard_normal(shape, np.float32).astype(ml_dtypes.bfloat16)
    out = transpose_copy(a)
    assert out.flags.c_contiguous and out.dtype == a.dtype
    np.testing.assert_array_equal(out.view(np.uint16), a.T.view(np.uint16))
    np.testing.assert_array_equal(transpose_copy(a, np.float32), a.T.astype(np.float32))


def test_multi_chunk_arrays_round_trip_through_writer_reader_and_orbax(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "CHUNK_BYTES", 96)  # forces many chunks, some of them ragged at the edge
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 7, 10), np.float32)
    e = rng.standard_normal((13, 5), np.float32).astype(ml_dtypes.bfloat16)
    writer = ckpt.ParamsWriter(tmp_path / "p", {("w",): (w.shape, np.float32), ("e",): (e.shape, e.dtype)},
                               stacked=[("w",)])
    zarr = json.loads((tmp_path / "p" / "w" / "zarr.json").read_text())
    assert zarr["chunk_grid"]["configuration"]["chunk_shape"][0] == 1
    assert math.prod(zarr["chunk_grid"]["configuration"]["chunk_shape"]) * 4 <= 96
    for i in (2, 0, 1):
        writer.write(("w",), w[i], layer=i)
    writer.write(("e",), e)
    writer.close()
    reader = ckpt.ParamsReader(tmp_path / "p")
    np.testing.assert_array_equal(reader.read(("w",), 1), w[1])
    np.testing.assert_array_equal(reader.read(("e",)).view(np.uint16), e.view(np.uint16))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as c:
        out = c.restore(tmp_path / "p", {"w": jax.ShapeDtypeStruct(w.shape, np.float32, sharding=device),
                                         "e": jax.ShapeDtypeStruct(e.shape, e.dtype, sharding=device)})
    np.testing.assert_array_equal(np.asarray(out["w"]), w)
    np.testing.assert_array_equal(np.asarray(out["e"]).view(np.uint16), e.view(np.uint16))
