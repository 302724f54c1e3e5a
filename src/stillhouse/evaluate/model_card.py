"""The model card that travels with a student: what it is for, what it learned from, how good it is."""

from __future__ import annotations

import html as markup

from stillhouse.evaluate.classical import worth_distilling_sentence
from stillhouse.spec import Spec


def _row(name: str, m: dict) -> str:
    agreement = f"{m['agreement_with_teacher']:.4f}" if "agreement_with_teacher" in m else "—"
    return (f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} | {agreement} | "
            f"{_millions(m['parameters'])} | {m['latency_ms_p50']:.2f} ms |")


def _millions(parameters: int | None) -> str:
    return f"{parameters / 1e6:.1f}M" if parameters is not None else "unknown"


TAG_LINE = "Model tag: (assigned when the student is packaged)"


def stamp_tag(text: str, tag: str, version: str, html: bool = False) -> str:
    """The card (or, with ``html``, the report) with its model tag filled in once packaging has assigned one."""
    if html:
        return text.replace(TAG_LINE, f"Model tag: <code>{markup.escape(tag)}</code> (Stillhouse code "
                                      f"{markup.escape(version)})")
    return text.replace(TAG_LINE, f"Model tag: `{tag}` (Stillhouse code {version})")


def _sampling(spec: Spec) -> str:
    if not spec.data.sampling:
        return ""
    fields = {"eval_size": "held out for evaluation", "seed_per_label": "seed rows per label",
              "pool_size": "pool rows at most"}
    parts = [f"{value} {fields.get(key, key)}" for key, value in
             spec.data.sampling.model_dump(exclude_none=True).items()]
    return f" (carved from the seed source: {', '.join(parts)})"


def _licences(spec: Spec) -> str:
    sources = [(role, getattr(spec.data, role, None)) for role in ("seed", "pool", "eval", "feedback")]
    lines = [f"- {role}: {source.licence}" for role, source in sources if source is not None and source.licence]
    return "\n".join(lines) or ("- not stated in the spec (`data.<source>.licence`): check the data's terms before "
                                 "deploying or sharing this model")


def render_model_card(spec: Spec, metrics: dict) -> str:
    """Markdown model card for the distilled student of one run."""
    models, c, data = metrics["models"], metrics["comparison"], metrics["data"]
    counts = ", ".join(f"{k} {v}" for k, v in data["counts"].items())
    sampling = _sampling(spec)
    fingerprints = "\n".join(f"- {name}: `{value}`" for name, value in data["fingerprints"].items())
    sources = "\n".join(f"- {name}: `{value}`" for name, value in data["sources"].items())
    student = spec.student
    student_desc = {"layer_subset": f"the teacher's first {student.kept_layers} layers",
                    "pretrained": f"`{student.model}`" + (f" (its first {student.layers} layers)"
                                                          if student.layers else ""), "config": "a small encoder built from a config"}[student.kind]
    return f"""# Model card: {spec.model_name}

{TAG_LINE}

## Intended use
{spec.description or "Text classification into the labels below."}
Labels ({len(metrics['labels'])}): {", ".join(metrics['labels'][:40])}{" …" if len(metrics['labels']) > 40 else ""}

Not for: inputs unlike the seed data (other languages, domains or label sets); decisions about people
without human review.

## How it was made
Knowledge distillation with Stillhouse {metrics['stillhouse_version']}: a teacher ({spec.teacher.describe()})
soft-labelled {_sources(spec, metrics)}; the student ({student_desc}, head initialised by `{student.head_init}`) learned
from them with α={spec.distillation.alpha}, T={spec.distillation.temperature} for {spec.distillation.epochs} epochs.

- spec hash: `{metrics['spec_hash']}`
- teacher fingerprint: `{metrics['teacher_fingerprint']}`
- rows: {counts}{sampling}

Data sources:
{sources}

Data fingerprints (SHA-256 over the rows used):
{fingerprints}

Data licences and terms:
{_licences(spec)}

## Evaluation ({metrics['eval_rows']} held-out rows)
| model | accuracy | macro-F1 | ECE (raw) | agreement w/ teacher | parameters | p50 latency (CPU, batch 1) |
|---|---|---|---|---|---|---|
{_row("teacher", models["teacher"])}
{_row("distilled student", models["student"])}
{_row("hard-label student", models["baseline"])}
{_row("TF-IDF + logistic regression (seed only)", models["classical"]) if "classical" in models else ""}

Retention of teacher accuracy: {c['student_retention']:.3f}; speed-up at batch 1: {c['speedup_batch1_p50']:.2f}×;
parameters: {_share(c['parameter_ratio'])} of the teacher's.{_runtime(metrics)}{_intervals(models, c)}{teacher_note(metrics)}

## Limitations
- Measured on one held-out set drawn like the seed data; quality on shifted data is unknown.
- The student inherits the teacher's errors and biases; its ceiling is the teacher's quality.
- Calibration: {_calibration(models["student"])} Re-check on your own data before using probabilities as
  risk scores.
- Latency was measured on the machine that ran the pipeline; serving hardware will differ.
"""


