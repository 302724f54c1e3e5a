"""Feature definitions of the credit example: one entity (`borrower`), two feature views with event
timestamps (the application as filed, the credit-bureau history as of each pull) and the feature service the
model reads. `python build_data.py SOURCE.csv` writes the tables these views read (data/, not committed)."""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

DATA = Path(__file__).resolve().parent / "data"

borrower = Entity(name="borrower", join_keys=["borrower_id"], value_type=ValueType.INT64, description="A credit applicant.")

application_source = FileSource(name="application", path=str(DATA / "application.parquet"),
                                timestamp_field="event_timestamp")
history_source = FileSource(name="credit_history", path=str(DATA / "credit_history.parquet"),
                            timestamp_field="event_timestamp")

application = FeatureView(
    name="application", entities=[borrower], ttl=timedelta(days=3650), source=application_source,
    schema=[Field(name="duration_in_month", dtype=Int64), Field(name="credit_amount", dtype=Float64),
            Field(name="purpose", dtype=String),
            Field(name="installment_rate_in_percentage_of_disposable_income", dtype=Int64),
            Field(name="present_employment_since", dtype=String), Field(name="job", dtype=String),
            Field(name="housing", dtype=String), Field(name="property", dtype=String),
            Field(name="present_residence_since", dtype=Int64),
            Field(name="number_of_people_being_liable_to_provide_maintenance_for", dtype=Int64),
            Field(name="telephone", dtype=String), Field(name="foreign_worker", dtype=String),
            Field(name="other_debtors_or_guarantors", dtype=String),
            Field(name="personal_status_and_sex", dtype=String), Field(name="age_in_years", dtype=Int64)],
    description="The application as filed (sensitive attributes included: the gate's fairness checks need them).")

credit_history = FeatureView(
    name="credit_history", entities=[borrower], ttl=timedelta(days=3650), source=history_source,
    schema=[Field(name="status_of_existing_checking_account", dtype=String),
            Field(name="credit_history", dtype=String), Field(name="savings_account_and_bonds", dtype=String),
            Field(name="number_of_existing_credits_at_this_bank", dtype=Int64),
            Field(name="other_installment_plans", dtype=String)],
    description="Accounts and repayment history, as of each bureau pull.")

credit_model = FeatureService(name="credit_model", features=[application, credit_history],
                              description="Every input of the credit-risk student (and its sensitive features).")
