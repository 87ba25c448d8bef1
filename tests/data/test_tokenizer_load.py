"""Loading a checkpoint's tokenizer is quiet: transformers does not know the model types llada and
Dream, and once warned on every load that the checkpoint instantiates "a model of type ''"
(issue 16 item 8). The tokenizer must still load with the family's conventions."""

import logging

import pytest

import mdu_jax as mj
from tests.fixtures import write_hf_checkpoint


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_loading_a_checkpoint_prints_no_model_type_warning(family, tmp_path):
    write_hf_checkpoint(tmp_path, family)
    # transformers' loggers do not propagate to the root logger (caplog) and write to the stream
    # they found at import: listen on the library's own logger.
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        cfg, _, tok = mj.load_pretrained(tmp_path)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert not [m for m in records.messages if "to instantiate a model of type" in m], records.messages
    assert tok.mask_token_id == cfg.mask_token_id
    assert tok("who wrote the book ?", add_special_tokens=False)["input_ids"] == [20, 27, 12, 25, 62]
