"""Smooth ReLU activations: SmeLU and generalized SmeLU, with fused XLA kernels.

Both are piecewise functions -- a line on each side of a transition region joined by the quadratic
that matches value and slope at both knots -- so they are as cheap as ReLU but have a continuous
gradient. Smooth activations make two identically trained models agree far more than ReLU does
(Shamir, Lin, Coviello 2020; Lin, Shamir 2022).

Implementation notes:

- Forward and backward are each one ``tf.function(jit_compile=True)`` kernel: XLA fuses all the
  element-wise math into one pass over memory on CPU and GPU, and the kernels are inlined into any
  surrounding XLA-compiled step.
- Half-precision inputs (``float16``, ``bfloat16``) are computed in ``float32`` inside the kernel and
  the result is cast back, so accuracy is that of ``float32`` at the memory cost of the input type.
- The custom gradient of ``smelu`` keeps only the activation's *output*: the slope of SmeLU is a
  function of its value (``sqrt(y / beta)`` inside the transition region). The output is the tensor
  the next layer keeps for its own gradient anyway, so a SmeLU network holds exactly the activations
  a ReLU network holds. ``generalized_smelu`` does the same whenever its parameters are fixed Python
  numbers with non-negative slopes; otherwise (learnable parameters, or a negative slope that makes it
  non-monotone) it keeps only its input.
- Parameters given as Python numbers are validated and compiled in as constants. Parameters given as
  tensors or variables (e.g. learnable widths) get gradients too, reduced to their own shape, so a
  per-channel ``beta`` of shape ``[C]`` broadcasts against inputs ``[..., C]``. Tensor parameters are
  not checked at run time (that would cost a host round trip), only their static shapes; the layers
  keep them valid.
- Every width representable in float32 is exact: the quadratic is computed as ``h * (h / beta)`` with
  ``h = (x + beta) / 2`` in ``[0, beta]``, never as ``(x + beta)^2`` (overflows above 1.8e19) or with
  ``1 / beta`` (a subnormal, flushed to 0, above 8.5e37).

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
    - [Lin, Shamir. Real world large scale recommendation systems reproducibility and smooth
      activations (2022)](https://arxiv.org/abs/2202.06499)
"""

from tfsmooth.activations.generalized_smelu_op import generalized_smelu
from tfsmooth.activations.smelu_op import smelu

__all__ = ["generalized_smelu", "smelu"]
