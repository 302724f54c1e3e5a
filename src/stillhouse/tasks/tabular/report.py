"""The report (HTML) and model card (Markdown) of a tabular run, from its ``metrics.json`` and ``plots.json``:
the gate, the models (with logistic regression), the mitigation frontier, fairness by group, calibration and the
synthetic profiles. :mod:`stillhouse.tasks.tabular.evaluate` measures; this module only writes."""

from __future__ import annotations

import html
import json

from stillhouse.evaluate.model_card import TAG_LINE, teacher_note
from stillhouse.evaluate.report import reliability_plot, teacher_warning, training_loss_plot
from stillhouse.spec import Spec
from stillhouse.tasks.tabular.frontier import FRONTIER_HEADER, describe_choice, frontier_html, frontier_rows

MODELS = ("teacher", "student", "baseline", "classical")
TITLES = {"teacher": "teacher", "student": "distilled student", "baseline": "hard-label student",
          "classical": "logistic regression"}


_NAMES = {"auc": "AUC", "accuracy": "accuracy"}
FAIRNESS_FIGURES = ("demographic_parity_ratio", "equalized_odds_difference")


def number(value) -> str:
    return "not measured" if value is None else f"{value:.4f}"


_COLUMNS = (("auc", "AUC"), ("ks", "KS"), ("brier", "Brier"), ("log_loss", "log loss"), ("ece", "ECE"),
            ("accuracy", "accuracy"), ("cost_weighted_error", "cost / row"),
            ("demographic_parity_ratio", "DP ratio (worst)"), ("equalized_odds_difference", "EO diff (worst)"),
            ("parameters", "parameters"), ("latency_ms_p50", "ms / row (p50)"))


def _table(models: dict, markdown: bool) -> str:
    columns = [(k, t) for k, t in _COLUMNS if any(models[n].get(k) is not None for n in MODELS)]

    def cell(value) -> str:
        return "—" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4f}"

    rows = [[TITLES[n], *(cell(models[n].get(k)) for k, _ in columns)] for n in MODELS]
    if markdown:
        return "\n".join(["| model | " + " | ".join(t for _, t in columns) + " |",
                          "|---" * (len(columns) + 1) + "|", *("| " + " | ".join(r) + " |" for r in rows)])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["model", *(t for _, t in columns)])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fairness_rows(models: dict) -> list[list[str]]:
    rows = []
    for feature in models["student"].get("fairness", {}):
        for name in MODELS:
            f = models[name]["fairness"][feature]
            groups = "; ".join(f"{g}: n={v['rows']}, favourable {number(v['favourable_rate'])}, TPR "
                               f"{number(v['tpr'])}, FPR {number(v['fpr'])}" for g, v in f["groups"].items())
            rows.append([feature, TITLES[name],
                         number(f["demographic_parity_ratio"]) + _interval(f.get("demographic_parity_ratio_ci95")),
                         number(f["equalized_odds_difference"]) + _interval(f.get("equalized_odds_difference_ci95")),
                         groups])
    return rows


def _favourable_note(metrics: dict) -> str:
    decision = {"not_flagged": "not being flagged", "flagged": "being flagged"}.get(metrics.get("favourable"))
    if decision is None:
        return ""
    return (f"The demographic-parity ratio compares the rate of the favourable decision ({decision} as "
            f"`{metrics['positive_label']}`) between the groups: the smallest over the largest; the four-fifths "
            "rule asks at least 0.8. An interval that contains the gate's threshold means too few rows to tell.")


def _interval(bounds: list[float] | None) -> str:
    return f" [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else ""


