"""The output projection and cross-entropy fused and computed a chunk of tokens at a time, so that
the [tokens, vocab] logits are never held whole (the idea of Liger's fused linear cross-entropy,
in plain torch).

For each chunk of `chunk` tokens: logits = hidden · Wᵀ (in the autocast dtype when autocast is on,
as the plain path's `lm_head` runs; else in the weight's dtype), upcast to fp32; the chunk's loss
is Σ logsumexp − target logit over labelled positions. When a gradient is wanted, the chunk's
softmax is turned into the gradient of the summed loss with respect to its logits (p − one-hot,
zero on ignored rows) right away, and the two products that need it — the chunk's rows of
grad_hidden (g · W) and its share of grad_weight (gᵀ · hidden, accumulated in fp32) — are taken
before the next chunk overwrites it. Backward then only scales them by the incoming gradient: the
same three matmuls as the plain path, with one reused [chunk, vocab] fp32 buffer in which each
chunk's logits become its softmax and then its gradient in place, instead of several
[tokens, vocab] tensors (logits, log-softmax, its gradient).

The precomputed gradients assume the loss is used linearly (it is: summed, scaled, backward once).
"""

import torch


def _product_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a · b written into `out`: directly when the dtypes agree, else through a temporary in a's."""
    if out.dtype == a.dtype:
        return torch.mm(a, b, out=out)
    return out.copy_(a @ b)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        chunk: int,
        ignore_index: int,
        compute_dtype: torch.dtype,
        grad_hidden_wanted: bool,
        grad_weight_wanted: bool,
    ) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = (
                torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if grad_hidden_wanted else None
            )  # contiguous, whatever the strides of `hidden`: each chunk's rows are written by mm(out=)
            grad_weight = (
                torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grad_weight_wanted else None
            )
            # One [chunk, vocab] fp32 buffer for every chunk's logits, softmax and gradient: a fresh
            # tensor per chunk costs an allocation and, on a CPU, the page faults of touching it.
            logits_buffer = torch.empty(
                (min(chunk, hidden.shape[0]), weight.shape[0]), dtype=torch.float32, device=hidden.device
            )
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start : start + chunk].to(compute_dtype)
                y = labels[start : start + chunk]
                valid = y != ignore_index
                target = torch.where(valid, y, 0).unsqueeze(1)
                logits = _product_into(logits_buffer[: h.shape[0]], h, w.T)
                target_logit = logits.gather(1, target).squeeze(1)
                row_max = logits.amax(dim=1, keepdim=True)
                exp = logits.sub_(row_max).exp_()  # in place: the logits are not needed again
                row_sum = exp.sum(dim=1, keepdim=True)
                lse = (row_max + row_sum.log()).squeeze(1)
                total += ((lse - target_logit) * valid).sum()
                if grad_hidden is None and grad_weight is None:
                    continue
                # d(Σ loss)/d logits = softmax − one-hot, on labelled rows only: an ignored row is
                # divided by infinity (its exps are at most 1), which zeroes it in the same pass
                grad = exp.div_(torch.where(valid.unsqueeze(1), row_sum, torch.inf))
                grad.scatter_add_(1, target, -valid.to(grad.dtype).unsqueeze(1))
                grad = grad.to(compute_dtype)
                if grad_hidden is not None:
                    _product_into(grad_hidden[start : start + chunk], grad, w)
                if grad_weight is not None:
                    if compute_dtype == torch.float32:
                        grad_weight.addmm_(grad.T, h)
                    else:
                        grad_weight += grad.T @ h  # accumulated in fp32 without an fp32 copy of the product
        ctx.grad_hidden, ctx.grad_weight = grad_hidden, grad_weight
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_total: torch.Tensor) -> tuple:  # type: ignore[override]
        grad_hidden = grad_weight = None
        if ctx.grad_hidden is not None:
            grad_hidden = ctx.grad_hidden * grad_total.to(ctx.grad_hidden.dtype)
        if ctx.grad_weight is not None:
            grad_weight = (ctx.grad_weight * grad_total).to(ctx.weight_dtype)
        ctx.grad_hidden = ctx.grad_weight = None  # once: free them as soon as autograd has them
        return grad_hidden, grad_weight, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int, ignore_index: int = -100
) -> torch.Tensor:
    """Σ over labelled positions of −log softmax(hidden · Wᵀ)[label], computed `chunk` tokens at a
    time. `hidden` is [tokens, hidden] (or any [..., hidden], flattened), `weight` [vocab, hidden]
    (a bias-free output projection, tied or not), `labels` the targets with `ignore_index` where
    nothing counts. Equal to `F.cross_entropy(hidden @ weight.T, labels, reduction="sum")` up to
    summation order; under autocast the matmuls run in the autocast dtype, the softmax in fp32."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 token, got {chunk}")
    hidden, labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1).to(hidden.device)
    device = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    grad = torch.is_grad_enabled()
    return _LinearCrossEntropy.apply(
        hidden,
        weight,
        labels,
        chunk,
        ignore_index,
        compute_dtype,
        grad and hidden.requires_grad,
        grad and weight.requires_grad,
    )
