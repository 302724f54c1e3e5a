"""Running a Great Expectations 1.x suite on a DataFrame, and turning its result into something a person reads.

Every suite runs in an ephemeral GE context (nothing is written to a GE project folder): the result JSON and
GE's own Data Docs HTML go into the folder the caller names (a step's ``validation`` output, collected into
``<run>/validation/`` by the runner). A failed suite raises :class:`ValidationFailed`, whose message fits on
one screen: which expectation failed, on how many rows, with a few example values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stillhouse.errors import DataError
from stillhouse.validate.page import write_validation_page

_EXAMPLES = 3


class ValidationFailed(DataError):
    """A suite failed: the message lists the failed expectations; the results are on disk."""


@dataclass(frozen=True)
class Check:
    """One expectation with the sentence a person reads when it fails (``"labels have >= 3 examples each"``).

    ``show``: the column whose values the failure summary quotes for the failing rows (default: the checked
    column's own values; a derived count or distance says less than the row's label or text).
    """

    expectation: object
    meaning: str
    show: str | None = None


@dataclass
class SuiteResult:
    """What one suite run found; ``failures`` are one dict per failed expectation."""

    suite: str
    success: bool
    evaluated: int
    rows: int
    failures: list[dict] = field(default_factory=list)
    results_path: str = ""
    docs_path: str = ""
    page_path: str = ""  # Stillhouse's own self-contained page (reads offline; GE's Data Docs need CDNs)

    def summary(self) -> str:
        lines = [f"{self.suite} validation failed: {len(self.failures)} of {self.evaluated} expectations "
                 f"({self.rows} rows checked)"]
        for failure in self.failures:
            where = f"{failure['unexpected']} row(s)" if failure["unexpected"] is not None else "observed"
            detail = (f"{where}, e.g. {failure['examples']}" if failure["examples"]
                      else f"{where} {failure['observed']}")
            lines.append(f"  - {failure['meaning']} [{failure['type']}]: {detail}")
        if self.page_path:
            lines.append(f"  results (one page, offline): {self.page_path}")
        if self.docs_path:
            lines.append(f"  GE results and Data Docs: {Path(self.results_path).parent}")
        return "\n".join(lines)


def _quiet_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GE logs its whole context config at INFO and draws a metrics progress bar per run: noise in a pipeline log.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _short(value, limit: int = 60) -> str:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # a numpy scalar: 'Q1551', not np.str_('Q1551')
    elif isinstance(value, str):
        value = str(value)  # np.str_ is a str subclass whose repr names the type
    text = repr(value) if not isinstance(value, float) else f"{value:.4g}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _failure(check: Check, result, frame: pd.DataFrame) -> dict:
    payload = result.result or {}
    examples = payload.get("partial_unexpected_list") or []
    rows = payload.get("partial_unexpected_index_list") or []
    if check.show and rows:
        examples = list(dict.fromkeys(frame.loc[rows, check.show].tolist()))  # distinct, in row order
    return {
        "meaning": check.meaning,
        "type": result.expectation_config.type,
        "unexpected": payload.get("unexpected_count"),
        "examples": ", ".join(_short(v) for v in examples[:_EXAMPLES]),
        "observed": _short(payload.get("observed_value")),
    }


def run_suite(name: str, frame: pd.DataFrame, checks: list[Check], out_dir: str | Path | None = None) -> SuiteResult:
    """Validate ``frame`` against ``checks``; write ``<name>.json`` and Data Docs under ``out_dir`` if given."""
    import great_expectations as gx

    context = _quiet_context()
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = gx.ExpectationSuite(name=name)
    for check in checks:
        suite.add_expectation(check.expectation)
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    # Expectations come back in the suite's order; ``meaning`` is matched to each by its id.
    meanings = {e.id: check for e, check in zip(suite.expectations, checks)}
    outcome = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    described = [{**_failure(meanings[r.expectation_config.id], r, frame), "success": bool(r.success)}
                 for r in outcome.results]
    failures = [{k: v for k, v in d.items() if k != "success"} for d in described if not d["success"]]
    result = SuiteResult(suite=name, success=bool(outcome.success), evaluated=len(outcome.results),
                         rows=len(frame), failures=failures)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.results_path = str(out_dir / f"{name}.json")
        Path(result.results_path).write_text(json.dumps(outcome.to_json_dict(), indent=2), encoding="utf-8")
        result.page_path = write_validation_page(out_dir / f"{name}.html", name, result.success, len(frame), described)
        result.docs_path = _build_data_docs(context, definition, frame, out_dir / "data_docs")
    return result


def _build_data_docs(context, definition, frame: pd.DataFrame, docs_dir: Path) -> str:
    """GE's Data Docs site for this validation (a static HTML folder); returns its index.html."""
    import great_expectations as gx

    context.add_data_docs_site(site_name="stillhouse", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{definition.name}-docs", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=["stillhouse"])]))
    checkpoint.run(batch_parameters={"dataframe": frame})
    return str(docs_dir / "index.html")


def require(result: SuiteResult, fix: str) -> None:
    """Raise :class:`ValidationFailed` with the one-screen summary if the suite failed."""
    if not result.success:
        raise ValidationFailed(result.summary(), fix)