def _runtime(metrics: dict) -> str:
    """The serving runtime, where it is not torch: what the conversion cost and what it bought."""
    runtime = metrics["models"]["student"].get("runtime")
    if not runtime:
        return ""
    c = metrics["comparison"]
    return (f"\n\nServed on ONNX Runtime (`{runtime['deployed']}`): accuracy {runtime['accuracy']:.4f} "
            f"({runtime['accuracy_change'] * 100:+.2f} points against the torch student), speed-up at batch 1 "
            f"{c['deployed_speedup_batch1_p50']:.2f}× against the teacher as deployed.")


def teacher_note(metrics: dict) -> str:
    """The card's line on whether the teacher was worth distilling (any task's ``teacher_check``)."""
    check = metrics.get("teacher_check")
    if not check:
        return ""
    if check["warning"]:
        return f"\n\n**Warning:** {check['warning']}"
    return f"\n\n{worth_distilling_sentence(check)}"


def _calibration(student: dict) -> str:
    c = student.get("calibration")
    if not c:
        return "not fitted (ECE above is the model's own)."
    if not c["applied"]:
        return f"no temperature applied ({c['reason']}); ECE {c['ece_before']:.4f}."
    return (f"served probabilities are temperature-scaled (T = {c['temperature']:.3f}, fitted on the held-out rows); "
            f"ECE {c['ece_before']:.4f} → {c['ece_after']:.4f} and NLL {c['nll_before']:.4f} → {c['nll_after']:.4f} "
            f"({c['folds']}-fold cross-fitted).")


def _intervals(models: dict, c: dict) -> str:
    student = models["student"]
    if not student.get("accuracy_ci95"):
        return ""
    low, high = student["accuracy_ci95"]
    lines = [f"\n\nStudent accuracy 95 % interval (bootstrap): {low:.3f}–{high:.3f}."]
    for key, other in (("student_vs_teacher", "teacher"), ("student_vs_baseline", "hard-label student")):
        if c.get(key):
            p = c[key]
            lines.append(f"Student − {other}: {p['difference']:+.3f} (paired 95 % interval {p['low']:+.3f} to "
                         f"{p['high']:+.3f}): {p['verdict']}.")
    return " ".join(lines)


def _sources(spec: Spec, metrics: dict) -> str:
    """What the student learned from, in words (``distillation.sources`` and what synthesis kept)."""
    counts = metrics["data"]["counts"]
    synthesis = metrics.get("synthesis") or {}
    parts = {"seed": f"the seed set ({counts['seed']} rows, hard and soft labels)",
             "pool": f"an unlabelled pool ({counts['pool']} rows)",
             "synthetic": (f"{synthesis.get('filter', {}).get('kept', 0)} synthetic rows "
                           f"(generator `{synthesis.get('generator')}`, kept after teacher filtering and privacy "
                           f"checks)" if synthesis.get("enabled") else "")}
    used = [parts[s] for s in spec.distillation.sources if parts[s]]
    return ", ".join(used[:-1]) + (" and " if len(used) > 1 else "") + used[-1] if used else "no rows"


def _share(ratio: float | None) -> str:
    return f"{ratio:.1%}" if ratio is not None else "unknown (the teacher's size is not known here)"
