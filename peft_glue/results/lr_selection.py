"""Learning-rate selection on validation: per family of configurations that differ only in the learning rate,
the rate with the best mean (over seeds) of the monitored metric at the best epoch."""

from __future__ import annotations

import itertools
import math

import pandas as pd

from peft_glue.results.formatting import natural_order
from peft_glue.results.runs import identity_key
from peft_glue.results.stats import summarize

LR_FIELDS = ["lr"]  # what varies within a family of configurations


def configurations(done: pd.DataFrame, val_col: str, score_col: str) -> list[dict]:
    """One entry per configuration of completed runs: its identity and its values seed by seed."""
    found = []
    for key, group in done.groupby("_key", sort=False):
        first = group.iloc[0]
        found.append(
            {
                "key": key,
                "family": identity_key(first["_identity"], LR_FIELDS),
                # what is compared within: the starting point (init_from) is a treatment, like the method
                "context": identity_key(first["_identity"], ["method", "init_from", *LR_FIELDS]),
                "label": first["method_label"],
                "order": first["method_order"],
                "lr": first["lr"],
                "first": first,
                "val": dict(zip(group["seed"], group[val_col], strict=True)),
                "score": dict(zip(group["seed"], group[score_col], strict=True)),
            }
        )
    return found


def pick_learning_rates(configs: list[dict]) -> list[dict]:
    """Per family, the configuration whose learning rate has the best mean validation value; each picked
    entry also gets the family's grid and its validation curve (lr -> values over seeds)."""
    picked = []
    for _, members in itertools.groupby(
        sorted(configs, key=lambda c: c["family"]), key=lambda c: c["family"]
    ):
        members = sorted(members, key=lambda c: c["lr"])
        means = [summarize(m["val"].values()).mean for m in members]
        best = max(range(len(members)), key=lambda i: -math.inf if math.isnan(means[i]) else means[i])
        chosen = dict(members[best])
        chosen["grid"] = [m["lr"] for m in members]
        chosen["curve"] = [(m["lr"], list(m["val"].values())) for m in members]
        picked.append(chosen)
    return sorted(picked, key=lambda c: (c["context"], c["order"], natural_order(c["label"])))
