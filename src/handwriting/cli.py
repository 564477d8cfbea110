"""The ``handwriting`` command line.

Pipeline stages run through ``dvc repro`` (see dvc.yaml); this command holds the tools a user
calls by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from handwriting import __version__, labels
from handwriting.models.reference import ModelRef
from handwriting.models.registry import FALLBACK_ORDER


def _classes(args: argparse.Namespace) -> int:
    for index, char in enumerate(labels.CLASSES):
        print(f"{index}\t{char}\t{labels.folder_of(char)}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    import cv2

    from handwriting.imaging import ImageError, preprocess, to_uint8
    from handwriting.params import load_params

    settings = load_params(args.params).preprocessing if args.params.is_file() else None
    size = args.size or (settings.image_size if settings else 32)
    margin = settings.margin if settings else 0.08
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.images:
        try:
            image = preprocess(path, size, margin=margin)
        except ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        target = args.out / f"{path.stem}.png"
        cv2.imwrite(str(target), to_uint8(image))
        print(f"{path} -> {target}")
    return 1 if failed else 0


_NO_MODEL_FIX = ("run `dvc repro` to train the models, or pass --model with a .onnx or .keras "
                 "file, a serving folder, or a name such as lenet5-tuned")


class _UsageError(Exception):
    """A problem with the command line or the setup: exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _resolve_model(spec: str | None, models_dir: Path) -> Path:
    """The model file or serving folder that --model names (or the default one)."""
    if spec is None:
        serving = models_dir / "serving"
        if serving.is_dir():
            return serving
        for arch in FALLBACK_ORDER:
            candidate = models_dir / arch / "tuned.keras"
            if candidate.is_file():
                return candidate
        raise _UsageError(f"no model found (no {serving}/ and no {models_dir}/<arch>/tuned.keras);"
                          f" {_NO_MODEL_FIX}")
    path = Path(spec)
    if path.exists():
        return path
    looks_like_a_name = "/" not in spec and os.sep not in spec and \
        path.suffix not in (".onnx", ".keras")
    if looks_like_a_name and "-" in spec:
        try:
            named = ModelRef.parse(spec).path(models_dir)
        except ValueError as error:
            raise _UsageError(f"--model {spec}: {error}; {_NO_MODEL_FIX}") from None
        if named.is_file():
            return named
        raise _UsageError(f"--model {spec}: {named} not found; {_NO_MODEL_FIX}")
    raise _UsageError(f"--model {spec}: no such file or folder; {_NO_MODEL_FIX}")


def _load_predictor(args: argparse.Namespace):
    from handwriting.params import ParamsError, load_params
    from handwriting.serving.predictor import Predictor

    path = _resolve_model(args.model, args.models_dir)
    # A .keras model loads TensorFlow: keep its start-up chatter (no GPU found ...) quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    threads = args.threads or max(1, os.cpu_count() or 1)
    try:
        if path.is_dir():
            predictor = Predictor.from_directory(path, intra_op_threads=threads)
            origin = f"{path}/serving.json"
        else:
            if args.params.is_file():
                settings, origin = load_params(args.params).preprocessing, str(args.params)
            else:
                settings, origin = None, "defaults"
            predictor = Predictor(path, settings, intra_op_threads=threads)
    except (FileNotFoundError, ValueError, ParamsError) as error:
        raise _UsageError(str(error)) from None
    print(f"model: {predictor.model_path} ({predictor.backend_name}, "
          f"{predictor.image_size}x{predictor.image_size}; preprocessing settings from "
          f"{origin})", file=sys.stderr)
    return predictor


def _gather_images(paths: list[Path]) -> list[Path]:
    """Files as given, directories walked recursively for supported image files, sorted."""
    from handwriting.imaging import SUPPORTED_SUFFIXES, is_image_file

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                print(f"warning: {path}: no image files found (looked for "
                      f"{', '.join(SUPPORTED_SUFFIXES)})", file=sys.stderr)
            files.extend(found)
        else:
            files.append(path)  # a missing file becomes a per-file error
    return files


