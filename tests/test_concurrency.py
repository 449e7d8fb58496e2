"""One request's result never depends on another running at the same time: heat maps made while other threads
score other images (through one shared Predictor) equal the maps made alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from chestaid.inference.predictor import Predictor


def _images(predictor: Predictor, n: int, seed: int) -> list[np.ndarray]:
    size = predictor.image_size
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (size, size), dtype=np.uint8) for _ in range(n)]


def test_heat_maps_made_while_others_score_equal_the_maps_made_alone(ungated_run):
    predictor = Predictor.load(ungated_run.root, backend="torch")
    labels = predictor.task.labels
    mapped, scored = _images(predictor, 4, 1), _images(predictor, 8, 2)
    findings = [labels[k % len(labels)] for k in range(len(mapped))]
    alone = [predictor.predict(img, age=50, sex="F").heatmap(f) for img, f in zip(mapped, findings)]
    scores_alone = predictor.score_arrays(np.stack(scored), np.full((len(scored), 3), 0.5, np.float32))[1]
    stop = threading.Event()

    def score_others() -> int:
        rounds = 0
        while not stop.is_set():  # batches of other sizes than the maps': another patient, another shape
            risk = predictor.score_arrays(np.stack(scored), np.full((len(scored), 3), 0.5, np.float32))[1]
            np.testing.assert_allclose(risk, scores_alone, atol=1e-5)
            predictor.predict(scored[rounds % len(scored)])
            rounds += 1
        return rounds

    def map_one(k: int) -> np.ndarray:
        return predictor.predict(mapped[k % 4], age=50, sex="F").heatmap(findings[k % 4])

    with ThreadPoolExecutor(3) as scorers, ThreadPoolExecutor(3) as mappers:
        running = [scorers.submit(score_others) for _ in range(3)]
        try:
            maps = list(mappers.map(map_one, range(12)))
        finally:
            stop.set()
        assert all(r.result() > 0 for r in running)  # the scorers really ran beside the maps
    for k, cam in enumerate(maps):
        np.testing.assert_allclose(cam, alone[k % 4], atol=1e-5, err_msg=f"map {k} differs from the one made alone")


def test_one_explainer_per_setting(ungated_run):
    """Prediction.heatmap reuses the Predictor's explainer (its copy of the network and its measured precision)
    instead of building a new one per call; the explainer never runs the Predictor's own model."""
    predictor = Predictor.load(ungated_run.root, backend="torch")
    image = _images(predictor, 1, 3)[0]
    result = predictor.predict(image)
    result.heatmap(predictor.task.labels[0])
    first = predictor.explainer()
    result.heatmap(predictor.task.labels[1])
    assert predictor.explainer() is first and predictor.explainer(precision="fp32") is not first
    assert first.model is not predictor.model
    shared = {p.data_ptr() for p in predictor.model.parameters()}
    assert not shared & {p.data_ptr() for p in first.model.parameters()}
