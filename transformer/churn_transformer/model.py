"""The KServe transformer: raw customers in, validated and encoded, scored by the predictor, explained out.

`ChurnTransformer` is a `kserve.Model` (name `churn`): app.py calls it (`Model.__call__`: preprocess →
validate → predict → postprocess, each timed by KServe) for the v1 (`/v1/models/churn:predict`) and v2
(`/v2/models/churn/infer`) routes. Everything it needs comes from the artefact directory the predictor
loads too (KServe's /mnt/models): the feature contract (fields, encoding, threshold, risk bands, reason
codes) and the model version, checked against the predictor at start. With
`CHURNOPS_TRANSFORMER_ARTEFACT_SHA256` set, `manifest.json` must have that sha256 before anything else is
read (the rollout pins it, as for the predictor).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from churn_core.artefact import MODEL_SETTINGS_FILE, ArtefactError, sha256_of, verify_artefact
from churn_core.contract import FeatureContract
from churn_core.decision import ANSWER_FIELDS
from churn_transformer import telemetry
from churn_transformer.engine import (
    GrpcPredictor,
    PredictorTarget,
    PredictorUnavailableError,
    Scored,
    Scorer,
    StartupError,
    wait_for_predictor,
)
from churn_transformer.internals import InferOutput, InferResponse, Model
from churn_transformer.settings import TransformerSettings
from churn_transformer.validation import InvalidRequestError, ParsedRequest, RequestValidator, V2Request

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Prepared:
    """A validated request on its way to the predictor."""

    protocol: str  # "v1" | "v2"
    parsed: ParsedRequest
    request_id: str | None = None
    outputs: list[str] | None = None


def check_pin(directory: Path, expected: str | None) -> None:
    """Refuse an artefact whose manifest is not the one the deployment pinned (before reading anything)."""
    if not expected:
        return
    try:
        actual = sha256_of(directory / MANIFEST_FILE)
    except OSError as error:
        raise StartupError(f"cannot read {directory / MANIFEST_FILE}: {error.strerror or error}") from None
    if actual != expected.lower():
        raise StartupError(
            f"artefact pin mismatch: {directory / MANIFEST_FILE} has sha256 {actual}, "
            f"CHURNOPS_TRANSFORMER_ARTEFACT_SHA256 pins {expected}; refusing to start"
        )


@dataclass(frozen=True)
class Artefact:
    """What the transformer reads from the artefact directory, once, at start."""

    contract: FeatureContract
    predictor_model: str
    version: str

    @classmethod
    def read(cls, directory: Path, pin: str | None = None) -> Artefact:
        check_pin(directory, pin)
        try:
            verify_artefact(directory)
            contract = FeatureContract.load(directory)
            settings = json.loads((directory / MODEL_SETTINGS_FILE).read_text(encoding="utf-8"))
        except (ArtefactError, OSError, ValueError) as error:
            raise StartupError(f"cannot read the serving artefact in {directory}: {error}") from error
        predictor_version = str(settings.get("parameters", {}).get("version", ""))
        if predictor_version != contract.model.version:
            raise StartupError(
                f"{directory}: {MODEL_SETTINGS_FILE} declares version {predictor_version!r} but the contract "
                f"belongs to version {contract.model.version!r}; export the artefact again"
            )
        return cls(contract=contract, predictor_model=str(settings["name"]), version=contract.model.version)


class ChurnTransformer(Model):  # type: ignore[misc]
    def __init__(self, name: str, settings: TransformerSettings, predictor_host: str) -> None:
        super().__init__(name)
        self.settings = settings
        self.predictor_host = predictor_host
        self.artefact = Artefact.read(settings.model_dir, settings.artefact_sha256)
        self.version = self.artefact.version
        contract = self.artefact.contract
        self.target = PredictorTarget(
            host=predictor_host,
            model_name=self.artefact.predictor_model,
            model_version=self.version,
            timeout_s=settings.predictor_timeout_s,
        )
        self.scorer = Scorer(
            contract,
            GrpcPredictor(self.target),
            max_rows=settings.batch_max_rows,
            wait_s=settings.batch_wait_ms / 1000.0,
            concurrency=settings.predictor_concurrency,
        )
        self.validator = RequestValidator(contract, self.scorer.encoder, settings.max_batch)
        self._predictor_ok = False
        self._checked_at = float("-inf")
        self._check: asyncio.Future[None] | None = None
        telemetry.start_metrics(self.version)

    def load(self) -> bool:
        """Start-up gate: the predictor must serve this artefact's model version (raises StartupError)."""
        wait_for_predictor(self.target, self.settings.startup_timeout_s)
        self.mark_ready()
        return True

    def mark_ready(self) -> None:
        """In a worker process, after the main process's start-up gate passed."""
        self.ready = True
        self._predictor_ok, self._checked_at = True, time.monotonic()

    async def healthy(self) -> bool:
        """Ready only with a contract and a predictor that answers for our version. Asked on every
        inference request too (after validation), so an answer is reused for `health_cache_s`, and
        concurrent callers share one check in flight."""
        if not self.ready:
            return False
        if time.monotonic() - self._checked_at >= self.settings.health_cache_s:
            if self._check is None or self._check.done():
                self._check = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._check)
        return bool(self._predictor_ok)

    async def _refresh(self) -> None:
        ok = False
        try:
            ok = await self.scorer.client.ready()
        finally:
            self._predictor_ok, self._checked_at = ok, time.monotonic()

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess has validated it already (KServe's check would inspect a dict)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Prepared:
        """v2 arrives as validation.V2Request, v1 as the decoded JSON body."""
        record = telemetry.current()
        if isinstance(payload, V2Request):
            prepared = Prepared("v2", self.validator.parse_v2(payload.inputs), payload.id, payload.outputs)
        else:
            prepared = Prepared("v1", self.validator.parse_v1(payload))
        if record is not None:
            record.batch_size = len(prepared.parsed)
        return prepared

    async def predict(
        self, payload: Prepared, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> tuple[Prepared, Scored]:
        if not await self.healthy():  # after validation: an invalid request gets its 400 all the same
            raise PredictorUnavailableError("the churn model is temporarily unavailable; retry shortly")
        return payload, await self.scorer.score(payload.parsed.batch)

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any] | InferResponse:
        prepared, scored = result
        predictions = [bool(p) for p in scored.predictions]
        probabilities = [float(p) for p in scored.probabilities]
        telemetry.get_metrics().record_answers(probabilities, predictions, scored.risk_levels, scored.actions)
        record = telemetry.current()
        if record is not None:
            record.model_version = self.version
            record.customers = [
                {"probability": round(p, 6), "prediction": c, "risk_level": r}
                for p, c, r in zip(probabilities, predictions, scored.risk_levels, strict=True)
            ]
        factors = scored.factors
        ids = prepared.parsed.ids
        if prepared.protocol == "v1":
            answers = []
            for index, probability in enumerate(probabilities):
                answer: dict[str, Any] = {}
                if ids is not None:
                    answer["customerID"] = ids[index]
                answer.update(
                    churn_probability=probability,
                    churn_prediction=predictions[index],
                    risk_level=scored.risk_levels[index],
                    recommended_action=scored.actions[index],
                    top_factors=factors[index],
                    model_version=self.version,
                )
                answers.append(answer)
            return {"predictions": answers}
        n = len(probabilities)
        outputs = []
        if ids is not None:
            outputs.append(InferOutput("customer_id", [n], "BYTES", ids))
        outputs += [
            InferOutput("churn_probability", [n], "FP64", probabilities),
            InferOutput("churn_prediction", [n], "BOOL", predictions),
            InferOutput("risk_level", [n], "BYTES", scored.risk_levels),
            InferOutput("recommended_action", [n], "BYTES", scored.actions),
            InferOutput("top_factors", [n], "BYTES", [orjson.dumps(row).decode() for row in factors]),
            InferOutput("model_version", [n], "BYTES", [self.version] * n),
        ]
        if prepared.outputs:
            by_name = {output.name: output for output in outputs}
            unknown = [name for name in prepared.outputs if name not in by_name]
            if unknown:
                raise InvalidRequestError(
                    "unknown_output",
                    f"requested output(s) {unknown} do not exist; outputs are {list(by_name)}",
                )
            outputs = [by_name[name] for name in prepared.outputs]
        return InferResponse(
            response_id=prepared.request_id or (record.request_id if record is not None else ""),
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
        )

    def get_input_types(self) -> list[dict[str, Any]]:
        types = []
        for spec in self.artefact.contract.fields:
            if spec.kind == "category":
                datatype = "BYTES"
            elif spec.kind == "integer":
                datatype = "INT64"
            else:
                datatype = "FP64"
            types.append({"name": spec.name, "datatype": datatype, "shape": [-1]})
        return types

    def get_output_types(self) -> list[dict[str, Any]]:
        datatypes = {"churn_probability": "FP64", "churn_prediction": "BOOL"}
        return [
            {"name": name, "datatype": datatypes.get(name, "BYTES"), "shape": [-1]}
            for name in ("customer_id", *ANSWER_FIELDS)
        ]

    def stop(self) -> None:
        self.ready = False
