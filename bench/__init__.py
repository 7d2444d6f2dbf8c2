"""Benchmarks of HematoVision: ``python -m bench`` runs them all and writes ``bench/results/latest.{json,md}``.

Sections (each a small module with a ``run(...)`` returning frozen dataclasses):

- :mod:`bench.latency`    per-image latency: int8 TFLite via ``hematovision`` vs the float Keras model
  (``model.predict`` and a direct call), and the numpy CAM vs TensorFlow's GradientTape Grad-CAM;
- :mod:`bench.throughput` the CLI on a folder of test images: images/s and peak RSS;
- :mod:`bench.app_load`   the Gradio app through ``gradio_client``: round trip, 8 clients x 50 requests, RSS;
- :mod:`bench.station_fields` station fields/s, through ``bench/station_bench.py`` (the station's own);
- :mod:`bench.size`       the shipped ``.tflite`` files and the installed size of the requirements files;
- :mod:`bench.macs`       multiply-accumulates of the model and a Raspberry Pi latency estimate.

Every figure is written with the machine it was measured on and whether that machine was idle.
"""
