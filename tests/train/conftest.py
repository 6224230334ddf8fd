"""Training tests run torch on one thread, as ``glacierscale train`` does by default.

Results are then bit-identical run to run, and two threads fighting other jobs for two cores
cannot stall them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
