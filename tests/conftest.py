import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny():
    """The offline tiny policy and tokenizer (untrained)."""
    from lit_vine.models import TinyConfig, build_tiny

    return build_tiny(TinyConfig())
