"""The ``handwriting`` command line.

Pipeline stages run through ``dvc repro`` (see dvc.yaml); this command holds the tools a user
calls by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handwriting import __version__, labels


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
