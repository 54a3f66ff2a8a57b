"""A differentiable rasterizer of Bezier strokes, in plain torch (CLIPDraw's diffvg, in small).

Each stroke is a cubic Bezier curve with a width, a colour and an opacity. We sample the curve
into a polyline, measure every pixel's distance d (in pixels) to its nearest segment, and turn
it into a soft coverage

    alpha_s = sigmoid(4 * sharpness * (width_s / 2 - d)) * opacity_s

(width_s in pixels; the slope of the sigmoid at the edge d = width_s / 2 is sharpness per pixel):
1 inside the stroke, 0 far away, smooth at the edge, so the gradient of a pixel tells every
control point which way to move. Strokes are painted in order over the background with the
"over" operator:

    img <- (1 - alpha_s) * img + alpha_s * colour_s

Serves notebook 04 (CLIPDraw).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat


def bezier(ctrl: torch.Tensor, k: int = 12) -> torch.Tensor:
    """Points (..., k, 2) along cubic Bezier curves with control points ctrl (..., 4, 2)."""
    t = torch.linspace(0, 1, k, device=ctrl.device, dtype=ctrl.dtype)[:, None]
    p0, p1, p2, p3 = ctrl.unbind(-2)
    u = 1 - t
    return (
        (u**3) * p0[..., None, :]
        + 3 * (u**2) * t * p1[..., None, :]
        + 3 * u * (t**2) * p2[..., None, :]
        + (t**3) * p3[..., None, :]
    )


def pixel_centers(res: int, device=None) -> torch.Tensor:
    """(res * res, 2) pixel centres (x, y) as fractions of the side, row-major."""
    c = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], -1)


def distance_to_polyline(points: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Distance (..., P) from each pixel pix (P, 2) to a polyline points (..., k, 2)."""
    a, b = points[..., :-1, None, :], points[..., 1:, None, :]  # (..., k-1, 1, 2)
    ab, ap = b - a, pix - a
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-8)).clamp(0, 1)
    d2 = ((ap - t[..., None] * ab) ** 2).sum(-1)  # (..., k-1, P)
    return d2.min(-2).values.clamp_min(1e-10).sqrt()


def render(
    ctrl: torch.Tensor,
    width: torch.Tensor,
    color: torch.Tensor,
    res: int,
    background: torch.Tensor,
    sharpness: float = 1.5,
    k: int = 12,
) -> torch.Tensor:
    """Images (B, 3, res, res) in [0, 1] of B sets of S strokes painted in order.

    ctrl (B, S, 4, 2) control points in [0, 1] image coordinates; width (B, S) in pixels;
    color (B, S, 4) RGB and opacity in [0, 1]; background (3,) in [0, 1]. sharpness: how fast
    coverage falls at a stroke's edge, per pixel (about 1: a one-pixel anti-aliased edge).
    """
    B, S = width.shape
    pix = pixel_centers(res, ctrl.device)
    dist = distance_to_polyline(bezier(ctrl, k), pix) * res  # (B, S, P) in pixels
    alpha = torch.sigmoid(sharpness * 4 * (width[..., None] / 2 - dist)) * color[..., 3:]
    img = repeat(background, "c -> b c p", b=B, p=res * res)
    for s in range(S):
        a = alpha[:, s, None, :]
        img = (1 - a) * img + a * color[:, s, :3, None]
    return rearrange(img, "b c (h w) -> b c h w", h=res)
