"""Per-token log-probabilities and entropy, from logits or straight from hidden states.

``log_probs_from_logits`` / ``entropy_from_logits`` take logits someone already has (the
sampler's one position per step). Training instead calls ``token_log_probs`` on the hidden
states that predict each token and the LM head's weight: the vocabulary projection runs over
``chunk`` tokens at a time with the logsumexp in fp32, and the backward pass recomputes each
chunk's logits instead of keeping them. Peak memory is then one (chunk, V) fp32 block instead
of (B, T, V) logits (~40 GB at V = 152k and 64 × 1024 tokens), for one extra projection in
backward. The idea is TRL's ``_ChunkedLogProbFunction``; unlike it, the entropy's gradient is
kept (verl's fused linear cross-entropy does the same), so an entropy bonus trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MB in fp32; at V = 152k, 110 tokens


def log_probs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log p(labels) under softmax(logits); (..., V), (...) -> (...).

    Gathers before normalizing (logit - logsumexp) so no (..., V) log-softmax tensor is kept
    for backward beyond the one logsumexp needs.
    """
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dimension; (..., V) -> (...)."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def chunk_tokens(vocab_size: int, elements: int = CHUNK_ELEMENTS) -> int:
    """How many tokens one chunk holds so that its logits have about ``elements`` values."""
    return max(1, elements // max(1, vocab_size))


def token_log_probs(
    hidden: Tensor,  # (N, H) hidden states that predict each label
    weight: Tensor,  # (V, H) LM head
    bias: Tensor | None,  # (V,) or None
    labels: Tensor,  # (N,) int64
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(N,) log softmax(h·Wᵀ + b)/T at the labels, and (N,) entropies when asked, in fp32.

    The same values and gradients as ``log_probs_from_logits`` on the full logits (up to
    summation order). The entropy has a gradient only with ``entropy_grad`` (it costs one more
    (chunk, V) term in backward); otherwise it is data. Under autocast the projection runs in
    the autocast dtype, forward and backward alike, as a plain ``F.linear`` would.
    """
    chunk = chunk or chunk_tokens(weight.shape[0])
    log_probs, entropy = _ChunkedHead.apply(
        hidden, weight, bias, labels, float(temperature), with_entropy, entropy_grad, chunk
    )
    return log_probs, (entropy if with_entropy else None)


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float):
    logits = F.linear(hidden, weight, bias).float()
    return logits / temperature if temperature != 1.0 else logits


class _ChunkedHead(torch.autograd.Function):
    """Forward: per chunk, logits → (log p(label), entropy); keeps only the inputs.
    Backward: per chunk, recompute the logits z (in the forward's compute dtype) and

        ∂log p_y/∂z = onehot(y) − p,        ∂H/∂z = −p ⊙ (z − Σ p z),

    then ∂/∂h = g·W/T and ∂/∂W += gᵀ·h/T, accumulated in the weight's dtype. In-place
    arithmetic keeps at most two (chunk, V) fp32 blocks alive at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, temperature, with_entropy, entropy_grad, chunk):
        log_probs = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        entropy = hidden.new_zeros(hidden.shape[0] if with_entropy else 0, dtype=torch.float32)
        device = hidden.device.type
        autocast_on = torch.is_autocast_enabled(device)
        compute_dtype = torch.get_autocast_dtype(device) if autocast_on else weight.dtype
        for start in range(0, hidden.shape[0], chunk):
            stop = start + chunk
            z = _chunk_logits(hidden[start:stop], weight, bias, temperature)
            lse = torch.logsumexp(z, dim=-1)
            log_probs[start:stop] = z.gather(-1, labels[start:stop, None]).squeeze(-1) - lse
            if with_entropy:
                p = torch.softmax(z, dim=-1)
                entropy[start:stop] = lse - p.mul_(z).sum(-1)
                del p
            del z
        ctx.save_for_backward(hidden, weight, bias, labels)
        ctx.settings = (temperature, with_entropy and entropy_grad, chunk, compute_dtype)
        if not (with_entropy and entropy_grad):
            ctx.mark_non_differentiable(entropy)
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        hidden, weight, bias, labels = ctx.saved_tensors
        temperature, entropy_grad, chunk, dtype = ctx.settings
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        for start in range(0, hidden.shape[0], chunk):
            stop = start + chunk
            h = hidden[start:stop].to(dtype)
            z = F.linear(h, w, b).float()
            if temperature != 1.0:
                z.div_(temperature)
            grad_z = torch.softmax(z, dim=-1)  # p, turned into the gradient in place
            if entropy_grad and grad_entropy is not None:
                mean_z = (grad_z * z).sum(-1, keepdim=True)  # Σ p z
                # z ← g_H · p ⊙ (z − Σ p z): the entropy's term, in z's storage
                z.sub_(mean_z).mul_(grad_z).mul_(grad_entropy[start:stop, None])
            else:
                del z
                z = None
            g_lp = grad_log_probs[start:stop, None]
            grad_z.mul_(-g_lp).scatter_add_(-1, labels[start:stop, None], g_lp)
            if z is not None:
                grad_z.sub_(z)
                del z
            if temperature != 1.0:
                grad_z.div_(temperature)
            grad_z = grad_z.to(dtype)
            if need_h:
                grad_h[start:stop] = grad_z @ w
            if need_w:
                grad_w += (grad_z.t() @ h).to(grad_w.dtype)
            if grad_b is not None:
                grad_b += grad_z.sum(0).to(grad_b.dtype)
            del grad_z
        return grad_h, grad_w, grad_b, None, None, None, None, None
