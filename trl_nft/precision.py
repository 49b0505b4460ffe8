"""Does an optimizer step of a given size survive the rounding of low-precision weights?

Training bf16 weights in place (no fp32 master copy) rounds every update to the weight's own precision: bf16 keeps
8 significant bits, so a weight w moves only if the step exceeds half its spacing, about |w| · 2⁻⁸. AdamW's step is
about the learning rate, so at the paper's lr 1e-6 a typical weight of size 0.02 (spacing ≈ 1.2e-4) never changes.
Mixed-precision engines (DeepSpeed's bf16 optimizer) keep fp32 master weights and are not affected.
"""

from __future__ import annotations

import torch

LOW_PRECISION_DTYPES = (torch.bfloat16, torch.float16)
SAMPLE_SIZE = 1_000_000  # entries examined per check: enough for a stable fraction, cheap even at 7B


def smallest_surviving_step(weights: torch.Tensor) -> torch.Tensor:
    """Per entry, half the spacing of the weight's dtype at its value: smaller steps round back to the same weight."""
    magnitude = weights.detach().float().abs()
    tiny = torch.finfo(weights.dtype).tiny
    exponent = torch.floor(torch.log2(magnitude.clamp(min=tiny)))
    return torch.pow(2.0, exponent) * torch.finfo(weights.dtype).eps / 2


def vanishing_update_fraction(parameters, step_size: float) -> float | None:
    """Share of low-precision trainable entries that an update of ``step_size`` leaves unchanged (None: none found).

    An evenly strided sample of at most `SAMPLE_SIZE` entries over all such parameters is examined.
    """
    tensors = [p for p in parameters if p.requires_grad and p.dtype in LOW_PRECISION_DTYPES and p.numel() > 0]
    total = sum(t.numel() for t in tensors)
    if total == 0:
        return None
    stride = max(1, total // SAMPLE_SIZE)
    vanishing = examined = 0
    for tensor in tensors:
        sample = tensor.detach().reshape(-1)[::stride]
        vanishing += int((smallest_surviving_step(sample) > step_size).sum())
        examined += sample.numel()
    return vanishing / examined


def low_precision_warning(model, learning_rate: float, uses_master_weights: bool, threshold: float = 0.5) -> str | None:
    """A message for the user when most updates of ``model`` at ``learning_rate`` would be rounded away, else None."""
    if uses_master_weights or learning_rate <= 0:
        return None
    fraction = vanishing_update_fraction(model.parameters(), learning_rate)
    if fraction is None or fraction < threshold:
        return None
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.dtype in LOW_PRECISION_DTYPES})
    return (
        f"The trainable weights are {'/'.join(dtypes)} and no engine keeps fp32 master weights: at "
        f"learning_rate={learning_rate:g} an AdamW step (about lr in size) leaves {fraction:.0%} of them unchanged, "
        "so the model barely trains. Load the weights in float32 (dtype: float32 / model_init_kwargs={'dtype': "
        "'float32'}) and keep bf16=True for bf16 compute (autocast), or train with DeepSpeed (bf16 with fp32 master "
        "weights)."
    )


def missing_bf16_support() -> str | None:
    """Why `bf16=True` cannot train on this machine ("no GPU" / "the GPU ... has no bf16"), or None when it can.

    Mirrors the check of transformers' TrainingArguments (a bf16-capable GPU or an XLA device, unless use_cpu).
    """
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    if is_torch_bf16_gpu_available() or is_torch_xla_available():
        return None
    if torch.cuda.is_available():
        return f"the GPU ({torch.cuda.get_device_name()}) has no bf16 support (NVIDIA Ampere or newer has)"
    return "this machine has no GPU with bf16 support (NVIDIA Ampere or newer)"
