"""Phantom family B's findings: each drawn by its own rule inside the anatomy of family_b_anatomy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from chestaid.data.phantoms.family_b_anatomy import Body, Lung, _sig


@dataclass
class Scene:
    """What a finding is drawn into: the body, both lungs and their masks, and the facts rules depend on."""

    body: Body
    lungs: list[Lung]
    lung_masks: list[np.ndarray]
    air: np.ndarray
    collapse_side: int
    ap_view: bool
    heart_cu: float
    heart_cv: float


def draw_finding(name: str, scene: Scene, rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask whose extent is the finding's box, attenuation to add) for one finding on lung side `s`."""
    body, lungs, lung_masks, air = scene.body, scene.lungs, scene.lung_masks, scene.air
    collapse_side, ap_view, heart_cu, heart_cv = scene.collapse_side, scene.ap_view, scene.heart_cu, scene.heart_cv
    u, v = body.u, body.v
    lung, lmask = lungs[s], lung_masks[s]
    if name == "Nodule":
        cu, cv = lung.point(rng)
        r = rng.uniform(0.012, 0.02)
        mask = body.disc(cu, cv, r, r, 0.0015)
        core = body.disc(cu, cv, r * 0.45, r * 0.45, 0.001) if rng.random() < 0.3 else 0
        mu = (rng.uniform(0.3, 0.45) * mask + 0.3 * core)
    elif name == "Mass":
        cu, cv = lung.point(rng, (0.25, 0.75), (-0.3, 0.4))
        r = rng.uniform(0.035, 0.055)
        mask = body.disc(cu, cv, r, r, 0.003, wobble=rng.uniform([0.05, 0], [0.14, 6], (3, 2)))
        spicules = sum(body.segment((cu, cv), (cu + 1.6 * r * np.cos(a), cv + 1.6 * r * np.sin(a)), 0.0018)
                       for a in rng.uniform(0, 2 * np.pi, 7))
        mask = np.clip(mask + 0.5 * spicules, 0, 1)
        mu = (0.38 * mask)
    elif name == "Atelectasis":  # lower-lobe collapse: a medial wedge beside the heart
        lung, lmask = lungs[collapse_side], lung_masks[collapse_side]
        apex_u, base_v = lung.hilum[0], lung.base
        spread = np.clip((v - lung.hilum[1]) / (base_v - lung.hilum[1]), 0, 1)
        wedge = _sig(spread * 0.09 - np.abs(u - apex_u - lung.lateral * 0.02), 0.004) * (v > lung.hilum[1])
        mask = wedge * lmask
        mu = (0.32 * mask)
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
        mu = (0.55 * mask)
    elif name == "Infiltration":  # many small ill-defined nodules in one zone
        cu, cv = lung.point(rng, (0.3, 0.75), (-0.3, 0.3))
        zone = np.zeros_like(body.mu)
        for _ in range(int(rng.integers(25, 45))):
            r = rng.uniform(0.006, 0.011)
            zone += body.disc(cu + rng.normal(0, 0.045), cv + rng.normal(0, 0.06), r, r, 0.004)
        mask = np.clip(zone, 0, 1.5) * lmask
        mu = (0.16 * mask)
    elif name == "Pneumonia":  # lobar: sharp along an oblique fissure, fading the other way
        fissure = lung.top + rng.uniform(0.35, 0.55) * (lung.base - lung.top)
        tilt = rng.uniform(-0.3, 0.3)
        below = v - (fissure + tilt * (u - lung.cu))
        lobe = _sig(below, 0.003) * _sig(0.14 - below, 0.03) * lmask
        patchy = gaussian_filter(rng.normal(0, 1, body.mu.shape).astype(np.float32), 6)
        mask = lobe * np.clip(0.7 + 2.5 * patchy, 0.3, 1.3)
        mu = (0.26 * mask)
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
        mu = (0.5 * mask - 0.3 * bronchi * mask)
    elif name == "Edema":  # bat-wing haze around both hila
        mask = sum(body.disc(*lungs[k].hilum, 0.1, 0.13, 0.04) * lung_masks[k] for k in (0, 1))
        mu = (0.22 * mask)
    elif name == "Emphysema":  # drawn above as the anatomy (tall lungs, flat bases, few vessels); bullae:
        mask = np.zeros_like(body.mu)
        for _ in range(2):
            k = int(rng.integers(2))
            cu, cv = lungs[k].point(rng, (0.05, 0.35))
            mask = np.maximum(mask, body.disc(cu, cv, 0.03, 0.025, 0.003) * lung_masks[k])
        mu = (-0.1 * mask)
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
        mu = (0.3 * mask)
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
        mu = (0.32 * mask)
    elif name == "Hernia":  # gas-filled stomach behind the heart
        mask = np.zeros_like(body.mu)
        for _ in range(int(rng.integers(2, 4))):
            cu, cv = heart_cu - 0.03 + rng.normal(0, 0.02), heart_cv - 0.02 + rng.normal(0, 0.015)
            mask = np.maximum(mask, body.disc(cu, cv, rng.uniform(0.018, 0.03), rng.uniform(0.014, 0.022), 0.003))
        mu = (-0.45 * mask)
    else:
        raise ValueError(f"family B draws no {name!r}")
    return mask, mu
