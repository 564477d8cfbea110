"""Inference latency and throughput: Keras against ONNX Runtime (float32 and int8) on the CPU.

Run: ``python benchmarks/inference.py [--model PATH] [--calls 300] [--batch 256]``.

Loads one Keras model (default: the champion, models/serving/model.keras, written by the export
stage; else models/lenet5/tuned.keras; else an untrained LeNet-5 at 32x32, which times the same
but predicts nonsense), exports it to ONNX and to int8 ONNX in a temporary
folder, and prints

* single-image latency (p50/p99 ms over ``--calls`` calls, one thread): ``model.predict``, the
  compiled Keras path of :class:`handwriting.serving.predictor.Predictor`, ONNX Runtime float32
  and int8, and end to end from PNG bytes to the top-5 letters (decode + preprocessing + ONNX);
* batched throughput (images/s, ``--batch`` images per call, ``--batch-threads`` threads).

TensorFlow fixes its thread pools once per process, so the Keras throughput figures come from a
child process started with ``--batch-threads`` threads. Figures depend on the machine and on
what else runs on it: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAMPION_MODEL = REPO / "models" / "serving" / "model.keras"
LENET5_MODEL = REPO / "models" / "lenet5" / "tuned.keras"
DEFAULT_MODEL = CHAMPION_MODEL if CHAMPION_MODEL.is_file() else LENET5_MODEL
EMNIST = REPO.parent / "shared" / "data" / "emnist-letters"
WARMUP = 10
THROUGHPUT_SECONDS = 3.0


def _latency(call, calls: int) -> tuple[float, float]:
    """p50 and p99 of one call, in milliseconds (the pipeline's timer)."""
    from handwriting import timing

    measured = timing.latency(lambda _: call(), range(calls), warm_up=WARMUP)
    return measured.p50_ms, measured.p99_ms


def _throughput(call, batch: int) -> float:
    """Images per second of a call on ``batch`` images (the pipeline's timer)."""
    from handwriting import timing

    return timing.throughput(call, batch, seconds=THROUGHPUT_SECONDS, min_calls=3)


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _sample_png() -> tuple[bytes, str]:
    """PNG bytes of one handwritten letter: from the EMNIST sample if present, else drawn."""
    if (EMNIST / "upper" / "A").is_dir():
        path = sorted((EMNIST / "upper" / "A").glob("*.png"))[0]
        return path.read_bytes(), str(path)
    import cv2

    canvas = np.full((96, 96), 255, np.uint8)
    cv2.putText(canvas, "A", (18, 78), cv2.FONT_HERSHEY_SIMPLEX, 2.6, 0, 7)
    return cv2.imencode(".png", canvas)[1].tobytes(), "a drawn 'A'"


def _batch_images(size: int, batch: int) -> np.ndarray:
    """``batch`` preprocessed images: real EMNIST letters when present, else random."""
    from handwriting.imaging import preprocess

    files = sorted(EMNIST.rglob("*.png")) if EMNIST.is_dir() else []
    if files:
        pick = np.random.default_rng(0).choice(len(files), min(batch, len(files)),
                                               replace=False)
        images = np.stack([preprocess(files[i], size) for i in pick])
        return np.resize(images, (batch, size, size))
    return np.random.default_rng(0).random((batch, size, size), dtype=np.float32)


def _keras_throughput_child(args: argparse.Namespace) -> None:
    """Child process: Keras throughput with ``--batch-threads`` TensorFlow threads, as JSON."""
    _set_tf_threads(args.batch_threads)
    import keras

    from handwriting.serving.predictor import Predictor

    model = keras.saving.load_model(args.model, compile=False)
    compiled = Predictor(args.model)
    images = np.random.default_rng(0).random(
        (args.batch, compiled.image_size, compiled.image_size, 1), dtype=np.float32)
    result = {
        "predict": _throughput(lambda: model.predict(images, batch_size=args.batch, verbose=0),
                               args.batch),
        "compiled": _throughput(lambda: compiled.probabilities(images), args.batch),
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help=f"a .keras model (default: {DEFAULT_MODEL.relative_to(REPO)})")
    parser.add_argument("--calls", type=int, default=300, help="timed single-image calls")
    parser.add_argument("--batch", type=int, default=256, help="images per batched call")
    parser.add_argument("--batch-threads", type=int, default=2,
                        help="threads for the batched throughput (default 2)")
    parser.add_argument("--keras-throughput-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keras_throughput_child:
        _keras_throughput_child(args)
        return

    _set_tf_threads(1)  # single-image latency: one thread, as for ONNX Runtime below
    import keras

    from handwriting import labels
    from handwriting.models.zoo import build
    from handwriting.serving.onnx_export import agreement, export_onnx, quantize_int8
    from handwriting.serving.predictor import Predictor

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="inference-bench-") as tmp:
        tmp = Path(tmp)
        model_path = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None)
        if model_path is None:
            print(f"note: {DEFAULT_MODEL.relative_to(REPO)} not found (run `dvc repro`); "
                  "timing an UNTRAINED lenet5 at 32x32 (same speed, meaningless predictions)")
            model = build("lenet5", (32, 32, 1), labels.NUM_CLASSES)
            model_path = tmp / "lenet5.keras"
            model.save(model_path)
        else:
            model = keras.saving.load_model(model_path, compile=False)
        onnx_path = export_onnx(model, tmp / "model.onnx")
        int8_path = quantize_int8(onnx_path, tmp / "model.int8.onnx")

        size = model.input_shape[1]
        png, png_name = _sample_png()
        fp32 = Predictor(onnx_path, intra_op_threads=1)
        int8 = Predictor(int8_path, intra_op_threads=1)
        compiled = Predictor(model_path)
        one = fp32.preprocess(png)[None, ..., None]
        print(f"model: {model_path} ({model.name}, {size}x{size}); {os.cpu_count()} CPU cores; "
              f"load average before: {load_before[0]:.2f}")
        print(f"files: float32 ONNX {onnx_path.stat().st_size / 1024:.0f} KiB, int8 ONNX "
              f"{int8_path.stat().st_size / 1024:.0f} KiB")

        print(f"\nsingle image, 1 thread, {args.calls} calls{'':<14}p50 ms    p99 ms")
        rows = [
            ("Keras model.predict", lambda: model.predict(one, verbose=0)),
            ("Keras compiled tf.function", lambda: compiled.probabilities(one)),
            ("ONNX Runtime float32", lambda: fp32.probabilities(one)),
            ("ONNX Runtime int8", lambda: int8.probabilities(one)),
            ("end to end PNG -> top-5 (ONNX float32)", lambda: fp32.predict(png, top_k=5)),
            ("end to end PNG -> top-5 (ONNX int8)", lambda: int8.predict(png, top_k=5)),
            ("  of which decode + preprocessing", lambda: fp32.preprocess(png)),
        ]
        for name, call in rows:
            p50, p99 = _latency(call, args.calls)
            print(f"  {name:<46}{p50:>8.3f}  {p99:>8.3f}", flush=True)
        top = ", ".join(f"{label} {p:.3f}" for label, p in fp32.predict(png, top_k=5))
        print(f"  (end-to-end input: {png_name}; top-5: {top})")

        images = _batch_images(size, args.batch)
        batch = images[..., None]
        print(f"\nbatched, {args.batch} images per call, {args.batch_threads} threads"
              f"{'':<11}images/s")
        child = subprocess.run(
            [sys.executable, __file__, "--keras-throughput-child", "--model", str(model_path),
             "--batch", str(args.batch), "--batch-threads", str(args.batch_threads)],
            capture_output=True, text=True, check=False)
        try:
            keras_rates = json.loads(child.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            keras_rates = {}
            print(f"  (Keras throughput child failed: {child.stderr.strip()[-500:]})")
        for name, key in (("Keras model.predict", "predict"),
                          ("Keras compiled tf.function", "compiled")):
            if key in keras_rates:
                print(f"  {name:<56}{keras_rates[key]:>10.0f}", flush=True)
        for name, path in (("ONNX Runtime float32", onnx_path), ("ONNX Runtime int8", int8_path)):
            predictor = Predictor(path, intra_op_threads=args.batch_threads)
            rate = _throughput(lambda p=predictor: p.probabilities(batch), args.batch)
            print(f"  {name:<56}{rate:>10.0f}", flush=True)

        kind = "EMNIST" if EMNIST.is_dir() else "random"
        for name, path in (("float32", onnx_path), ("int8", int8_path)):
            result = agreement(model, path, images)
            print(f"\n{name} ONNX vs Keras on {result['images']} {kind} images: top-1 agreement "
                  f"{result['top1_agreement']:.4f}, max |p difference| "
                  f"{result['max_abs_diff']:.2e}", end="")
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
