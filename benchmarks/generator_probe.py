"""Generator probe: how well a fixed small model trained on generated letters reads real ones.

Draws a dataset with the handwriting generator (the ``raw.synthetic`` settings, overridable
here), puts it through the shared preprocessing and the augment stage's transforms, trains one
fixed LeNet-5 (Adam 1e-3, batch 64, seeded) for a fixed number of epochs on all of it, and
prints its accuracy on real handwriting: 52-class, case-insensitive and merged-37 (the EMNIST
Balanced convention: c i j k l m o p s u v w x y z count either case as right). It also prints
the stroke-weight case cue (median relative stroke width of capitals and small letters of the
look-alike letters) of the generated data and of every real dataset.

The real data is evaluation only: the model never sees it in training.

Run (about 2 to 5 minutes on 2 cores at 100 images per letter; the default is params.yaml's):

    python benchmarks/generator_probe.py                       # today's params.yaml settings
    python benchmarks/generator_probe.py --styles futural timesr timesi scripts scriptc \\
        --pen-scale 1.0 --hand-share 1.0                       # the Hershey-only generator
    python benchmarks/generator_probe.py --font-mode outline   # fonts as outlines, not strokes
    python benchmarks/generator_probe.py --json results.jsonl --label my-change

``--plot stroke_weight.png`` draws the stroke-weight relation of the generated data beside each
real dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from handwriting import labels
from handwriting.augmentation import AugmentSettings
from handwriting.evaluation.crossdata import read_class_folder
from handwriting.evaluation.metrics import classification_metrics
from handwriting.imaging import PreprocessSettings, preprocess_with, to_uint8
from handwriting.params import load_params
from handwriting.stages.raw import drawing_settings
from handwriting.synth import DrawSettings, measure

ROOT = Path(__file__).resolve().parents[1]


def _draw(job: tuple) -> np.ndarray:
    """Draw and preprocess one letter (in a worker process)."""
    from handwriting.synth import draw_letter, sample_rng

    char, number, seed, drawing, font_mode, settings = job
    rng = sample_rng(seed, char, number)
    if font_mode == "outline":
        image = _draw_with_outline_fonts(char, rng, drawing)
    else:
        image = draw_letter(char, rng, drawing)
    return to_uint8(preprocess_with(settings, image))


def _draw_with_outline_fonts(char: str, rng: np.random.Generator,
                             drawing: DrawSettings) -> np.ndarray:
    """The generator, except that a font family's glyph is rendered as its outline (the font's
    own stroke contrast), then slanted, rotated, stretched and thinned or thickened: the
    alternative to tracing its centre line."""
    import cv2
    from PIL import Image, ImageDraw

    from handwriting.synth import FONT_FAMILIES, draw_letter
    from handwriting.synth.allographs import FONT_FORM, choose_form, choose_style
    from handwriting.synth.fonts import _font

    state = rng.bit_generator.state
    form = choose_form(char, rng, drawing.hand_share)
    style = choose_style(char, rng, drawing.styles) if form == FONT_FORM else None
    if style not in FONT_FAMILIES:
        rng.bit_generator.state = state
        return draw_letter(char, rng, drawing)
    font = _font(style)
    left, top, right, bottom = font.getbbox(char)
    pad = 60
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(image).text((pad - left, pad - top), char, font=font, fill=255)
    ink = np.asarray(image).copy()
    h, w = ink.shape
    angle = rng.normal(0, 4)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, :2] = m[:, :2] @ np.array([[np.exp(rng.normal(0, 0.12)), -rng.normal(0.1, 0.15)], [0, 1]])
    ink = cv2.warpAffine(ink, m, (w, h))
    k = int(rng.integers(0, 4)) * 2 + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    changed = cv2.erode(ink, kernel) if rng.random() < 0.4 else cv2.dilate(ink, kernel)
    # Never erode a thin glyph away.
    if (changed > 127).sum() >= 0.3 * (ink > 127).sum():
        ink = changed
    return 255 - ink


def generate(per_class: int, seed: int, drawing: DrawSettings, font_mode: str,
             settings: PreprocessSettings) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [52 * per_class, S, S] through the shared preprocessing, class ids)."""
    from tqdm import tqdm

    jobs = [(char, n, seed, drawing, font_mode, settings) for char in labels.CLASSES
            for n in range(per_class)]
    with ProcessPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        images = list(tqdm(pool.map(_draw, jobs, chunksize=32), total=len(jobs),
                           desc="probe: drawing", unit="img"))
    ids = np.repeat(np.arange(labels.NUM_CLASSES), per_class)
    return np.stack(images), ids


