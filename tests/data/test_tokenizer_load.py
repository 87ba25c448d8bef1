"""Loading a checkpoint's tokenizer is quiet: transformers does not know the model types llada and
Dream, and once warned on every load that the checkpoint instantiates "a model of type ''"
(issue 16 item 8). The tokenizer must still load with the family's conventions."""

import pytest

import mdu_jax as mj
from tests.fixtures import write_hf_checkpoint


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_loading_a_checkpoint_prints_no_model_type_warning(family, tmp_path, capfd):
    write_hf_checkpoint(tmp_path, family)
    capfd.readouterr()
    cfg, _, tok = mj.load_pretrained(tmp_path)
    err = capfd.readouterr().err
    assert "to instantiate a model of type" not in err, err
    assert tok.mask_token_id == cfg.mask_token_id
    assert tok("who wrote the book ?", add_special_tokens=False)["input_ids"] == [20, 27, 12, 25, 62]
