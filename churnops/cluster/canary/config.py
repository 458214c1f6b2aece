"""The automated canary's plan and thresholds: `kustomize/overlays/<env>/canary-analysis.yaml`.

One file per environment, beside its rollout state, so that a change of a threshold is reviewed like a
change of the split. Every field has a default explained here; the file need only name what it changes
(the committed files name everything, for the reader). Not a kustomize resource: nothing in the cluster
reads it, the analysis loop does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ANALYSIS_FILE = "canary-analysis.yaml"
Percent = Annotated[int, Field(gt=0, lt=100)]


class AnalysisConfigError(ValueError):
    """A thresholds file that is missing, malformed or out of range; names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepPlan(_Strict):
    steps: tuple[Percent, ...] = Field(
        default=(10, 25, 50),
        min_length=1,
        description="canary percentages, in increasing order; after the last one passes, 100 % (promotion)",
    )
    dwell_s: float = Field(
        default=600.0,
        gt=0,
        description="analysis window of each step: long enough for min_predictions at the first step's share",
    )
    warmup_s: float = Field(
        default=60.0,
        ge=0,
        description="seconds after the split is live before the window opens (new pods, cold caches)",
    )
    settle_s: float = Field(
        default=75.0,
        ge=0,
        description="wait after the window closes before querying: at least two scrape intervals, so that the "
        "window's last samples are in Prometheus",
    )
    max_extensions: int = Field(
        default=2,
        ge=0,
        description="times a step's window is extended when it saw too little traffic to judge; then abort",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if list(steps) != sorted(set(steps)):
            raise ValueError("steps must increase strictly")
        return steps


class Selectors(_Strict):
    serving: str = Field(
        default='job="churn/churn-transformer", model_version="{version}"',
        description="PromQL label matchers of one side's transformer series; {version} and {role} (canary or "
        "stable) are filled in. In a cluster each transformer process serves one version, so model_version "
        "selects the revision's pods",
    )
    performance: str = Field(
        default='job="churn-detector", model_version="{version}"',
        description="label matchers of one side's live-performance gauges (the drift detector's)",
    )

    def format(self, template: str, *, version: str, role: str) -> str:
        return template.format(version=version, role=role)


class ServingLimits(_Strict):
    min_requests: int = Field(default=200, ge=1, description="canary requests a step needs to be judged")
    max_5xx_ratio: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="a canary whose 5xx share stays under this passes whatever the stable one does",
    )
    max_5xx_ratio_increase: float = Field(
        default=0.005,
        ge=0,
        le=1,
        description="above max_5xx_ratio, a canary fails once its 5xx share exceeds the stable one's by this",
    )
    max_4xx_ratio_increase: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="refused requests (4xx) beyond the stable share by this: the new version rejects customers "
        "the old one scored (a changed contract)",
    )
    latency_quantile: float = Field(default=0.95, gt=0, lt=1, description="latency quantile compared")
    max_latency_ratio: float = Field(
        default=1.5, ge=1, description="canary quantile over stable quantile that fails the step..."
    )
    min_latency_increase_s: float = Field(
        default=0.025,
        ge=0,
        description="...when the canary is also slower by at least this (small absolute jitter never fails)",
    )


class ModelLimits(_Strict):
    min_predictions: int = Field(
        default=500, ge=1, description="customers the canary must score in a step to be judged"
    )
    max_ks: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="KS distance of the churn-probability distributions that fails the step (when significant)",
    )
    max_psi: float = Field(
        default=0.2,
        gt=0,
        description="PSI of the probability buckets that fails the step (when significant; 0.1 is the usual "
        "'watch', 0.25 'major shift')",
    )
    significance: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="p-value under which a distance counts as real rather than sampling noise",
    )
    max_risk_mix_distance: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="total variation distance of the risk-level mix that fails the step (when significant)",
    )
    max_action_mix_distance: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="total variation distance of the recommended-action mix that fails the step (when "
        "significant). Wide on purpose: retraining with another seed alone moved 0.21-0.23 of the actions in "
        "the rehearsal (the reason codes rank close factors differently); shuffled labels moved 0.38",
    )


class PerformanceLimits(_Strict):
    min_labelled: int = Field(
        default=200,
        ge=1,
        description="labelled predictions each version needs for live F1 to be compared (labels arrive late: "
        "usually only later steps, or not at all)",
    )
    max_f1_drop: float = Field(
        default=0.05, ge=0, le=1, description="live F1 below the stable version's by more than this fails"
    )


class ShadowLimits(_Strict):
    min_labelled: int = Field(
        default=200,
        ge=1,
        description="labelled customers the shadow evaluation needs before it can say that a version loses",
    )
    max_auc_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="ROC AUC below the champion's by more than this: the version loses (no canary unless forced)",
    )
    max_f1_drop: float = Field(
        default=0.03,
        ge=0,
        le=1,
        description="F1 (each at its own threshold) below the champion's by more than this: the version loses",
    )


class AnalysisConfig(_Strict):
    plan: StepPlan = Field(default_factory=StepPlan, description="the steps and their timing")
    selectors: Selectors = Field(default_factory=Selectors, description="which series belong to which side")
    serving: ServingLimits = Field(default_factory=ServingLimits, description="5xx, 4xx and latency limits")
    model: ModelLimits = Field(default_factory=ModelLimits, description="limits on what the model answers")
    performance: PerformanceLimits = Field(
        default_factory=PerformanceLimits, description="limits on live F1 once labels come back"
    )
    shadow: ShadowLimits = Field(
        default_factory=ShadowLimits, description="margins of the shadow evaluation before any traffic"
    )


def load_config(path: Path) -> AnalysisConfig:
    """The thresholds file, or the defaults when there is none."""
    if not path.is_file():
        return AnalysisConfig()
    try:
        document = yaml.safe_load(path.read_text()) or {}
        return AnalysisConfig.model_validate(document)
    except yaml.YAMLError as error:
        raise AnalysisConfigError(f"{path}: not YAML ({error})") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise AnalysisConfigError(f"{path}: {problems}") from error
