"""Run metrics in TensorBoard (the README: "TensorBoard when tensorboardX is installed").

tensorboardX is in the test extra, so the event file is really written here and read back
record by record (TFRecord framing: 8-byte length, 4-byte CRC, the Event proto, 4-byte CRC).
Without tensorboardX the writer keeps to metrics.jsonl.
"""

import glob
import struct

import pytest
from tensorboardX.proto import event_pb2

from mdu_jax.training import metrics_log
from mdu_jax.training.metrics_log import MetricsWriter, read_metrics

ROWS = [(1, {"loss": 2.5, "grad_norm": 1.25, "lr": 1e-4}), (2, {"loss": 2.0, "grad_norm": 0.5, "lr": 2e-4}),
        (4, {"loss": 1.5, "grad_norm": 0.75, "lr": 3e-4})]


def read_scalars(folder):
    """{(tag, step): value} of every scalar in the TensorBoard event files under `folder`."""
    files = glob.glob(str(folder / "**" / "events.out.tfevents.*"), recursive=True)
    assert files, f"no event file under {folder}"
    out = {}
    for path in files:
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out[(value.tag, event.step)] = value.simple_value
    return out


def test_metrics_reach_tensorboard_and_jsonl(tmp_path):
    assert metrics_log.summary_writer_class() is not None  # the test extra installs tensorboardX
    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    for step, values in ROWS:
        writer.write(step, values)
    writer.close()
    scalars = read_scalars(tmp_path / "tensorboard")
    want = {(k, step): v for step, values in ROWS for k, v in values.items()}
    assert scalars == pytest.approx(want)
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path / "metrics.jsonl"))] == [(1, 2.5), (2, 2.0),
                                                                                                (4, 1.5)]


def test_without_tensorboardx_only_jsonl_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_log, "summary_writer_class", lambda: None)
    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    writer.write(1, ROWS[0][1])
    writer.close()
    assert not (tmp_path / "tensorboard").exists()
    assert read_metrics(str(tmp_path / "metrics.jsonl"))[0]["grad_norm"] == 1.25


def test_tensorboard_off_writes_no_events(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write(1, ROWS[0][1])
    writer.close()
    assert not (tmp_path / "tensorboard").exists()
