"""A synthetic chest radiograph with planted findings, each with a visual signature inside its box.

Drawn in normalised coordinates (0..1, x to the image's right = the patient's left, as in a PA film) at a
working resolution, then resized to the requested size with fine noise. Every finding returns its box
(x, y, w, h) in normalised units, so localisation can be scored against a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

Box = tuple[float, float, float, float]
WORK = 256  # working resolution for anatomy and lesions


@dataclass
class Anatomy:
    """Per-image geometry: lung centres/radii per side (0 = image left), heart, jitter."""

    lungs: list[tuple[float, float, float, float]]  # (cx, cy, rx, ry)
    heart: tuple[float, float, float, float]


class Canvas:
    """A float image with soft-shape drawing in normalised coordinates."""

    def __init__(self, n: int) -> None:
        self.n = n
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        self.y, self.x = np.meshgrid(c, c, indexing="ij")
        self.img = np.zeros((n, n), dtype=np.float32)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0,
                soft: float = 0.08) -> np.ndarray:
        """Soft mask (0..1) of an ellipse; `soft` is the edge width relative to the radius."""
        dx, dy = self.x - cx, self.y - cy
        if angle:
            ca, sa = np.cos(angle), np.sin(angle)
            dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
        d = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / max(soft, 1e-3), -30, 30)))

    def add(self, mask: np.ndarray, amp: float) -> None:
        self.img += amp * mask


def _lung_mask(cv: Canvas, an: Anatomy, side: int | None = None, soft: float = 0.05) -> np.ndarray:
    sides = [0, 1] if side is None else [side]
    return np.clip(sum(cv.ellipse(*an.lungs[s], soft=soft) for s in sides), 0, 1)


def _point_in_lung(rng: np.random.Generator, an: Anatomy, side: int, rel_y: tuple[float, float] = (-0.6, 0.6),
                   rel_x: tuple[float, float] = (-0.55, 0.55)) -> tuple[float, float]:
    cx, cy, rx, ry = an.lungs[side]
    return cx + rng.uniform(*rel_x) * rx, cy + rng.uniform(*rel_y) * ry


def _box(cx: float, cy: float, hw: float, hh: float) -> Box:
    x0, y0 = max(cx - hw, 0.0), max(cy - hh, 0.0)
    return (x0, y0, min(cx + hw, 1.0) - x0, min(cy + hh, 1.0) - y0)


def _draw_anatomy(cv: Canvas, rng: np.random.Generator, female: bool, ap_view: bool,
                  cardiomegaly: bool, emphysema: bool) -> Anatomy:
    jx, jy, js = rng.normal(0, 0.012), rng.normal(0, 0.012), rng.uniform(0.95, 1.05)
    ry_scale = 1.08 if emphysema else 1.0
    lungs = [(0.5 + (-0.185 + jx) * js, 0.47 + jy, 0.135 * js, 0.27 * js * ry_scale),
             (0.5 + (0.185 + jx) * js, 0.47 + jy, 0.125 * js, 0.26 * js * ry_scale)]
    heart_rx = (0.205 if cardiomegaly else 0.115) * rng.uniform(0.93, 1.07) * (1.08 if ap_view else 1.0)
    heart = (0.535 + jx + (0.03 if cardiomegaly else 0.0), 0.635 + jy, heart_rx, 0.105 * js)
    cv.img[:] = 0.06
    cv.add(cv.ellipse(0.5 + jx, 0.56 + jy, 0.43 * js, 0.52, soft=0.04), 0.42)  # thorax soft tissue
    cv.add(np.clip((cv.y - (0.74 + jy)) / 0.05, 0, 1) * cv.ellipse(0.5, 0.8, 0.45, 0.4, soft=0.05), 0.12)
    cv.add(_lung_mask(cv, Anatomy(lungs, heart)), -0.34 - (0.09 if emphysema else 0.0))
    texture = gaussian_filter(rng.normal(0, 1, cv.img.shape).astype(np.float32), 2.0)
    cv.add(_lung_mask(cv, Anatomy(lungs, heart)) * texture, 0.05)  # vascular markings
    cv.add(cv.ellipse(0.5 + jx, 0.55, 0.035, 0.5, soft=0.1), 0.16)  # spine / mediastinum
    cv.add(cv.ellipse(0.5 + jx, 0.36 + jy, 0.06, 0.14, soft=0.3), 0.10)  # upper mediastinum
    cv.add(cv.ellipse(*heart, soft=0.06), 0.36)
    for side in (0, 1):  # ribs: curved bands across each lung
        cx, cy, rx, ry = lungs[side]
        for k in range(9):
            y0 = cy - ry * 0.95 + k * ry * 0.23
            curve = y0 + 0.05 * ((cv.x - (0.5 + jx)) / 0.2) ** 2 - 0.02
            band = np.exp(-((cv.y - curve) / 0.008) ** 2) * (np.abs(cv.x - cx) < rx * 1.15)
            cv.add(band, 0.05)
        sign = -1 if side == 0 else 1
        cv.add(cv.ellipse(0.5 + jx + sign * 0.15, 0.2 + jy, 0.14, 0.012, angle=sign * 0.22, soft=0.3), 0.12)
        if female:
            cv.add(cv.ellipse(cx + sign * 0.02, cy + ry * 0.75, rx * 1.2, ry * 0.35, soft=0.4), 0.06)
    return Anatomy(lungs, heart)


def _nodule(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy = _point_in_lung(rng, an, side)
    r = rng.uniform(0.022, 0.032)
    cv.add(cv.ellipse(cx, cy, r, r, soft=0.12), rng.uniform(0.28, 0.38))
    return _box(cx, cy, r * 1.6, r * 1.6)


def _mass(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy = _point_in_lung(rng, an, side, (-0.45, 0.45), (-0.4, 0.4))
    r = rng.uniform(0.055, 0.08)
    for _ in range(3):  # lobulated outline
        ox, oy = rng.normal(0, r * 0.25, 2)
        cv.add(cv.ellipse(cx + ox, cy + oy, r * 0.8, r * 0.8, soft=0.1), 0.13)
    return _box(cx, cy, r * 1.3, r * 1.3)


def _patches(cv, rng, cx, cy, spread, count, amp, size) -> None:
    for _ in range(count):
        ox, oy = rng.normal(0, spread, 2)
        r = rng.uniform(*size)
        cv.add(cv.ellipse(cx + ox, cy + oy, r, r * rng.uniform(0.7, 1.3), soft=0.5), amp * rng.uniform(0.7, 1.2))


def _pneumonia(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy = _point_in_lung(rng, an, side, (0.0, 0.5), (-0.3, 0.3))
    _patches(cv, rng, cx, cy, 0.035, 9, 0.16, (0.02, 0.04))
    return _box(cx, cy, 0.09, 0.09)


def _consolidation(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy = _point_in_lung(rng, an, side, (-0.2, 0.45), (-0.25, 0.25))
    rx, ry = rng.uniform(0.06, 0.08), rng.uniform(0.05, 0.07)
    cv.add(cv.ellipse(cx, cy, rx, ry, soft=0.15) * _lung_mask(cv, an, side), 0.34)
    for _ in range(3):  # air bronchograms: dark branching lines inside the opacity
        a = rng.uniform(0, np.pi)
        cv.add(cv.ellipse(cx + rng.normal(0, rx * 0.3), cy + rng.normal(0, ry * 0.3), rx * 0.6, 0.004, a, 0.3), -0.12)
    return _box(cx, cy, rx * 1.15, ry * 1.15)


def _infiltration(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy = _point_in_lung(rng, an, side, (-0.3, 0.3), (-0.2, 0.2))
    r = rng.uniform(0.09, 0.12)
    region = cv.ellipse(cx, cy, r, r * 1.3, soft=0.3)
    streaks = gaussian_filter(rng.normal(0, 1, cv.img.shape).astype(np.float32), (1.5, 5.0))
    streaks /= streaks.std() + 1e-6  # coarse enough to survive downsizing to the model's input
    cv.add(region * (0.5 + np.clip(streaks, 0, 2)), 0.13)
    return _box(cx, cy, r * 1.1, r * 1.4)


def _pneumothorax(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy, rx, ry = an.lungs[side]
    sign = -1 if side == 0 else 1
    depth = rng.uniform(0.3, 0.45)
    lung = cv.ellipse(cx, cy, rx, ry, soft=0.03)
    collapsed = cv.ellipse(cx - sign * rx * depth * 0.5, cy + ry * depth * 0.4, rx * (1 - depth * 0.5),
                           ry * (1 - depth * 0.5), soft=0.03)
    space = np.clip(lung - collapsed, 0, 1)
    cv.img -= space * (cv.img - 0.03) * 0.75  # lucent rim without lung markings
    edge = np.clip(collapsed * (1 - collapsed) * 4, 0, 1) * lung
    cv.add(edge, 0.14)  # the visceral pleural line
    ys, xs = np.nonzero(space > 0.5)
    if len(xs) == 0:
        return _box(cx, cy, rx, ry)
    x0, x1, y0, y1 = xs.min() / cv.n, (xs.max() + 1) / cv.n, ys.min() / cv.n, (ys.max() + 1) / cv.n
    return (x0, y0, x1 - x0, y1 - y0)


def _atelectasis(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy = _point_in_lung(rng, an, side, (0.2, 0.6), (-0.3, 0.3))
    angle = rng.uniform(-0.35, 0.35)
    cv.add(cv.ellipse(cx, cy, 0.085, 0.016, angle, soft=0.2), 0.36)
    cv.add(cv.ellipse(cx, cy + 0.035, 0.08, 0.03, angle, soft=0.4) * _lung_mask(cv, an, side), 0.08)
    return _box(cx, cy + 0.01, 0.095, 0.05)


def _edema(cv, rng, an) -> Box:
    for side in (0, 1):
        cx, cy, rx, ry = an.lungs[side]
        hx = cx + (0.45 if side == 0 else -0.45) * rx
        cv.add(cv.ellipse(hx, cy + 0.02, rx * 0.7, ry * 0.45, soft=0.5) * _lung_mask(cv, an, side), 0.2)
        for k in range(4):  # Kerley B lines at the lateral bases
            ly = cy + ry * (0.45 + 0.08 * k)
            lx = cx + (-0.8 if side == 0 else 0.8) * rx
            cv.add(cv.ellipse(lx, ly, 0.02, 0.0035, soft=0.3), 0.12)
    (lx0, _, lrx, _), (rx0, _, rrx, _) = an.lungs
    top = min(an.lungs[0][1] - an.lungs[0][3] * 0.5, an.lungs[1][1] - an.lungs[1][3] * 0.5)
    bottom = max(an.lungs[0][1] + an.lungs[0][3] * 0.8, an.lungs[1][1] + an.lungs[1][3] * 0.8)
    left, right = lx0 - lrx * 0.9, rx0 + rrx * 0.9
    return (left, top, right - left, bottom - top)


def _emphysema(cv, rng, an) -> Box:
    for _ in range(3):  # bullae
        side = int(rng.integers(2))
        bx, by = _point_in_lung(rng, an, side, (-0.7, -0.1))
        r = rng.uniform(0.02, 0.035)
        cv.add(cv.ellipse(bx, by, r, r, soft=0.1), -0.07)
    (lx, ly, lrx, lry), (rx_, ry_, rrx, rry) = an.lungs
    left, right = lx - lrx, rx_ + rrx
    top, bottom = min(ly - lry, ry_ - rry), max(ly + lry, ry_ + rry)
    return (left, top, right - left, bottom - top)


def _fibrosis(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy, rx, ry = an.lungs[side]
    fx, fy = cx + (-0.35 if side == 0 else 0.35) * rx, cy - 0.35 * ry
    region = cv.ellipse(fx, fy, rx * 0.6, ry * 0.4, soft=0.3) * _lung_mask(cv, an, side)
    period = 0.045  # reticular net, coarse enough to survive downsizing to the model's input
    net = (np.abs(np.sin(np.pi * cv.x / period + rng.uniform(0, 6))) < 0.35) | \
          (np.abs(np.sin(np.pi * cv.y / period + rng.uniform(0, 6))) < 0.35)
    cv.add(region * (0.35 + net), 0.18)
    return _box(fx, fy, rx * 0.65, ry * 0.45)


def _pleural_thickening(cv, rng, an) -> Box:
    side = int(rng.integers(2))
    cx, cy, rx, ry = an.lungs[side]
    ring = cv.ellipse(cx, cy, rx, ry, soft=0.02) - cv.ellipse(cx, cy, rx - 0.022, ry - 0.022, soft=0.02)
    sign = -1 if side == 0 else 1
    part = np.clip(((cv.x - cx) * sign) / rx, 0, 1) * (cv.y < cy + ry * 0.2)
    cv.add(np.clip(ring, 0, 1) * (part > 0.3), 0.30)
    x0 = cx + (0.3 if side == 1 else -1.05) * rx
    return (x0, cy - ry * 1.02, rx * 0.75, ry * 1.25)


def _hernia(cv, rng, an) -> Box:
    hx, hy = an.heart[0] - 0.02 + rng.normal(0, 0.01), an.heart[1] + 0.05
    r = rng.uniform(0.05, 0.065)
    sac = cv.ellipse(hx, hy, r, r * 0.85, soft=0.08)
    air = sac * (cv.y < hy - r * 0.1)
    cv.add(sac, 0.12)
    cv.add(air, -0.42)
    cv.add(sac * np.exp(-((cv.y - (hy - r * 0.1)) / 0.004) ** 2), 0.2)  # air-fluid level
    return _box(hx, hy, r * 1.2, r * 1.1)


DRAW = {
    "Atelectasis": _atelectasis, "Cardiomegaly": None, "Consolidation": _consolidation, "Edema": _edema,
    "Effusion": None, "Emphysema": _emphysema, "Fibrosis": _fibrosis, "Hernia": _hernia,
    "Infiltration": _infiltration, "Mass": _mass, "Nodule": _nodule,
    "Pleural_Thickening": _pleural_thickening, "Pneumonia": _pneumonia, "Pneumothorax": _pneumothorax,
}


def _effusion(cv: Canvas, rng: np.random.Generator, an: Anatomy) -> Box:
    side = int(rng.integers(2))
    cx, cy, rx, ry = an.lungs[side]
    level = cy + ry * rng.uniform(0.35, 0.6)
    lateral = (cv.x - cx) * (-1 if side == 0 else 1) / rx  # 1 at the lateral wall
    meniscus = level - 0.07 * np.clip(lateral, 0, 1.2) ** 2
    fluid = 1.0 / (1.0 + np.exp(np.clip(-(cv.y - meniscus) / 0.006, -30, 30))) * cv.ellipse(cx, cy, rx * 1.05, ry * 1.05, soft=0.03)
    cv.add(fluid, 0.40)
    return (cx - rx * 1.05, level - 0.08, rx * 2.1, cy + ry * 1.05 - (level - 0.08))


def render(findings: set[str], size: int, rng: np.random.Generator, female: bool = False,
           ap_view: bool = False, width: int | None = None,
           severity: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, Box]]:
    """One radiograph (uint8, size × width) and the normalised box of each planted finding.

    `severity` scales a finding's drawn contrast (1 = full; Cardiomegaly and Emphysema change the anatomy
    and are always full)."""
    cv = Canvas(WORK)
    an = _draw_anatomy(cv, rng, female, ap_view, "Cardiomegaly" in findings, "Emphysema" in findings)
    severity = severity or {}
    boxes: dict[str, Box] = {}
    if "Cardiomegaly" in findings:
        hx, hy, hrx, hry = an.heart
        boxes["Cardiomegaly"] = _box(hx, hy, hrx * 1.05, hry * 1.1)
    for name in sorted(findings):
        draw = _effusion if name == "Effusion" else DRAW[name]
        if draw is not None:
            before = cv.img.copy() if name in severity else None
            boxes[name] = draw(cv, rng, an)
            if before is not None:
                cv.img = before + severity[name] * (cv.img - before)
    img = gaussian_filter(cv.img, 0.6)
    img = np.clip(img * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.03), 0, 1) ** rng.uniform(0.85, 1.15)
    out = Image.fromarray((img * 255).astype(np.uint8)).resize((width or size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(out, dtype=np.float32) + rng.normal(0, 4.0, (size, width or size))
    return np.clip(pixels, 0, 255).astype(np.uint8), boxes