def _gate_rows(gate: dict, worst: dict) -> list[list[str]]:
    """One row per check; a fairness figure names the sensitive feature it is the worst of and its interval, and
    says when the interval straddles the limit (too few rows to tell)."""
    return [[c["limit"], f"{c['threshold']:g}",
             number(c["value"]) + (f" ({worst[c['figure']]})" if c["figure"] in worst else "")
             + _interval(c.get("ci95")),
             ("passed" if c["passed"] else "FAILED")
             + ("" if c.get("conclusive", True) else " (inconclusive: the 95 % interval contains the threshold)")]
            for c in gate["checks"]]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
                      *("| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows)])


def _scenario_rows(synthesis: dict) -> list[list[str]]:
    return [[name, str(s["generated"]), str(s["kept"]),
             ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none",
             number(s.get("mean_positive_probability"))]
            for name, s in synthesis.get("scenarios", {}).items()]


_SCENARIO_HEADER = ["scenario", "generated", "kept", "dropped", "mean teacher P(positive)"]
_FAIRNESS_HEADER = ["sensitive feature", "model", "DP ratio of the favourable decision [95 % CI]",
                    "EO difference [95 % CI]", "groups (favourable rate, TPR and FPR of the flag)"]
_GATE_HEADER = ["limit", "threshold", "student's value [95 % CI]", "verdict"]


def render_tabular_report(metrics: dict, plots: dict) -> str:
    c, gate, synthesis = metrics["comparison"], metrics["gate"], metrics["synthesis"]
    verdict = gate["verdict"]
    colour = "#1b7a1b" if verdict == "passed" else "#b00020"
    synthesis_html = (f"<p>{synthesis['kept']} of {synthesis['generated']} synthetic profiles kept (privacy "
                      f"threshold {synthesis['privacy_threshold']:.3f}).</p>"
                      + _html_table(_SCENARIO_HEADER, _scenario_rows(synthesis))
                      if synthesis.get("enabled") else "<p>Synthetic profiles: off for this run.</p>")
    history = plots.get("training_history") or {}
    loss_plot = f'<p><img alt="training loss" src="{training_loss_plot(history)}"></p>' if history else ""
    title = html.escape(metrics["run"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Stillhouse run {title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:4px 8px}}
img{{max-width:100%}}code{{background:#f4f4f4;padding:1px 4px}}.note{{color:#555;font-size:13px}}
.warn{{background:#fff4e5;border-left:4px solid #e67e00;padding:8px 12px}}
.verdict{{font-weight:bold;color:{colour}}}</style></head><body>
<h1>Distillation report: {title}</h1>
<p class="note">{TAG_LINE}</p>
<p>The distilled student keeps {c['student_retention']:.1%} of the teacher's {_NAMES[c['headline']]}
({c['auc_loss']:+.4f} AUC lost), is {c['student_minus_baseline_auc'] * 100:+.1f} AUC points from the same student
trained on the labels alone and {c['student_minus_classical_auc'] * 100:+.1f} from logistic regression on the same
seed, and scores a row {c['speedup_batch1_p50']:.1f}× faster than the teacher.</p>
{teacher_warning(metrics)}
{'<p class="warn"><b>This model decides with the sensitive features</b> (a post-processing rule with thresholds per group): every request must carry them, and in many jurisdictions that is disparate treatment.</p>' if metrics.get('decides_with_sensitive_features') else ''}
<p>Teacher: {html.escape(metrics['teacher'])}. Held-out rows: {metrics['eval_rows']} · seed rows:
{metrics['data']['counts']['seed']} · unlabelled pool rows: {metrics['data']['counts']['pool']} · labels:
{html.escape(', '.join(metrics['labels']))}
{f"(positive: <code>{html.escape(str(metrics['positive_label']))}</code>)" if metrics['positive_label'] else ''} ·
spec hash <code>{metrics['spec_hash'][:16]}</code> · Stillhouse {html.escape(metrics['stillhouse_version'])}</p>
<h2>Promotion gate: <span class="verdict">{html.escape(verdict)}</span></h2>
{_html_table(_GATE_HEADER, _gate_rows(gate, metrics['models']['student'].get('fairness_worst', {})))}
<h2 id="models">Models</h2>{_table(metrics['models'], markdown=False)}
<p class="note">The hard-label student and logistic regression learn the seed's labels without mitigation. Latency
was measured once, interleaved, on the machine that ran the evaluation: compare the ratios, not the
milliseconds.</p>
{frontier_html(metrics.get('frontier'), {c['limit']: c['threshold'] for c in gate['checks']})}
<p>Decisions are taken at the cost threshold {metrics['models']['student'].get('threshold', 0.5):.3f}
(false negative costs {metrics['costs']['false_negative']:g}, false positive {metrics['costs']['false_positive']:g}).</p>
<h2>Fairness by group</h2><p>{html.escape(_favourable_note(metrics))}</p>
{_html_table(_FAIRNESS_HEADER, _fairness_rows(metrics['models']))}
<h2>Calibration</h2><p><img alt="reliability" src="{reliability_plot(plots['calibration'])}"></p>
<h2>Synthetic profiles</h2>{synthesis_html}
{loss_plot}
<h2 id="recipe">Recipe</h2><details open><summary>teacher, student, distillation and synthesis settings (from the spec)</summary>
<pre>{html.escape(json.dumps(metrics['recipe'], indent=2, sort_keys=True))}</pre></details>
</body></html>"""


def _disparate_treatment(metrics: dict) -> str:
    if not metrics.get("decides_with_sensitive_features"):
        return ""
    return ("\n- **This model decides with the sensitive features.** Its decisions come from a post-processing rule "
            "with thresholds per group of " + ", ".join(metrics["schema"]["sensitive"]) + ": every request must "
            "carry them, and in many jurisdictions deciding by them is disparate treatment. The spec accepted this "
            "(`task.decide_with_sensitive_features: true`).")


def _mitigation_card(metrics: dict) -> str:
    frontier = metrics.get("frontier")
    if not frontier or len(frontier["rows"]) < 2:
        return ""
    used = ("The packaged rule decides with the sensitive features (see Inputs)."
            if metrics.get("decides_with_sensitive_features") else
            "The packaged model uses the sensitive features at training only, never at decision time.")
    if frontier["choice"]["chosen"].startswith("reductions"):
        used += (" Its probabilities are the constrained teacher's scores for the decision: they move by group to "
                 "reach parity, so they are not calibrated probabilities of the label within each group.")
    return (f"## Fairness mitigation\n{describe_choice(frontier)} {used} Every setting, measured on the held-out "
            "rows (the choice was made on "
            "them too, so the packaged setting's figures are optimistic by that choice):\n\n"
            + _md_table(FRONTIER_HEADER, frontier_rows(frontier)) + "\n\n")


def render_tabular_card(spec: Spec, metrics: dict) -> str:
    gate, c, schema = metrics["gate"], metrics["comparison"], metrics["schema"]
    synthesis = metrics["synthesis"]
    synthetic = (f"Synthetic profiles: {synthesis['kept']} kept of {synthesis['generated']} drawn from a Gaussian "
                 "copula fitted to the seed, by scenario:\n\n" + _md_table(_SCENARIO_HEADER, _scenario_rows(synthesis))
                 if synthesis.get("enabled") else "No synthetic profiles.")
    counts = metrics["data"]["counts"]
    sources = f"{counts['seed']} labelled seed rows" + (f" and {counts['pool']} unlabelled pool rows"
                                                        if counts["pool"] else "")
    return f"""# Model card: {spec.model_name}

**Promotion gate: {gate['verdict']}**{'' if gate['verdict'] == 'passed' else ' — do not use this model for decisions until the failed checks below are resolved.'}

## Intended use
{spec.description or "Scoring rows of the columns below."}
Input: one row of the raw columns below; output: a probability per label, the label, and the columns that
moved the score most. Labels: {', '.join(metrics['labels'])}{f"; positive (flagged) label: `{metrics['positive_label']}`" if metrics['positive_label'] else ''}.

Not for: populations or products unlike the training data; automated decisions without human review where the
law requires it.

## Inputs
- numeric: {', '.join(schema['numeric']) or 'none'}
- categorical: {', '.join(schema['categorical']) or 'none'}
- sensitive features (fairness is measured over them; {'model inputs' if spec.task.sensitive_as_inputs else 'not model inputs'}): {', '.join(schema['sensitive']) or 'none: fairness was not checked'}{_disparate_treatment(metrics)}

## How it was made
Knowledge distillation with Stillhouse {metrics['stillhouse_version']}: a teacher ({metrics['teacher']}) gave
every training row a probability per label; the student (an MLP with hidden layers {spec.student.hidden or 'none'})
learned them (KL at T={spec.distillation.temperature}) plus the seed's labels (α={spec.distillation.alpha}),
from {sources}{' and the synthetic profiles' if synthesis.get('enabled') else ''}.

{synthetic}

- spec hash: `{metrics['spec_hash']}`
- teacher fingerprint: `{metrics['teacher_fingerprint']}`

{_mitigation_card(metrics)}
## Promotion gate
{_md_table(_GATE_HEADER, _gate_rows(gate, metrics['models']['student'].get('fairness_worst', {})))}

## Evaluation ({metrics['eval_rows']} held-out rows)
{_table(metrics['models'], markdown=True)}

Retention of the teacher's {_NAMES[c['headline']]}: {c['student_retention']:.3f}; AUC lost: {c['auc_loss']:+.4f}.
{teacher_note(metrics)}
Decision threshold {metrics['models']['student'].get('threshold', 0.5):.3f} from the cost matrix (false negative
{metrics['costs']['false_negative']:g}, false positive {metrics['costs']['false_positive']:g}).

## Fairness
{_favourable_note(metrics) + chr(10) * 2 + _md_table(_FAIRNESS_HEADER, _fairness_rows(metrics['models'])) if schema['sensitive'] else 'No sensitive features were declared: fairness was not measured.'}

## Limitations
- {metrics['eval_rows']} held-out rows: differences of a few AUC points are within noise.
- Fairness figures are for the groups above at the cost threshold; other thresholds and groups differ.
- The student inherits the teacher's errors and biases; contributions are first-order attributions, not causes.
"""
