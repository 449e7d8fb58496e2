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

from chestaid.data.phantoms.family_b_anatomy import WORK, Body, Box, Lung, _sig, _vessels
from chestaid.data.phantoms.family_b_lesions import Scene, draw_finding


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

    scene = Scene(body, lungs, lung_masks, air, collapse_side, ap_view, heart_cu, heart_cv)
    for name in sorted(findings - {"Cardiomegaly", "Pneumothorax"}):
        mask, mu = draw_finding(name, scene, rng, int(rng.integers(2)))
        add(name, mu)
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
