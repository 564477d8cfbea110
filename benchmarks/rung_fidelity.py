"""Do the tuning's cheap rungs predict the full budget? Every configuration at every rung.

The search (``tune@<arch>``) trains only the promoted configurations at the higher rungs, so its
own rank correlations rest on two or three configurations. This benchmark draws the lowest
rung's configurations as the search does (the untuned settings, then ``--configs - 1`` from
``tune.<arch>`` with the random sampler, seeded), trains EVERY one of them at EVERY rung of the
schedule in params.yaml (the top rung included: all the data, the untuned epochs, early
stopping), and prints each configuration's score per rung and Spearman's rank correlation of
each lower rung with the top rung and with the next one, and whether the lower rungs would have
promoted the configuration that is best at the full budget (with ``tune.tie_se`` and without):

    python benchmarks/rung_fidelity.py --arch lenet5 --configs 8

Run ``dvc repro split`` first. It costs about ``--configs`` full trainings (a LeNet-5 one is
about a minute on 2 cores). Scores are deterministic; wall seconds are printed for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--configs", type=int, default=8,
                        help="configurations, the untuned settings among them")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--split", type=Path, default=ROOT / "data" / "split")
    parser.add_argument("--json", type=Path, help="write the scores and correlations here")
    args = parser.parse_args(argv)
    if not (args.split / "train").is_dir():
        raise SystemExit(f"{args.split} is missing; run `dvc repro split` first")

    from handwriting.models.engine import use_engine
    from handwriting.models.training import arch_settings
    from handwriting.params import load_params

    params = load_params(args.params)
    use_engine(arch_settings(params.train, args.arch)[0].engine)  # before Keras is imported
    from scipy.stats import spearmanr

    from handwriting.models import search

    settings, space = search.tune_settings(params.tune, args.arch)
    random = dataclasses.replace(settings, sampler="random", n_trials=args.configs)
    untuned = search.untuned_configuration(params.train, args.arch, space)
    configs = search.first_configurations(random, space, untuned, params.base.seed)
    schedule = search.arch_schedule(settings, params, args.arch)
    context = search.TrialContext.load(args.arch, params, args.split)
    scores: dict[int, list[float]] = {cid: [] for cid in range(len(configs))}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
        context.scratch = Path(scratch)
        for rung in schedule:
            started = time.perf_counter()
            for cid, config in enumerate(configs):
                assert config is not None  # the random sampler draws every one up front
                scores[cid].append(search.train_at_rung(context, rung, config, cid))
            print(f"rung {rung.index} ({rung.share:.1%} of the data, {rung.epochs} epochs): "
                  f"{len(configs)} configurations in {time.perf_counter() - started:.0f} s",
                  flush=True)
    top = len(schedule) - 1
    print(f"\n{args.arch}: validation accuracy of each configuration at each rung")
    print("| configuration | " + " | ".join(f"rung {r.index}" for r in schedule) + " |")
    print("|---|" + "---|" * len(schedule))
    for cid, row in scores.items():
        name = "untuned" if cid == search.UNTUNED else f"config-{cid}"
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    correlations = {}
    for rung in schedule[:-1]:
        low = [scores[c][rung.index] for c in scores]
        for other in sorted({rung.index + 1, top}):
            high = [scores[c][other] for c in scores]
            correlations[f"{rung.index}-{other}"] = round(float(spearmanr(low, high).statistic), 3)
    best = max(scores, key=lambda c: (scores[c][top], -c))
    print("\nSpearman rank correlation (rung-rung):", correlations)
    reaches = {}
    for tie_se in sorted({0.0, settings.tie_se}):
        kept = set(scores)
        for rung in schedule[:-1]:  # the search's promotions, had every configuration been scored
            kept = set(search.promoted({c: scores[c][rung.index] for c in kept},
                                       settings.reduction, tie_se=tie_se,
                                       n_images=len(context.val[1])))
        reaches[str(tie_se)] = best in kept
        print(f"best at the full budget: configuration {best}; with tune.tie_se {tie_se:g} the "
              f"rungs would promote it to the top: {best in kept} (they would keep "
              f"{sorted(kept)})")
    if args.json:
        args.json.write_text(json.dumps({"arch": args.arch, "configs": configs,
                                         "scores": scores, "spearman": correlations,
                                         "best": best, "reaches_top": reaches}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
