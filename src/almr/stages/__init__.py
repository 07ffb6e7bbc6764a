"""Stages: a whole config in, a run folder out. A stage connects components (data, train,
evaluate) and computes nothing itself: base_model (the demo world's base model), cpt (the
CPT stage: plan, loader, probe, trainer). See docs/architecture.md."""
