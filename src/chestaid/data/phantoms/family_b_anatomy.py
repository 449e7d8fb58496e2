"""Phantom family B's anatomy: the body in its own coordinates (rotated, shifted, scaled into the image),
D-shaped lungs with domed hemidiaphragms, and vessels branching from the hila."""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float]
WORK = 288


def _sig(d: np.ndarray, edge: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(-d / max(edge, 1e-4), -30, 30)))


class Body:
    """Body coordinates (u, v) of every image pixel, and the attenuation map drawn in them."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = n
        self.angle = rng.uniform(-6, 6) * np.pi / 180
        self.shift = rng.normal(0, 0.025, 2)
        self.scale = rng.uniform(0.88, 1.04)
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        y, x = np.meshgrid(c, c, indexing="ij")
        dx, dy = x - 0.5 - self.shift[0], y - 0.5 - self.shift[1]
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        self.u = (0.5 + (ca * dx + sa * dy) / self.scale).astype(np.float32)
        self.v = (0.5 + (-sa * dx + ca * dy) / self.scale).astype(np.float32)
        self.mu = np.zeros((n, n), np.float32)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        return (0.5 + self.shift[0] + self.scale * (ca * (u - 0.5) - sa * (v - 0.5)),
                0.5 + self.shift[1] + self.scale * (sa * (u - 0.5) + ca * (v - 0.5)))

    def window(self, points: list[tuple[float, float]], pad: float) -> tuple[slice, slice]:
        """The pixel rows and columns that hold everything within `pad` (body units) of `points`."""
        xs, ys = zip(*(self.to_image(u, v) for u, v in points))
        grow = pad * self.scale + 2.0 / self.n
        cols = slice(max(int((min(xs) - grow) * self.n), 0), min(int((max(xs) + grow) * self.n) + 1, self.n))
        rows = slice(max(int((min(ys) - grow) * self.n), 0), min(int((max(ys) + grow) * self.n) + 1, self.n))
        return rows, cols

    def disc(self, cu: float, cv: float, ru: float, rv: float, edge: float = 0.004,
             wobble: np.ndarray | None = None) -> np.ndarray:
        """Soft mask of an ellipse, its radius optionally modulated by angle (wobble: Fourier amplitudes)."""
        out = np.zeros_like(self.mu)
        reach = max(ru, rv) * (1 + (np.abs(wobble[:, 0]).sum() if wobble is not None else 0)) + 8 * edge
        win = self.window([(cu, cv)], reach)
        du, dv = (self.u[win] - cu) / ru, (self.v[win] - cv) / rv
        r = np.sqrt(du ** 2 + dv ** 2)
        limit = 1.0
        if wobble is not None:
            theta = np.arctan2(dv, du)
            limit = 1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(wobble))
        out[win] = _sig((limit - r) * min(ru, rv), edge)
        return out

    def segment(self, p: tuple[float, float], q: tuple[float, float], width: float) -> np.ndarray:
        """Soft mask of a line segment from p to q (body coordinates)."""
        out = np.zeros_like(self.mu)
        win = self.window([p, q], width * 4)
        u, v = self.u[win], self.v[win]
        pu, pv = p
        eu, ev = q[0] - pu, q[1] - pv
        length2 = eu * eu + ev * ev + 1e-12
        t = np.clip(((u - pu) * eu + (v - pv) * ev) / length2, 0, 1)
        d = np.sqrt((u - pu - t * eu) ** 2 + (v - pv - t * ev) ** 2)
        out[win] = _sig(width - d, width * 0.35)
        return out

    def box_of(self, mask: np.ndarray, level: float = 0.3) -> Box:
        """The image-space box of a drawn mask (where it reaches `level` of its maximum)."""
        peak = float(mask.max())
        ys, xs = np.nonzero(mask >= level * peak) if peak > 0 else (np.array([0]), np.array([0]))
        x0, x1, y0, y1 = xs.min() / self.n, (xs.max() + 1) / self.n, ys.min() / self.n, (ys.max() + 1) / self.n
        return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


class Lung:
    """One D-shaped lung: apex, lateral and medial borders, a domed base (v grows downwards)."""

    def __init__(self, side: int, rng: np.random.Generator, tall: float, raise_base: float) -> None:
        self.side = side  # 0: image left (the patient's right)
        self.lateral = 1 if side == 1 else -1  # +u direction of the lateral wall
        self.cu = 0.5 + self.lateral * rng.uniform(0.165, 0.185)
        self.half = rng.uniform(0.115, 0.135)
        self.top = rng.uniform(0.15, 0.19)
        self.base = (rng.uniform(0.70, 0.75) - raise_base) * tall + 0.17 * (1 - tall)
        self.dome = rng.uniform(0.035, 0.055) * (0.35 if tall > 1.02 else 1.0)

    def mask(self, body: Body, edge: float = 0.006) -> np.ndarray:
        v_rel = np.clip((body.v - self.top) / 0.16, 0, 1)
        half = self.half * np.sqrt(v_rel) * (1 + 0.08 * (body.v - self.top))
        offset = (body.u - self.cu) * self.lateral  # + towards the lateral wall
        across = np.where(offset > 0, half - offset, half * 0.8 - (-offset))  # medial border is nearer
        floor = self.base - self.dome * (1 - np.clip(((body.u - self.cu) / self.half) ** 2, 0, 1))
        return _sig(across, edge) * _sig(body.v - self.top, edge) * _sig(floor - body.v, edge)

    def point(self, rng: np.random.Generator, rel_v: tuple[float, float] = (0.15, 0.85),
              rel_u: tuple[float, float] = (-0.6, 0.7)) -> tuple[float, float]:
        """A point inside the lung: rel_v from apex (0) to base (1), rel_u from medial (-1) to lateral (1)."""
        v = self.top + rng.uniform(*rel_v) * (self.base - self.dome - self.top)
        width = self.half * np.sqrt(np.clip((v - self.top) / 0.16, 0.2, 1))
        return self.cu + self.lateral * rng.uniform(*rel_u) * width * 0.8, v

    @property
    def hilum(self) -> tuple[float, float]:
        return self.cu - self.lateral * self.half * 0.55, self.top + 0.45 * (self.base - self.top)


def _vessels(body: Body, rng: np.random.Generator, lung: Lung, thickness: float) -> np.ndarray:
    out = np.zeros_like(body.mu)
    for _ in range(7):
        p = lung.hilum
        angle = rng.uniform(-1.3, 1.3) + (0 if lung.lateral > 0 else np.pi)
        width = 0.006 * thickness
        for _ in range(4):
            step = rng.uniform(0.03, 0.05)
            q = (p[0] + step * np.cos(angle), p[1] + step * np.sin(angle) * 1.3)
            out = np.maximum(out, body.segment(p, q, width))
            p, angle, width = q, angle + rng.normal(0, 0.35), width * 0.75
    return out
