"""What the export stage measures: every export checked against its Keras model, the served
champion's variants (agreement, test accuracy, size), and apart from those their timings
(latency end to end, batched throughput).

Timings are reported, in the MLflow run and on the console; nothing is chosen by them
(:mod:`handwriting.evaluation.champion` chooses by a compute count), and they never enter a
DVC output: they differ on every run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from handwriting import timing
from handwriting.imaging import PreprocessSettings

# Side of the dark-on-white PNGs the latency figure decodes: a typical small upload, so the
# figure includes real decoding and cropping work, not only the model.
LATENCY_IMAGE_SIDE = 128
WARM_UP_CALLS = 20
THROUGHPUT_SECONDS = 1.5


def latency_pngs(images: np.ndarray, count: int) -> list[bytes]:
    """``count`` PNG files made from preprocessed uint8 images (ink = 255): dark ink on white,
    enlarged to LATENCY_IMAGE_SIDE pixels, as a user's upload would be."""
    import cv2

    files = []
    for index in range(count):
        image = 255 - images[index % len(images)]
        image = cv2.resize(image, (LATENCY_IMAGE_SIDE, LATENCY_IMAGE_SIDE),
                           interpolation=cv2.INTER_LINEAR)
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG")
        files.append(encoded.tobytes())
    return files


def end_to_end_latency_ms(predictor, files: list[bytes]) -> dict[str, float]:
    """p50 and p99 wall time (ms) of ``predictor.predict(png_bytes, top_k=5)``, one image per
    call, after a warm-up."""
    return timing.latency(lambda data: predictor.predict(data, top_k=5), files,
                          warm_up=WARM_UP_CALLS).rounded()


def batched_throughput(predictor, images: np.ndarray, batch_size: int) -> float:
    """Preprocessed images per second through ``predictor.probabilities`` in batches of
    ``batch_size``, measured over at least THROUGHPUT_SECONDS."""
    reps = -(-batch_size // len(images))
    batch = np.concatenate([images] * reps)[:batch_size]
    return round(timing.throughput(lambda: predictor.probabilities(batch), len(batch),
                                   seconds=THROUGHPUT_SECONDS), 1)


def size_mb(path: Path) -> float:
    """A file's size in MiB, rounded to 3 decimals."""
    return round(path.stat().st_size / 2**20, 3)


def rounded(values: dict[str, float]) -> dict[str, float]:
    """Figures rounded to 8 decimals (counts stay integers)."""
    return {key: (value if isinstance(value, int) else round(float(value), 8))
            for key, value in values.items()}


def export_and_check(model, name: str, onnx_dir: Path, test_inputs: np.ndarray, *,
                     int8: bool = True) -> dict[str, Any]:
    """Export ``model`` to ``onnx_dir/<name>.onnx`` (and ``.int8.onnx``) and check each export
    against the Keras model on ``test_inputs``: agreement and file sizes."""
    from handwriting.keras_inference import keras_probabilities
    from handwriting.serving.onnx_export import agreement_with, export_onnx, quantize_int8

    onnx_path = export_onnx(model, onnx_dir / f"{name}.onnx")
    expected = keras_probabilities(model, test_inputs)
    entry: dict[str, Any] = {"onnx": rounded(agreement_with(expected, onnx_path, test_inputs))}
    if int8:
        int8_path = quantize_int8(onnx_path, onnx_dir / f"{name}.int8.onnx")
        entry["int8"] = rounded(agreement_with(expected, int8_path, test_inputs))
    entry["onnx_mb"] = size_mb(onnx_path)
    if int8:
        entry["int8_mb"] = size_mb(int8_path)
    agrees = f"; int8 agrees on {entry['int8']['top1_agreement']:.4f}" if int8 else ""
    print(f"export: {name}: ONNX agrees on {entry['onnx']['top1_agreement']:.4f} of the test "
          f"images{agrees}", flush=True)
    return entry


def export_latency_ms(onnx_path: Path, settings: PreprocessSettings,
                      files: list[bytes]) -> float:
    """The p50 wall time (ms) of one PNG file to its top-5 through ``onnx_path`` (a timing)."""
    from handwriting.serving.predictor import Predictor

    p50 = end_to_end_latency_ms(Predictor(onnx_path, settings), files)["p50_ms"]
    print(f"export: {onnx_path.name}: end to end p50 {p50:.3f} ms", flush=True)
    return p50


def served_figures(serving_dir: Path, model, test_inputs: np.ndarray,
                   test_labels: np.ndarray) -> dict[str, Any]:
    """The serving folder's ONNX and int8 variants against ``model`` (its Keras model):
    agreement, test accuracy and size."""
    from handwriting.keras_inference import keras_probabilities
    from handwriting.serving.onnx_export import agreement_with
    from handwriting.serving.predictor import INT8_FILE, ONNX_FILE, Predictor

    figures: dict[str, Any] = {}
    expected = keras_probabilities(model, test_inputs)
    for variant, file_name in (("onnx", ONNX_FILE), ("int8", INT8_FILE)):
        predictor = Predictor.from_directory(serving_dir, variant=variant)
        predicted = predictor.probabilities(test_inputs).argmax(axis=1)
        figures[variant] = {
            **rounded(agreement_with(expected, serving_dir / file_name, test_inputs)),
            "test_accuracy": round(float(np.mean(predicted == test_labels)), 6),
            "size_mb": size_mb(serving_dir / file_name),
        }
        print(f"export: champion {variant}: test accuracy "
              f"{figures[variant]['test_accuracy']:.4f}, agreement "
              f"{figures[variant]['top1_agreement']:.4f}", flush=True)
    return figures


def served_timings(serving_dir: Path, test_inputs: np.ndarray, files: list[bytes],
                   throughput_batch: int) -> dict[str, dict[str, Any]]:
    """The serving folder's ONNX and int8 variants timed: latency end to end (one image per
    call, one thread) and batched throughput (all cores). Timings differ on every run: the
    stage logs them to MLflow and prints them, never into a DVC output."""
    from handwriting.serving.predictor import Predictor

    timings: dict[str, dict[str, Any]] = {}
    threads = max(1, os.cpu_count() or 1)
    for variant in ("onnx", "int8"):
        single = Predictor.from_directory(serving_dir, variant=variant)
        batched = Predictor.from_directory(serving_dir, variant=variant,
                                           intra_op_threads=threads)
        timings[variant] = {
            "latency_end_to_end": end_to_end_latency_ms(single, files),
            "throughput_images_per_s": batched_throughput(batched, test_inputs,
                                                          throughput_batch),
            "throughput_threads": threads,
        }
        print(f"export: champion {variant}: end to end p50 "
              f"{timings[variant]['latency_end_to_end']['p50_ms']:.3f} ms, batched "
              f"{timings[variant]['throughput_images_per_s']:.0f} images/s", flush=True)
    return timings
