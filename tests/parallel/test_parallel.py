"""Mesh shapes and partition rules."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import mdu_jax as mj
from mdu_jax import parallel
from mdu_jax.typed_config import ConfigKeyError
from tests.fixtures import hf_config


def test_minus_one_takes_the_rest():
    assert parallel.resolve_mesh_shape({"data": 2, "fsdp": -1, "tensor": 1}, 8) == (2, 4, 1)
    assert parallel.resolve_mesh_shape({"data": -1}, 8) == (8, 1, 1)


def test_mesh_that_does_not_divide_is_named():
    with pytest.raises(ConfigKeyError, match=r"parallel.mesh: .* does not divide the 8 available devices"):
        parallel.resolve_mesh_shape({"data": 3, "fsdp": -1}, 8)
    with pytest.raises(ConfigKeyError, match=r"uses 6 devices, but 8 are available"):
        parallel.resolve_mesh_shape({"data": 2, "fsdp": 3, "tensor": 1}, 8)


def test_fsdp_and_tensor_rules():
    cfg = mj.ModelConfig.from_hf(hf_config("dream"))
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sh = parallel.param_shardings(mj.logical_axes(cfg), mj.abstract_params(cfg), mesh)
    assert sh["layers"]["q"]["kernel"].spec == P(None, "fsdp", "tensor", None)
    assert sh["layers"]["down"]["kernel"].spec == P(None, "tensor", "fsdp")
    assert sh["embed"]["embedding"].spec == P("tensor", "fsdp")
    assert sh["final_norm"]["scale"].spec == P(None)


def test_non_dividing_dimension_stays_replicated():
    mesh = parallel.make_mesh({"fsdp": 8})
    assert parallel.spec_for(("embed", "mlp"), (12, 16), mesh) == P(None, None)
    assert parallel.spec_for(("embed", "mlp"), (16, 16), mesh) == P("fsdp", None)


def test_host_rows_cover_the_batch():
    assert parallel.host_rows(8) == slice(0, 8)
    x = np.arange(16).reshape(8, 2)
    mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
    arr = jax.make_array_from_process_local_data(parallel.batch_sharding(mesh), x[parallel.host_rows(8)], (8, 2))
    np.testing.assert_array_equal(np.asarray(arr), x)
    assert len(arr.addressable_shards) == len(jax.devices())
