"""Phantom family B: a second synthetic radiograph, written apart from data/phantoms/family_a.py so that a recipe or a
Grad-CAM layer chosen on one family can be confirmed on the other.

It differs from family A in every part:
- geometry: the patient is drawn in body coordinates, then rotated (±6°), shifted and scaled in the image;
  D-shaped lungs with pointed apices and domed hemidiaphragms, a stomach bubble, clavicles, cortical ribs;
- intensity: an attenuation map (air, soft tissue, bone, fluid), exposed through 1 − exp(−κμ), then windowed;
- texture: vessels branching from the hila (not filtered noise);
- acquisition: heel-effect gradient, signal-dependent noise, collimation borders, a side marker, grid lines,
  and in AP views (bedside films) ECG electrodes, leads and a line or tube;
- findings: other shapes and other rules (smaller nodules, sometimes calcified; spiculated masses; lower-lobe
  collapse with a raised hemidiaphragm; effusions that layer in AP views; apical pneumothorax; micronodular
  infiltrates; lobar pneumonia bounded by a fissure; bat-wing oedema; basal honeycombing; apical caps; a gas-
  filled hiatus hernia behind the heart).

`render` has family A's signature and returns boxes in normalised image coordinates (x, y, w, h), each the
extent of what was drawn for that finding.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

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


def render(findings: set[str], size: int, rng: np.random.Generator, female: bool = False,
           ap_view: bool = False, width: int | None = None,
           severity: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, Box]]:
    """One radiograph (uint8, size × width) and the normalised box of each planted finding."""
    severity = severity or {}
    body = Body(WORK, rng)
    u, v = body.u, body.v
    emphysema, fibrosis = "Emphysema" in findings, "Fibrosis" in findings
    collapse_side = int(rng.integers(2))
    tall = 1.08 if emphysema else (0.95 if fibrosis else 1.0)
    lungs = [Lung(s, rng, tall, 0.035 if "Atelectasis" in findings and s == collapse_side else 0.0) for s in (0, 1)]
    lung_masks = [lung.mask(body) for lung in lungs]
    air = np.clip(lung_masks[0] + lung_masks[1], 0, 1)
    boxes: dict[str, Box] = {}
    extra = np.zeros_like(body.mu)  # findings' attenuation, scaled by severity per finding

    def add(name: str, mu: np.ndarray) -> None:
        nonlocal extra
        extra = extra + severity.get(name, 1.0) * mu

    # the patient: trunk, shoulders, breasts, mediastinum, spine, heart, clavicles, ribs, stomach gas
    trunk = body.disc(0.5, 0.58, 0.42, 0.56, edge=0.01, wobble=np.array([[0.04, 0.0]]))
    body.mu += 0.55 * trunk
    body.mu += 0.3 * (body.disc(0.12, 0.14, 0.16, 0.09, 0.02) + body.disc(0.88, 0.14, 0.16, 0.09, 0.02))
    if female:
        for s in (0, 1):
            body.mu += 0.22 * body.disc(lungs[s].cu + lungs[s].lateral * 0.03, lungs[s].base - 0.05, 0.15, 0.09, 0.03)
    spine = _sig(0.028 - np.abs(u - 0.5), 0.004)
    body.mu += 0.3 * spine * (1 + 0.12 * np.sin(2 * np.pi * v / 0.045))  # vertebral bodies
    cardiomegaly = "Cardiomegaly" in findings
    heart_w = (0.18 if cardiomegaly else 0.125) * (0.85 if emphysema else 1.0) * rng.uniform(0.94, 1.06)
    heart_cu, heart_cv = 0.535 + (0.035 if cardiomegaly else 0.0), lungs[1].base - 0.11
    heart = body.disc(heart_cu, heart_cv, heart_w, 0.1 * (1.15 if cardiomegaly else 1.0), 0.005,
                      wobble=np.array([[0.06, rng.uniform(0, 6)]]))
    body.mu += 0.45 * heart
    if cardiomegaly:
        boxes["Cardiomegaly"] = body.box_of(heart)
    for s in (0, 1):
        sign = lungs[s].lateral
        for k in range(2):  # clavicle cortex
            curve = 0.13 + 0.05 * (np.abs(u - 0.5) - 0.18) ** 2 * 10 + 0.006 * k
            body.mu += 0.18 * _sig(0.005 - np.abs(v - curve), 0.002) * _sig(0.3 - np.abs(u - 0.5 - sign * 0.17), 0.01)
        within = _sig(0.3 - np.abs(u - lungs[s].cu), 0.02) * (np.sign(u - 0.5) == sign)
        slope = lungs[s].top - 0.01 + 0.35 * np.abs(u - 0.5) ** 2 + 0.06 * np.abs(u - 0.5)  # lower laterally
        phase = (v - slope) / 0.058  # posterior ribs: one every 0.058, a band with a bright cortex each side
        offset = (np.abs(phase - np.round(phase)) * 0.058) * (phase > -0.5) * (phase < 9.5)
        band = _sig(0.011 - offset, 0.002) * (phase > -0.5) * (phase < 9.5)
        rim = _sig(0.0025 - np.abs(offset - 0.011), 0.001) * (phase > -0.5) * (phase < 9.5)
        body.mu += within * (0.03 * band + 0.06 * rim)
    if rng.random() < 0.7:
        body.mu -= 0.3 * body.disc(lungs[1].cu + 0.02, lungs[1].base + 0.05, 0.05, 0.03, 0.006)

    # lungs hold air; vessels inside them
    thickness = 1.8 if "Edema" in findings else (0.5 if emphysema else 1.0)
    vessels = sum(_vessels(body, rng, lungs[s], thickness) * lung_masks[s] for s in (0, 1))
    ptx = np.zeros_like(body.mu)
    if "Pneumothorax" in findings:
        lung = lungs[int(rng.integers(2))]
        depth = rng.uniform(0.05, 0.09)
        inner = Lung(lung.side, rng, 1.0, 0.0)
        inner.cu, inner.half, inner.base, inner.dome = lung.cu, lung.half, lung.base, lung.dome
        inner.top = lung.top + depth
        inner.half = lung.half - depth * 0.5
        inner_mask = inner.mask(body, 0.003)
        ptx = np.clip(lung.mask(body, 0.003) - inner_mask, 0, 1) * _sig(lung.top + 0.3 - v, 0.02)
        pleural_line = np.clip(inner_mask * (1 - inner_mask) * 4, 0, 1) * _sig(lung.top + 0.3 - v, 0.02)
        add("Pneumothorax", -0.14 * ptx + 0.12 * pleural_line)
        boxes["Pneumothorax"] = body.box_of(ptx)
    body.mu -= (0.42 + (0.08 if emphysema else 0.0)) * air
    body.mu += 0.16 * vessels * (1 - ptx)

    for name in sorted(findings - {"Cardiomegaly", "Pneumothorax"}):
        s = int(rng.integers(2))
        lung, lmask = lungs[s], lung_masks[s]
        if name == "Nodule":
            cu, cv = lung.point(rng)
            r = rng.uniform(0.012, 0.02)
            mask = body.disc(cu, cv, r, r, 0.0015)
            core = body.disc(cu, cv, r * 0.45, r * 0.45, 0.001) if rng.random() < 0.3 else 0
            add(name, rng.uniform(0.3, 0.45) * mask + 0.3 * core)
        elif name == "Mass":
            cu, cv = lung.point(rng, (0.25, 0.75), (-0.3, 0.4))
            r = rng.uniform(0.035, 0.055)
            mask = body.disc(cu, cv, r, r, 0.003, wobble=rng.uniform([0.05, 0], [0.14, 6], (3, 2)))
            spicules = sum(body.segment((cu, cv), (cu + 1.6 * r * np.cos(a), cv + 1.6 * r * np.sin(a)), 0.0018)
                           for a in rng.uniform(0, 2 * np.pi, 7))
            mask = np.clip(mask + 0.5 * spicules, 0, 1)
            add(name, 0.38 * mask)
        elif name == "Atelectasis":  # lower-lobe collapse: a medial wedge beside the heart
            lung, lmask = lungs[collapse_side], lung_masks[collapse_side]
            apex_u, base_v = lung.hilum[0], lung.base
            spread = np.clip((v - lung.hilum[1]) / (base_v - lung.hilum[1]), 0, 1)
            wedge = _sig(spread * 0.09 - np.abs(u - apex_u - lung.lateral * 0.02), 0.004) * (v > lung.hilum[1])
            mask = wedge * lmask
            add(name, 0.32 * mask)
        elif name == "Effusion":
            sides = (0, 1) if rng.random() < 0.3 else (s,)
            mask = np.zeros_like(body.mu)
            for side in sides:
                lung = lungs[side]
                if ap_view:  # supine: fluid layers behind the lung, a haze that grows downwards
                    grade = np.clip((v - lung.top) / (lung.base - lung.top), 0, 1) ** 1.5
                    part = lung.mask(body, 0.02) * grade * rng.uniform(0.7, 1.0)
                else:  # erect: a meniscus rising at the lateral wall, blunting the costophrenic angle
                    level = lung.base - rng.uniform(0.08, 0.15)
                    lateral = np.clip((u - lung.cu) * lung.lateral / lung.half, 0, 1.3)
                    part = _sig(v - (level - 0.06 * lateral ** 2), 0.004) * lung.mask(body, 0.012)
                mask = np.maximum(mask, part)
            add(name, 0.55 * mask)
        elif name == "Infiltration":  # many small ill-defined nodules in one zone
            cu, cv = lung.point(rng, (0.3, 0.75), (-0.3, 0.3))
            zone = np.zeros_like(body.mu)
            for _ in range(int(rng.integers(25, 45))):
                r = rng.uniform(0.006, 0.011)
                zone += body.disc(cu + rng.normal(0, 0.045), cv + rng.normal(0, 0.06), r, r, 0.004)
            mask = np.clip(zone, 0, 1.5) * lmask
            add(name, 0.16 * mask)
        elif name == "Pneumonia":  # lobar: sharp along an oblique fissure, fading the other way
            fissure = lung.top + rng.uniform(0.35, 0.55) * (lung.base - lung.top)
            tilt = rng.uniform(-0.3, 0.3)
            below = v - (fissure + tilt * (u - lung.cu))
            lobe = _sig(below, 0.003) * _sig(0.14 - below, 0.03) * lmask
            patchy = gaussian_filter(rng.normal(0, 1, body.mu.shape).astype(np.float32), 6)
            mask = lobe * np.clip(0.7 + 2.5 * patchy, 0.3, 1.3)
            add(name, 0.26 * mask)
        elif name == "Consolidation":  # dense, lobulated, with branching air bronchograms
            cu, cv = lung.point(rng, (0.35, 0.8), (-0.3, 0.3))
            r = rng.uniform(0.05, 0.07)
            mask = body.disc(cu, cv, r, r * 1.2, 0.01, wobble=rng.uniform([0.05, 0], [0.12, 6], (2, 2))) * lmask
            bronchi = np.zeros_like(body.mu)
            p, a = (cu - lung.lateral * r * 0.6, cv - r * 0.5), rng.uniform(0.3, 1.2)
            for _ in range(3):
                q = (p[0] + lung.lateral * 0.03 * np.cos(a), p[1] + 0.03 * np.sin(a))
                bronchi = np.maximum(bronchi, body.segment(p, q, 0.0022))
                p, a = q, a + rng.normal(0, 0.5)
            add(name, 0.5 * mask - 0.3 * bronchi * mask)
        elif name == "Edema":  # bat-wing haze around both hila
            mask = sum(body.disc(*lungs[k].hilum, 0.1, 0.13, 0.04) * lung_masks[k] for k in (0, 1))
            add(name, 0.22 * mask)
        elif name == "Emphysema":  # drawn above as the anatomy (tall lungs, flat bases, few vessels); bullae:
            mask = np.zeros_like(body.mu)
            for _ in range(2):
                k = int(rng.integers(2))
                cu, cv = lungs[k].point(rng, (0.05, 0.35))
                mask = np.maximum(mask, body.disc(cu, cv, 0.03, 0.025, 0.003) * lung_masks[k])
            add(name, -0.1 * mask)
            mask = np.maximum(mask, air)  # the finding is the whole of both lungs
        elif name == "Fibrosis":  # basal, peripheral honeycombing
            cu, cv = lung.point(rng, (0.6, 0.85), (0.4, 0.8))
            mask = np.zeros_like(body.mu)
            for _ in range(int(rng.integers(14, 24))):
                ru = rng.uniform(0.007, 0.012)
                ou, ov = rng.normal(0, 0.035, 2)
                ring = body.disc(cu + ou, cv + ov, ru, ru, 0.002) - body.disc(cu + ou, cv + ov, ru * 0.6, ru * 0.6, 0.002)
                mask = np.maximum(mask, np.clip(ring, 0, 1))
            mask *= lmask
            add(name, 0.3 * mask)
        elif name == "Pleural_Thickening":  # an apical cap or a lobulated lateral band
            if rng.random() < 0.5:
                outer = lung.mask(body, 0.003)
                inner = Lung(lung.side, rng, 1.0, 0.0)
                inner.cu, inner.half, inner.base, inner.dome = lung.cu, lung.half - 0.012, lung.base, lung.dome
                inner.top = lung.top + 0.025
                mask = np.clip(outer - inner.mask(body, 0.003), 0, 1) * _sig(lung.top + 0.1 - v, 0.01)
            else:
                wall = lung.cu + lung.lateral * lung.half
                bumps = 0.008 * (1 + np.sin(v * 90 + rng.uniform(0, 6)))
                mask = _sig(bumps + 0.006 - np.abs(u - wall + lung.lateral * 0.008), 0.002)
                mask = mask * _sig(v - lung.top - 0.1, 0.01) * _sig(lung.base - 0.08 - v, 0.01)
            add(name, 0.32 * mask)
        elif name == "Hernia":  # gas-filled stomach behind the heart
            mask = np.zeros_like(body.mu)
            for _ in range(int(rng.integers(2, 4))):
                cu, cv = heart_cu - 0.03 + rng.normal(0, 0.02), heart_cv - 0.02 + rng.normal(0, 0.015)
                mask = np.maximum(mask, body.disc(cu, cv, rng.uniform(0.018, 0.03), rng.uniform(0.014, 0.022), 0.003))
            add(name, -0.45 * mask)
        else:
            raise ValueError(f"family B draws no {name!r}")
        boxes[name] = body.box_of(np.abs(mask))
    body.mu += extra

    # acquisition: lines and electrodes on bedside (AP) films, exposure, window, heel effect, noise, borders
    if ap_view:
        for _ in range(int(rng.integers(2, 5))):
            cu, cv = rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.5)
            ring = body.disc(cu, cv, 0.018, 0.018, 0.002) - 0.6 * body.disc(cu, cv, 0.01, 0.01, 0.002)
            body.mu += 0.6 * np.clip(ring, 0, 1)
            body.mu += 0.25 * body.segment((cu, cv), (cu + rng.normal(0, 0.2), 0.02), 0.0015)
        body.mu += 0.4 * body.segment((0.5 + rng.normal(0, 0.01), 0.02), (0.5 + rng.normal(0, 0.02), 0.33), 0.003)
    kappa = rng.uniform(1.3, 1.8)
    img = 1.0 - np.exp(-kappa * np.clip(body.mu, 0, None))
    lo, hi = rng.uniform(0.0, 0.08), rng.uniform(0.8, 0.95)
    img = np.clip((img - lo) / (hi - lo), 0, 1)
    img *= 1 + rng.uniform(0.0, 0.15) * ((np.arange(WORK) / WORK)[:, None] - 0.5)  # heel effect
    if rng.random() < 0.3:  # anti-scatter grid lines
        img += 0.02 * np.sin(np.arange(WORK) * 2 * np.pi / 3.3)[None, :]
    img = gaussian_filter(img, 0.7)
    borders = rng.integers(0, int(0.06 * WORK), 4) * (rng.random() < 0.5)
    top, bottom, left, right = (int(b) for b in borders)
    img[:top], img[WORK - bottom:], img[:, :left], img[:, WORK - right:] = 0.92, 0.92, 0.92, 0.92
    corner = (slice(12, 28), slice(WORK - 30, WORK - 14)) if rng.random() < 0.5 else (slice(12, 28), slice(14, 30))
    img[corner] = 0.97  # the side marker
    img = np.clip(img, 0, 1)
    out = Image.fromarray((img * 255).astype(np.uint8)).resize((width or size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(out, dtype=np.float32)
    pixels += rng.normal(0, 1, pixels.shape) * (1.5 + 4.0 * np.sqrt(pixels / 255))
    return np.clip(pixels, 0, 255).astype(np.uint8), boxes
