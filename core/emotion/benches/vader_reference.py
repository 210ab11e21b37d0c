#!/usr/bin/env python3
"""VADER's own valence correlation on its ground-truth sets, for `cargo bench --bench text`.

Usage: vader_reference.py FILE...   (VADER ground-truth files: id <TAB> mean rating <TAB> text)

For every file, scores each text with vaderSentiment's compound score and prints, as one JSON
object on stdout, the Pearson correlation with the human mean ratings:
    {"vader_version": "3.3.2", "sets": {"tweets_GroundTruth.txt": {"n": 4200, "pearson": 0.88}}}

Needs the `vaderSentiment` package (install it into a virtual environment outside the
repository, e.g. ~/.cache/nexus-bench/vader-venv).
"""

import json
import math
import sys
from importlib.metadata import PackageNotFoundError, version

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def rows(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            yield float(parts[1]), "\t".join(parts[2:])


def main():
    analyzer = SentimentIntensityAnalyzer()
    sets = {}
    for path in sys.argv[1:]:
        gold, pred = [], []
        for rating, text in rows(path):
            gold.append(rating)
            pred.append(analyzer.polarity_scores(text)["compound"])
        sets[path.rsplit("/", 1)[-1]] = {"n": len(gold), "pearson": pearson(pred, gold)}
    try:
        v = version("vaderSentiment")
    except PackageNotFoundError:
        v = "unknown"
    print(json.dumps({"vader_version": v, "sets": sets}))


if __name__ == "__main__":
    main()
