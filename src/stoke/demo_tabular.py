"""``stoke demo --tabular``: clean a real table with each missing-value policy, train, compare side by side.

It writes scikit-learn's bundled breast-cancer table (569 real tumours, 30 numeric features, a text
label) as CSV, with values removed at known rates: every third feature loses ``rate`` of its values,
chosen by a seeded generator. For each policy (``drop``, ``mean``, ``median``, ``knn``) it packs the CSV
through :class:`~stoke.sources.TableSource`, splits it 80/20 stratified by label, fits
:class:`~stoke.ops.Standardize` on the training split only, trains a small MLP through the Loader, and
reports the validation accuracy with the rows each policy kept. ``drop`` loses every row with a gap, so it
trains (and is validated) on far fewer rows (the demo allows that with ``max_quarantined=1.0``, which a
pack would otherwise refuse); the fill policies keep all 569 and share the same split.

Not for: benchmarking speed (``stoke bench``) or a tuned model: one small MLP, a fixed budget.

Example (a few seconds on two cores; ``tests/test_demo_tabular.py`` runs a short one)::

    report = run_tabular_demo(epochs=30)
    [(row["policy"], row["val_accuracy"]) for row in report["policies"]]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the name every PyTorch tutorial uses

from stoke.extras import require
from stoke.home import default_home
from stoke.loader import Loader
from stoke.ops.scale import Standardize
from stoke.pack import pack
from stoke.pack.quarantine import DEFAULT_MAX_QUARANTINED
from stoke.prepare.split import make_splits
from stoke.read import open as open_dataset
from stoke.sources.table import TableSource

POLICIES = ("drop", "mean", "median", "knn")


def write_table(path: Path, rate: float, seed: int) -> dict[str, float]:
    """Write the breast-cancer table as CSV with ``rate`` of every third feature missing; returns the rates."""
    require("sklearn.datasets", extra="demo", what="stoke demo --tabular (its table is scikit-learn's)")
    require("pyarrow", extra="demo", what="stoke demo --tabular (it packs a CSV table)")
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [name.replace(" ", "_") for name in data.feature_names]
    values = data.data.astype(np.float64).copy()
    rng = np.random.default_rng(seed)
    rates = {}
    for column in range(0, values.shape[1], 3):
        values[rng.random(values.shape[0]) < rate, column] = np.nan
        rates[names[column]] = rate
    labels = np.asarray(data.target_names)[data.target]
    lines = [",".join([*names, "label"])]
    for row, label in zip(values, labels):
        lines.append(",".join(["" if np.isnan(v) else repr(float(v)) for v in row] + [str(label)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return rates


def train_and_evaluate(path: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Fit Standardize on the training split, train an MLP through the Loader, return validation accuracy."""
    train, val = open_dataset(path, split="train"), open_dataset(path, split="val")
    features = [name for name in train.fields if name != "label"]
    transforms = {name: [Standardize.fit(train, name)] for name in features}
    fields = [*features, "label"]
    train_loader = Loader(train, 32, shuffle=True, seed=seed, transforms=transforms, fields=fields, num_threads=1)
    val_loader = Loader(val, 256, shuffle=False, transforms=transforms, fields=fields, num_threads=1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(len(features), 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        for batch in train_loader:
            inputs = torch.stack([batch[name] for name in features], dim=1)
            loss = F.cross_entropy(model(inputs), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in val_loader:
            inputs = torch.stack([batch[name] for name in features], dim=1)
            correct += int((model(inputs).argmax(dim=1) == batch["label"]).sum())
            total += len(batch["label"])
    train_loader.close()
    val_loader.close()
    return {"train_rows": len(train), "val_rows": len(val), "val_accuracy": correct / max(total, 1)}


def run_tabular_demo(
    out: Path | None = None,
    epochs: int = 30,
    seed: int = 0,
    rate: float = 0.1,
    policies: Sequence[str] = POLICIES,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Clean, pack, split, standardise, train and evaluate once per policy; the report ``--json`` prints."""
    started = time.perf_counter()
    home = Path(out) if out is not None else default_home() / "demo-tabular"
    table = home / "breast_cancer.csv"
    rates = write_table(table, rate, seed)
    log(f"wrote {table}: 569 rows, {len(rates)} of 30 features missing {rate:.0%} of their values (seed {seed})")
    rows = []
    for policy in policies:
        began = time.perf_counter()
        dataset_path = home / f"breast_cancer-{policy}"
        source = TableSource(table, missing=policy)
        allowed = 1.0 if policy == "drop" else DEFAULT_MAX_QUARANTINED  # drop loses most rows: what is compared
        result = pack(source, dataset_path, overwrite=True, progress=False, workers=1, max_quarantined=allowed)
        make_splits(open_dataset(dataset_path), {"train": 0.8, "val": 0.2}, seed=seed, stratify="label")
        scores = train_and_evaluate(dataset_path, epochs, seed)
        rows.append(
            {
                "policy": policy,
                "rows_packed": result.num_samples,
                "rows_dropped": source.num_dropped,
                **scores,
                "seconds": time.perf_counter() - began,
            }
        )
        log(
            f"{policy:<7} packed {result.num_samples:>3} rows (dropped {source.num_dropped:>3}), "
            f"train {scores['train_rows']:>3} / val {scores['val_rows']:>3}: "
            f"validation accuracy {scores['val_accuracy']:.2%}"
        )
    log("policy   rows kept   val rows   val accuracy")
    for row in rows:
        log(f"{row['policy']:<8} {row['rows_packed']:>9}   {row['val_rows']:>8}   {row['val_accuracy']:>12.2%}")
    return {
        "table": str(table),
        "missing_rates": rates,
        "epochs": epochs,
        "seed": seed,
        "policies": rows,
        "seconds": time.perf_counter() - started,
    }
