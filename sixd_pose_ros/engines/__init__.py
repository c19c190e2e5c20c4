"""Inference engines: ONNX export (export.py), the on-disk cache (cache.py), TensorRT engines
(tensorrt_engine.py), one backend interface over TensorRT / ONNX Runtime / torch (backends.py)
and `sixd-pose build-engines` (build.py)."""
