"""The model card that travels with a student: what it is for, what it learned from, how good it is."""

from __future__ import annotations

from stillhouse.spec import Spec


def _row(name: str, m: dict) -> str:
    agreement = f"{m['agreement_with_teacher']:.4f}" if "agreement_with_teacher" in m else "—"
    return (f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} | {agreement} | "
            f"{m['parameters'] / 1e6:.1f}M | {m['latency_ms_p50']:.2f} ms |")


def render_model_card(spec: Spec, metrics: dict) -> str:
    """Markdown model card for the distilled student of one run."""
    models, c, data = metrics["models"], metrics["comparison"], metrics["data"]
    counts = ", ".join(f"{k} {v}" for k, v in data["counts"].items())
    sampling = (f" (carved from the seed source: {spec.data.sampling.model_dump(exclude_none=True)})"
                if spec.data.sampling else "")
    fingerprints = "\n".join(f"- {name}: `{value}`" for name, value in data["fingerprints"].items())
    sources = "\n".join(f"- {name}: `{value}`" for name, value in data["sources"].items())
    student = spec.student
    student_desc = {"layer_subset": f"the teacher's first {student.layers} layers",
                    "pretrained": f"`{student.model}`", "config": "a small encoder built from a config"}[student.kind]
    return f"""# Model card: {spec.model_name}

## Intended use
{spec.description or "Text classification into the labels below."}
Labels ({len(metrics['labels'])}): {", ".join(metrics['labels'][:40])}{" …" if len(metrics['labels']) > 40 else ""}

Not for: inputs unlike the seed data (other languages, domains or label sets); decisions about people
without human review.

## How it was made
Knowledge distillation with Stillhouse {metrics['stillhouse_version']}: a teacher (`{spec.teacher.model}`,
{spec.teacher.pooling} pooling, fine-tuned {spec.teacher.epochs} epochs on the seed set) soft-labelled the seed
set and an unlabelled pool; the student ({student_desc}, head initialised by `{student.head_init}`) learned
from them with α={spec.distillation.alpha}, T={spec.distillation.temperature} for {spec.distillation.epochs} epochs.

- spec hash: `{metrics['spec_hash']}`
- teacher fingerprint: `{metrics['teacher_fingerprint']}`
- rows: {counts}{sampling}

Data sources:
{sources}

Data fingerprints (SHA-256 over the rows used):
{fingerprints}

## Evaluation ({metrics['eval_rows']} held-out rows)
| model | accuracy | macro-F1 | ECE | agreement w/ teacher | parameters | p50 latency (CPU, batch 1) |
|---|---|---|---|---|---|---|
{_row("teacher", models["teacher"])}
{_row("distilled student", models["student"])}
{_row("hard-label student", models["baseline"])}

Retention of teacher accuracy: {c['student_retention']:.3f}; speed-up at batch 1: {c['speedup_batch1_p50']:.2f}×;
parameters: {c['parameter_ratio']:.1%} of the teacher's.

## Limitations
- Measured on one held-out set drawn like the seed data; quality on shifted data is unknown.
- The student inherits the teacher's errors and biases; its ceiling is the teacher's quality.
- Calibration (ECE above) is for this data; re-check before using probabilities as risk scores.
- Latency was measured on the machine that ran the pipeline; serving hardware will differ.
"""
