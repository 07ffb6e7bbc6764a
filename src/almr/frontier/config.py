"""Config section of the frontier analysis (`frontier`)."""

from typing import Literal

from pydantic import Field

from almr.section import Section


class FrontierConfig(Section):
    """`almr frontier SWEEP_DIR`: surrogate surfaces, frontiers, recommendation, baselines (docs/frontier.md)."""

    metric_keys: list[str] | None = Field(
        None,
        description="Scores whose mean is the metric to maximize; default: each record's averaged_metric.",
    )
    epsilon: float | None = Field(
        None, ge=0.0,
        description="Forgetting budget: the general_source validation loss may exceed the base model's by at most "
        "this much (nats) at the recommendation; None: unconstrained with a metric, cmr_tolerance × base loss "
        "without one (loss-only study). CMR uses it as its tolerance too.",
    )  # fmt: skip
    general_source: str | None = Field(
        None,
        description="The general-language validation source the budget and CMR watch; None: the first source of "
        "sweep.yaml not tagged mixture.additional_language (general domain first), else one named en.",
    )
    additional_source: str | None = Field(
        None,
        description="The additional language's validation source (D-CPT r = ALMR; the loss-only objective); None: "
        "the first source of sweep.yaml tagged mixture.additional_language, else one named like that tag (zh).",
    )
    loss_source: str = Field(
        "combined", description="Loss surface of the loss frontier: a source, or combined (mean over the sources)."
    )
    forms: list[Literal["linear", "quadratic", "log"]] = Field(
        default_factory=lambda: ["linear", "quadratic", "log"],
        description="Regression forms of log10 LR*(ALMR) tried (linear is always fitted: the paper's form).",
    )
    kernel: Literal["matern", "rbf"] = Field("matern", description="GP kernel shape (× constant, + white noise).")
    n_restarts_optimizer: int = Field(2, ge=0, description="Extra random starts of each GP hyperparameter fit.")
    grid_size: int = Field(41, ge=5, le=201, description="Points per axis of the grids over ALMR × log LR.")
    n_bootstrap: int = Field(200, ge=0, description="Bootstrap resamples of the runs for the frontier's bands.")
    n_posterior_samples: int = Field(2000, ge=10, description="Joint GP samples for P(recommendation is best).")
    prob_radius: float = Field(
        0.1, gt=0.0, le=1.0,
        description="P(best) counts samples whose argmax lies within this distance of the recommendation, in the "
        "unit square of (ALMR, log10 LR) over the studied ranges.",
    )  # fmt: skip
    min_runs: int = Field(
        6, ge=4,
        description="Fewest completed runs to fit: 6 = a full quadratic in two variables, more than the GP's 4 "
        "hyperparameters.",
    )  # fmt: skip
    random_state: int = Field(0, description="Seeds GP restarts, bootstrap resamples, posterior samples, D-CPT starts.")
    dcpt_eps: float = Field(0.01, gt=0.0, description="D-CPT law: the fixed ε in C/(r + ε)^γ.")
    dcpt_huber_delta: float = Field(1e-3, gt=0.0, description="D-CPT law: δ of the Huber loss on log-loss residuals.")
    dcpt_starts: int = Field(32, ge=1, description="D-CPT law: random starts of L-BFGS-B.")
    cmr_tolerance: float = Field(
        0.01, gt=0.0,
        description="CMR without epsilon: the general loss may exceed the base by this fraction of it.",
    )  # fmt: skip
    svg: bool = Field(False, description="Also write the figures as SVG.")
