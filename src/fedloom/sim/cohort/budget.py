"""How many clients train together: ``--cohort auto|off|N``, ``auto`` sized to a memory budget.

A cohort holds, per client, its parameters and buffers, their gradients, up to two
optimiser states and the client-side terms' two tensors (about 6x the model), its share
of the round's data, and one step's activations (each module's output for its batch,
kept for the backward pass, counted about twice). ``auto`` divides a budget (a quarter
of the free memory of the model's CUDA device, else 1 GiB on CPU) by that estimate.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

CPU_BUDGET_BYTES = 1 << 30
STATE_COPIES = 6
ACTIVATION_COPIES = 2


def budget_bytes(device: torch.device) -> int:
    """The memory a cohort may take on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    return CPU_BUDGET_BYTES


def activation_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one sample (a copy of the model, no grad, eval mode)."""
    twin = copy.deepcopy(model).eval()
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in twin.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            twin(sample[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return total


def client_bytes(model: nn.Module, sample: torch.Tensor, batch_size: int, samples_per_client: int) -> int:
    """The estimated memory one client adds to a cohort."""
    state = sum(int(t.numel()) * int(t.element_size()) for t in model.state_dict().values())
    data = samples_per_client * int(sample[:1].numel()) * int(sample.element_size())
    return STATE_COPIES * state + data + ACTIVATION_COPIES * batch_size * activation_bytes(model, sample)


def auto_cohort_size(model: nn.Module, sample: torch.Tensor, batch_size: int, samples_per_client: int) -> int:
    """The most clients whose estimated memory fits the device's budget (at least 1)."""
    device = next(iter(model.state_dict().values())).device if model.state_dict() else torch.device("cpu")
    per_client = max(1, client_bytes(model, sample.to(device), batch_size, samples_per_client))
    return max(1, budget_bytes(device) // per_client)