def train_probe(images: np.ndarray, class_ids: np.ndarray, epochs: int, seed: int):
    """The fixed probe model: LeNet-5 (dropout 0.3), Adam 1e-3, batch 64."""
    import keras

    from handwriting.models import zoo
    from handwriting.models.fitting import compile_model, make_dataset

    keras.utils.set_random_seed(seed)
    size = images.shape[1]
    model = zoo.build("lenet5", (size, size, 1), labels.NUM_CLASSES, dropout=0.3)
    compile_model(model, "adam", 1e-3)
    model.fit(make_dataset(images, class_ids, 64, shuffle=True, seed=seed), epochs=epochs,
              verbose=2)
    return model


def plot_stroke_weights(datasets: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Capital vs small-letter relative stroke width per look-alike letter, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4), sharey=True,
                             squeeze=False)
    for ax, (name, weights) in zip(axes[0], datasets.items()):
        s = measure.summary(weights)
        for letter, w in weights.items():
            ax.plot([0, 1], [w["upper"], w["lower"]], color="0.7", lw=1)
            ax.annotate(letter, (1.03, w["lower"]), fontsize=7, va="center")
        ax.plot([0, 1], [s["upper"], s["lower"]], color="C3", lw=3, marker="o",
                label=f"median {s['upper']:.3f} -> {s['lower']:.3f} (x{s['ratio']:.2f})")
        ax.set_xticks([0, 1], ["capital", "small"])
        ax.set_xlim(-0.2, 1.25)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("stroke width / longer side of the letter")
    fig.suptitle("Stroke weight of look-alike letters (" + " ".join(measure.LOOKALIKE) + ")")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    params = load_params(ROOT / "params.yaml")
    synth = params.raw.synthetic
    drawing = drawing_settings(synth)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=synth.per_class)
    parser.add_argument("--copies", type=int, default=params.augment.copies,
                        help="augment-stage variants per generated image (default: params.yaml)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=params.base.seed)
    parser.add_argument("--styles", nargs="+", default=list(drawing.styles))
    parser.add_argument("--pen-scale", type=float, default=drawing.pen_scale)
    parser.add_argument("--hand-share", type=float, default=drawing.hand_share)
    parser.add_argument("--font-mode", choices=("strokes", "outline"), default="strokes",
                        help="draw font glyphs as traced strokes (the generator) or outlines")
    parser.add_argument("--real", nargs="+", type=Path,
                        default=[ROOT.parent / "shared" / "data" / "emnist-letters"],
                        help="real datasets (upper/A ... lower/z) to score on")
    parser.add_argument("--label", default="", help="name of this row in the output")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line here")
    parser.add_argument("--plot", type=Path, help="write the stroke-weight plot here")
    args = parser.parse_args(argv)

    preprocess_settings = params.preprocessing
    drawing = dataclasses.replace(drawing, styles=tuple(args.styles),
                                  pen_scale=args.pen_scale, hand_share=args.hand_share)
    started = time.perf_counter()
    images, ids = generate(args.per_class, args.seed, drawing, args.font_mode,
                           preprocess_settings)
    drawn = time.perf_counter() - started
    weights = {"generated": measure.case_stroke_weights(images, ids)}

    from handwriting.stages.augment import augment_arrays

    augment = AugmentSettings.from_params(params)
    train_images, variants = augment_arrays(images, args.copies, args.seed, augment)
    train_ids = np.repeat(ids, args.copies + 1)
    model = train_probe(train_images, train_ids, args.epochs, args.seed)

    row = {"label": args.label, "per_class": args.per_class, "copies": args.copies,
           "epochs": args.epochs, "styles": args.styles, "pen_scale": args.pen_scale,
           "hand_share": args.hand_share, "font_mode": args.font_mode,
           "draw_seconds": round(drawn, 1),
           "generated_stroke_weight": measure.summary(weights["generated"])}
    for real in args.real:
        if not real.is_dir():
            print(f"probe: {real} not found, skipped", file=sys.stderr)
            continue
        x, y, _ = read_class_folder(real, preprocess_settings)
        probabilities = model.predict(x[..., None].astype(np.float32) / 255.0, verbose=0)
        figures = classification_metrics(y, probabilities)
        weights[real.name] = measure.case_stroke_weights(x, y)
        row[real.name] = {"accuracy": figures["accuracy"],
                          "case_insensitive_accuracy": figures["case_insensitive_accuracy"],
                          "merged37_accuracy": figures["merged37_accuracy"],
                          "stroke_weight": measure.summary(weights[real.name])}
        print(f"probe {args.label}: {real.name}: 52-class {figures['accuracy']:.3f}, "
              f"case-insensitive {figures['case_insensitive_accuracy']:.3f}, "
              f"merged-37 {figures['merged37_accuracy']:.3f}")
    print(json.dumps(row))
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps(row) + "\n")
    if args.plot:
        plot_stroke_weights(weights, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
