"""Request and response schemas of the HTTP API: unknown fields are rejected, NaN and inf refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from odeformer.validation import LIMITS

#: limits, documented in docs/service.md and in GET /v1/model; the data limits are shared by both routes
MAX_POINTS_PER_TRAJECTORY = LIMITS.max_points_per_trajectory
MAX_TOTAL_POINTS = LIMITS.max_total_points
MAX_TRAJECTORIES = LIMITS.max_trajectories
MAX_BEAM = 64
MAX_TOP_K = 20
MAX_TIME_BUDGET_S = 30.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FitOptions(Strict):
    beam_size: int = Field(16, ge=1, le=MAX_BEAM)
    top_k: int = Field(5, ge=1, le=MAX_TOP_K)
    time_budget_s: float = Field(10.0, gt=0, le=MAX_TIME_BUDGET_S)
    allowed_operators: list[str] | None = Field(None, min_length=1, max_length=40)
    decoding: Literal["beam", "sample"] = Field("beam", description="beam search, or temperature sampling "
                                                "(beam_size samples per group)")
    temperature: float = Field(0.8, gt=0, le=10, description="sampling temperature (decoding='sample')")
    suggest_experiment: bool = Field(False, description="also suggest the initial state and recording length "
                                     "that best separate the best candidate from its rivals (docs/ambiguity.md)")
    experiment_bounds: dict[str, tuple[float, float]] | None = Field(
        None, description="{variable: [lower, upper]}: where the suggested initial state may lie (default: each "
        "variable's observed range widened by its width on each side)")
    experiment_max_duration: float | None = Field(None, gt=0, description="the longest recording to suggest, in "
                                                  "the data's time units (default: twice the observed span)")


class Trajectory(Strict):
    t: list[float] = Field(..., min_length=5, max_length=MAX_POINTS_PER_TRAJECTORY)
    x: list[list[float]] = Field(..., min_length=5, max_length=MAX_POINTS_PER_TRAJECTORY,
                                 description="one row [x_1, ..., x_d] per time")


class FitRequest(Strict):
    variables: list[str] = Field(..., min_length=1, max_length=6)
    trajectories: list[Trajectory] = Field(..., min_length=1, max_length=MAX_TRAJECTORIES)
    options: FitOptions = FitOptions()


class Candidate(Strict):
    rhs: dict[str, str] = Field(..., description="exact right-hand sides, full precision, keyed by variable")
    latex: dict[str, str] | None = Field(None, description="the same, typeset as LaTeX, constants to 4 "
                                         "significant digits")
    mathml: dict[str, str] | None = Field(None, description="dv/dt = ... as a presentation MathML <math> "
                                          "element per variable, constants to 4 significant digits")
    r2: float
    complexity: int
    score: float
    pareto: bool
    score_gap: float | None = Field(None, description="nats below the best candidate's score (0 for the best)")


class Prediction(Strict):
    rank: int = Field(..., description="the candidate's rank (1 = best)")
    states: dict[str, list[float | None]] = Field(..., description="its predicted values at the experiment's "
                                                   "times, per variable (null where it cannot be integrated)")


class Experiment(Strict):
    """The suggested experiment (docs/ambiguity.md)."""

    x0: dict[str, float]
    t0: float
    duration: float
    rivals: list[int] = Field(..., description="ranks of the candidates it separates, the best first")
    separation: float = Field(..., description="the smallest RMS difference between the best's and a rival's "
                              "predictions, in noise standard deviations")
    evidence_nats: float
    bounds: dict[str, list[float]]
    ambiguous: bool
    t: list[float]
    predictions: list[Prediction]


class ModelRef(Strict):
    name: str
    sha256: str


class FitResponse(Strict):
    variables: list[str]
    candidates: list[Candidate]
    low_confidence: bool
    ambiguous: bool = Field(False, description="close rivals of the best predict other futures (docs/ambiguity.md)")
    rivals: list[int] = Field([], description="their ranks (1 = best)")
    experiment: Experiment | None = None
    model: ModelRef
    elapsed_s: float


class SystemResult(Strict):
    system: str
    variables: list[str] = []
    candidates: list[Candidate] = []
    low_confidence: bool | None = None
    ambiguous: bool | None = None
    rivals: list[int] = []
    experiment: Experiment | None = None
    elapsed_s: float | None = None
    error: str | None = None
    plot_png_base64: str | None = None


class CSVFitResponse(Strict):
    systems: list[SystemResult]
    model: ModelRef


class ErrorResponse(Strict):
    detail: str | list
