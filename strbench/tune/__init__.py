"""`strbench tune`: Optuna studies over the theta/delta schedules (and any other key by path).

A tune YAML names a base experiment, a search space of dotted key paths, an objective measured on the
*validation* split, and the study settings (sampler, pruner, storage, heartbeats). Each trial turns
its sampled parameters into an overlay (``{"schedule.texture.kind": "power", ...}``), applies it to
the base experiment (as a mapping: no file is written) and calls
``experiment.evaluate(config, split="val", report=..., stages=study.report_at)``: its models are trained
in stages, and at each stage the whole validation objective is measured and reported at the number of
training steps done (the pruner's intermediate values, a learning curve); the final value comes at the
full step count. Models are trained through the experiment cache, so trials that need the same model
share it. The study's metric names are its objectives; the pre-flight runs once per study.

Scale-out: the study lives in an Optuna storage (a journal file by default, SQLite, or PostgreSQL for
many machines). The first process creates it; ``--worker`` processes join it with ``load_study``.
Every storage runs with heartbeats: a trial whose worker died (no heartbeat for ``grace_period``
seconds) is marked FAIL by the next worker that starts a trial, and a copy with the same parameters
is enqueued (``RetryHeartbeatStaleTrialCallback``, at most ``max_retry`` times). Optuna 5.0's
JournalStorage has no heartbeat of its own; :class:`HeartbeatJournalStorage` adds one (heartbeats are
trial system attributes in the journal).

Budget: without ``--n-trials`` a process runs trials until the study holds ``study.n_trials`` finished
ones (complete, pruned, or failed while evaluating, e.g. a diverged training), waiting for trials that
other workers are running; two workers checking at the same instant can overshoot by one trial.
``--n-trials K`` runs exactly K trials in this process (e.g. to extend a finished study).

Conditional keys: ``when: {schedule.texture.kind: power}`` samples a key only when earlier keys have
those values (Optuna's define-by-run space); otherwise the key is left out of the overlay.

MLflow: one parent run per study (tag ``strbench.role=study``), one nested run per finished trial
(tag ``strbench.role=trial``; metrics ``val_<metric>``; a pruned trial FINISHED with tag
``strbench.trial_state=PRUNED``), written through :mod:`strbench.tracking` (``StudyRuns``). A trial
whose worker was killed gets no run; its retry does.

Modules: ``spec`` (the tune YAML and overlays), ``storage`` (Optuna storages with heartbeats: the only
place touching Optuna internals), ``study`` (samplers, pruners, the objective, workers, MLflow, export).
"""
from strbench.tune.spec import (OBJECTIVES, CategoricalDist, FloatDist, IntDist, MlflowSpec, StudySpec, TuneSpec,
                                load_spec, parse_spec, probe_overlays, read_overlay, sample_overlay, write_overlay)
from strbench.tune.storage import (DEFAULT_STORAGE, HEARTBEAT_ATTR, RDB_SCHEMES, open_storage, redact,
                                   resolve_storage_url, storage_kind)
from strbench.tune.study import (ERROR_ATTR, METRICS_ATTR, OVERLAY_ATTR, PARENT_RUN_ATTR, PRUNER_FACTORIES,
                                 SAMPLER_FACTORIES, SPEC_ATTR, Evaluator, StudySummary, best_trial, export_best,
                                 check_spec, make_objective, open_study, preflight_inputs, process_seed, run_study,
                                 runner_evaluator, summarize)
