"""The benchmark harness: what measures turbo, apart from the library a user imports.

The shipped reference models (:mod:`.reference_models`), the rows of a benchmark
(:mod:`.variants`), running them on a shared prefix (:mod:`.runner`), side-by-side COCO
evaluation (:mod:`.accuracy`) and timing (:mod:`.timing`), tables (:mod:`.report`), plots
(:mod:`.plots`) and progress lines (:mod:`.progress`); for the cost of turbo's parts, synthetic
workloads (:mod:`.synthetic`), Detectron2's paste as the reference of ``mask_boxes``
(:mod:`.mask_paste`) and a counter of host syncs (:mod:`.host_syncs`), which the tests use too;
and the agreement of one model's detections on two devices (:mod:`.agreement`).
``scripts/benchmark.py``, ``scripts/bench_ops.py``, ``scripts/tune.py`` and
``scripts/device_agreement.py`` are its command lines; it runs from a source checkout (the
reference models' configs and checkpoints).
"""
