"""Measurement: quality evaluation and speed benchmarking, side by side, plus the whole-pipeline walkthrough.

Speed (``pvlm-bench``): how fast, against same-run PyTorch baselines.

- ``speed.py``: ``run_bench``: warm-up, then interleaved timed iterations of every backend; the token sweep.
- ``speed_runners.py``: what is timed: a runtime backend, or a PyTorch baseline, behind one ``run`` call.
- ``speed_workers.py``: each backend in its own process, so backends do not disturb each other's timings.
- ``speed_report.py``: the speed report as a console table, markdown, CSV and a latency-vs-batch plot.
- ``speed_server.py``: ``pvlm-bench --server``: latency and throughput of a running ``pvlm-serve``.
- ``cli_speed.py``: the ``pvlm-bench`` command.

Quality (``pvlm-eval``): how good, against reference captions, labels and the PyTorch FP32 reference.

- ``quality.py``: ``evaluate``: caption metrics, attribute accuracy, backend token parity, throughput.
- ``quality_html.py``: the evaluation as one self-contained HTML page.
- ``cli_quality.py``: the ``pvlm-eval`` command.

Both (``pvlm-bench-search``): ``retrieval.py``: retrieval quality of the description store on synthetic crops,
and its SQLite ingest/query speed at scale.

Walkthrough (``pvlm-quickstart``): ``walkthrough.py``: synthesise, train, export, describe, evaluate, benchmark.
"""
