"""Latency samples and how the benchmark reads them: rounds aligned across variants, and the
ratio to the baseline taken call by call."""

import statistics

import pytest

from turbo.benchmark.report import markdown_table, median_latency, relative_latency
from turbo.benchmark.timing import latency_samples
from turbo.benchmark.variants import Variant
from turbo.config import TurboParams

from helpers import build, make_images, tiny_cfg

OFF = TurboParams(num_iters=0, soft_nms={"enabled": False})


def test_relative_latency_pairs_calls_of_the_same_round():
    # the images cost 4 s, 5 s and 6 s; the variant adds 10 % to two of them and 50 % to the
    # first (more detections there)
    base = [4.0, 5.0, 6.0]
    turbo = [6.0, 5.5, 6.6]
    rows = [
        Variant("b", "m", OFF),
        Variant("t", "m", TurboParams()),
        Variant("C: b", "c", OFF),
        Variant("C: t", "c", TurboParams()),
    ]
    samples = {"b": base, "t": turbo, "C: b": turbo, "C: t": turbo}
    rel = relative_latency(rows, samples)
    assert rel["b"] == 1.0 and rel["C: b"] == 1.0 and rel["C: t"] == 1.0  # per model
    assert rel["t"] == pytest.approx(1.1)
    # a ratio of medians would compare the baseline's middle image with another image
    assert statistics.median(turbo) / statistics.median(base) == pytest.approx(1.2)
    assert median_latency(samples)["t"] == pytest.approx(6.0)
    table = markdown_table(
        rows, {r.name: _metrics() for r in rows}, samples, masks=False
    ).splitlines()
    assert table[3].split(" | ")[-2:] == ["1.100", "6000.0 |"]


def test_relative_latency_refuses_samples_of_other_rounds():
    rows = [Variant("b", "m", OFF), Variant("t", "m", TurboParams())]
    with pytest.raises(ValueError):
        relative_latency(rows, {"b": [1.0, 2.0], "t": [1.0]})


def test_latency_samples_time_every_variant_on_every_batch_in_every_round():
    model = build(tiny_cfg())
    batches = [[im] for im in make_images(((64, 96), (80, 64), (72, 72)))]
    rows = [Variant("b", "m", OFF), Variant("t", "m", TurboParams())]
    done = []
    samples = latency_samples(
        {"m": model}, rows, batches, repeats=2, warmup=1, progress=done.append
    )
    assert done == [1, 2]
    assert set(samples) == {"b", "t"}
    for t in samples.values():
        assert len(t) == 2 * len(batches) and all(s > 0 for s in t)
    assert set(relative_latency(rows, samples)) == {"b", "t"}


def _metrics():
    return {"bbox": {"AP": 50.0, "AP50": 70.0, "AP75": 55.0}, "dets_per_image": 3.0}