def _folder_label(path: Path) -> str | None:
    try:
        return labels.char_of_folder(path.parent)
    except labels.LabelError:
        return None


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from handwriting.imaging import ImageError
    from handwriting.serving.predictor import UNSURE_MESSAGE

    try:
        predictor = _load_predictor(args)
        files = _gather_images(args.inputs)
        if not files:
            raise _UsageError("no image files to predict")
    except _UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    entries: list[dict] = []
    failed = correct = correct_folded = correct_merged = labelled = unsure_count = 0
    with tqdm(total=len(files), unit="image", file=sys.stderr, disable=None,
              desc="predicting") as bar:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start:start + args.batch_size]
            images, errors = {}, {}
            for index, path in enumerate(chunk):
                try:
                    images[index] = predictor.preprocess(path)
                except ImageError as error:
                    errors[index] = str(error)
            rows = iter(predictor.probabilities(np.stack(list(images.values())))
                        if images else [])
            for index, path in enumerate(chunk):
                if index in errors:
                    failed += 1
                    bar.write(f"error: {errors[index]}", file=sys.stderr)
                    entries.append({"file": str(path), "top": [], "error": errors[index]})
                    continue
                row = next(rows)
                top = predictor.top(row, args.top_k)
                expected = _folder_label(path)
                if expected is not None:
                    labelled += 1
                    best = top[0][0]
                    correct += best == expected
                    correct_folded += best.upper() == expected.upper()
                    correct_merged += (labels.merged37_index(labels.index_of(best))
                                       == labels.merged37_index(labels.index_of(expected)))
                unsure = predictor.is_unsure(top)
                unsure_count += unsure
                entries.append({"file": str(path),
                                "top": [{"label": label, "probability": round(p, 6)}
                                        for label, p in top],
                                "unsure": unsure, "error": None})
                if not args.json:
                    bar.write(str(path) + "".join(f"\t{label} {p:.4f}" for label, p in top)
                              + (f"\t({UNSURE_MESSAGE})" if unsure else ""), file=sys.stdout)
            bar.update(len(chunk))
    if args.json:
        print(json.dumps(entries, indent=2))
    if labelled:
        print(f"accuracy against the folder labels: {correct / labelled:.4f} "
              f"({correct}/{labelled}); case-insensitive: {correct_folded / labelled:.4f} "
              f"({correct_folded}/{labelled}); merged-37: {correct_merged / labelled:.4f} "
              f"({correct_merged}/{labelled})", file=sys.stderr)
    if unsure_count:
        print(f"{unsure_count} of {len(files)} answers are below the model's confidence "
              f"threshold ({predictor.unsure_threshold:.3f}): {UNSURE_MESSAGE}",
              file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {value}")
    return value


def app_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and the environment that start the app."""
    from handwriting.app import MAIN_SCRIPT
    from handwriting.app.config import AppConfig

    config = AppConfig(models_dir=args.models_dir, feedback_dir=args.feedback_dir,
                       metrics_dir=args.metrics_dir, plots_dir=args.plots_dir,
                       params=args.params)
    command = [sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT),
               "--server.headless", "true", "--server.port", str(args.port),
               "--server.address", args.address, "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal"]
    # TensorFlow's start-up chatter (no GPU found ...) would bury Streamlit's URL line.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
           **config.to_env()}
    return command, env


def _app(args: argparse.Namespace) -> int:
    command, env = app_command(args)
    print(f"starting the app on http://{args.address}:{args.port} (models: {args.models_dir}, "
          f"corrections saved to: {args.feedback_dir}); Ctrl+C stops it", file=sys.stderr,
          flush=True)
    # Become the Streamlit server rather than wait for it: Ctrl+C and `kill` then reach the
    # server itself, and no orphaned server is left behind.
    os.execve(command[0], command, env)


def _promote(args: argparse.Namespace) -> int:
    from handwriting import tracking
    from handwriting.params import ParamsError, load_params
    from handwriting.serving.pyfunc import ALIAS, PromotionError, promote

    name = args.name
    if name is None:
        try:
            name = load_params(args.params).export.registered_model
        except (OSError, ParamsError) as error:
            print(f"handwriting promote: {error}; name the model with --name", file=sys.stderr)
            return 2
    tracking.configure()
    try:
        version, previous = promote(name, args.model_version)
    except PromotionError as error:
        print(f"handwriting promote: {error} (store: {tracking.tracking_uri()})",
              file=sys.stderr)
        return 1
    print(f"{name}: alias '{ALIAS}' now points to version {version} "
          f"(previous: {previous or 'none'}); `mlflow models serve -m models:/{name}@{ALIAS}` "
          "serves it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="handwriting",
        description="Recognise single handwritten letters (A-Z, a-z). Build the data and "
                    "models with `dvc repro`; use the subcommands below by hand.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    classes = commands.add_parser("classes", help="list the 52 classes: index, letter, folder")
    classes.set_defaults(func=_classes)

    preprocess = commands.add_parser(
        "preprocess", help="show what a model sees: run the shared preprocessing on images",
        description="Write each image as the model sees it (cropped, centred, resized, ink "
                    "white on black) to --out as PNG. Settings come from params.yaml when "
                    "present.")
    preprocess.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                            help="PNG, JPEG, BMP, TIFF or WebP files")
    preprocess.add_argument("--out", type=Path, default=Path("preprocessed"),
                            help="folder for the results (default: ./preprocessed)")
    preprocess.add_argument("--size", type=int, default=None,
                            help="side in pixels (default: base.image_size, else 32)")
    preprocess.add_argument("--params", type=Path, default=Path("params.yaml"),
                            help="params file to read settings from (default: params.yaml)")
    preprocess.set_defaults(func=_preprocess)

    predict = commands.add_parser(
        "predict", help="recognise the letter in images or folders of images",
        description="Print the top-k letters of each image: one line per image "
                    "(path<TAB>letter probability<TAB>...), or a JSON array with --json. "
                    "Folders are searched recursively; in an upper/A ... lower/z layout the "
                    "accuracy against the folder labels is printed at the end (on stderr). "
                    "Below the serving folder's confidence threshold (chosen on the validation "
                    "split) a line ends with '(not sure this is a single letter)' and the JSON "
                    "entry has \"unsure\": true. "
                    "Exit status: 0 all images predicted, 1 some could not be read, 2 usage "
                    "error (such as no model).")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_DIR",
                         help="image files (PNG, JPEG, BMP, TIFF, WebP) or folders of them")
    predict.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                         help="a .onnx or .keras file, a serving folder, or <arch>-<variant> "
                              "such as lenet5-tuned (models/<arch>/<variant>.keras); default: "
                              "models/serving/ if present, else a models/<arch>/tuned.keras "
                              f"in a fixed order ({', '.join(FALLBACK_ORDER)})")
    predict.add_argument("--top-k", type=_positive_int, default=5,
                         help="letters to show per image (default 5)")
    predict.add_argument("--json", action="store_true", help="print a JSON array instead")
    predict.add_argument("--batch-size", type=_positive_int, default=256,
                         help="images per model call (default 256)")
    predict.add_argument("--threads", type=_positive_int, default=None,
                         help="ONNX Runtime threads (default: all cores)")
    predict.add_argument("--models-dir", type=Path, default=Path("models"),
                         help="where model names and the default model are looked up "
                              "(default: ./models)")
    predict.add_argument("--params", type=Path, default=Path("params.yaml"),
                         help="params file with the preprocessing settings for a bare model "
                              "file (default: params.yaml; the defaults when absent)")
    predict.set_defaults(func=_predict)

    app = commands.add_parser(
        "app", help="start the web app: draw or upload letters, compare models, fix mistakes",
        description="Start the web app (Streamlit) and open it in a browser at the printed "
                    "address. Pages: Home (the models found, the champion, saved "
                    "corrections), Classify (upload PNG/JPEG images or draw a letter; each "
                    "chosen model's letter, confidence, top 5, the preprocessed input, feature "
                    "maps and Grad-CAM; a CSV of the results; save a correction when a model "
                    "is wrong), Models (the evaluation: figures, training curves, confusion "
                    "matrices) and About. Corrections go to --feedback-dir, which the next "
                    "`dvc repro` adds to the training data. The app never trains: build the "
                    "models first with `dvc repro`. Ctrl+C stops it.")
    app.add_argument("--port", type=_port, default=8501, help="TCP port (default 8501)")
    app.add_argument("--address", default="localhost",
                     help="address to listen on (default: localhost, this machine only; "
                          "0.0.0.0 for every network interface)")
    app.add_argument("--models-dir", type=Path, default=Path("models"),
                     help="trained models: <arch>/{untuned,tuned}.keras and serving/ "
                          "(default: ./models)")
    app.add_argument("--feedback-dir", type=Path, default=Path("data/feedback"),
                     help="where corrections are saved, upper/A ... lower/z "
                          "(default: ./data/feedback)")
    app.add_argument("--metrics-dir", type=Path, default=Path("metrics"),
                     help="evaluation results: evaluate.json, comparison.md, train/ "
                          "(default: ./metrics)")
    app.add_argument("--plots-dir", type=Path, default=Path("plots"),
                     help="training curves and evaluation plots (default: ./plots)")
    app.add_argument("--params", type=Path, default=Path("params.yaml"),
                     help="params file with the preprocessing settings (default: params.yaml; "
                          "the defaults when absent)")
    app.set_defaults(func=_app)

    promote = commands.add_parser(
        "promote", help="serve an experiment's model: move the registry's champion alias",
        description="Point the MLflow registry's 'champion' alias (what `mlflow models serve "
                    "-m models:/<name>@champion` serves) at the version a `dvc exp run` "
                    "registered as 'challenger', or at --version. `dvc repro` moves the "
                    "alias itself when its model is at least as good; experiments never do. "
                    "The store is MLFLOW_TRACKING_URI, else this repository's mlflow.db. "
                    "Exit status: 0 moved, 1 no such version or challenger, 2 usage error.")
    promote.add_argument("--version", dest="model_version", default=None, metavar="N",
                         help="the registered version to serve (default: the challenger)")
    promote.add_argument("--name", default=None,
                         help="registered model (default: export.registered_model)")
    promote.add_argument("--params", type=Path, default=Path("params.yaml"),
                         help="params file naming the model (default: params.yaml)")
    promote.set_defaults(func=_promote)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``handwriting`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
