"""The ruler: Curvecast's benchmark of forecast quality, calibration and speed on real training curves.

``python -m bench run [--quick]`` loads curves (bench.data), cuts them into forecasting tasks
(bench.tasks), runs engines and baselines through the Engine protocol (bench.runner, bench.baselines),
scores them (bench.metrics, bench.speed) and writes ``report.md``, plots and ``results.json``
(bench.report). See bench/README.md for the curve table format and the metric definitions.
"""
