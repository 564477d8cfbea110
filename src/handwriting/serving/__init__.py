"""Serving: export trained Keras models to ONNX (float32 and int8) and predict letters.

* :mod:`handwriting.serving.onnx_export` -- :func:`~handwriting.serving.onnx_export.export_onnx`,
  :func:`~handwriting.serving.onnx_export.quantize_int8` and
  :func:`~handwriting.serving.onnx_export.agreement` (how closely an export follows its model).
* :mod:`handwriting.serving.predictor` -- :class:`~handwriting.serving.predictor.Predictor`
  (ONNX Runtime, or a compiled Keras fallback, behind the shared preprocessing) and
  :func:`~handwriting.serving.predictor.write_serving_dir`, which writes the self-describing
  serving folder (``model.onnx``, ``model.int8.onnx``, ``model.keras``, ``serving.json``) that
  :meth:`~handwriting.serving.predictor.Predictor.from_directory` loads.

Nothing heavy (TensorFlow, ONNX Runtime) is imported until a function needs it.
"""
