"""The KServe transformer: raw customers in, validated and encoded, scored by the predictor, explained out.

`ChurnTransformer` is a `kserve.Model` (name `churn`) that KServe's ModelServer serves on the v1
(`/v1/models/churn:predict`) and v2 (`/v2/models/churn/infer`) routes. Everything it needs comes from the
artefact directory the predictor loads too (KServe's /mnt/models): the feature contract (fields, encoding,
threshold, risk bands, reason codes) and the model version, checked against the predictor at start.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from churn_core.artefact import MODEL_SETTINGS_FILE, ArtefactError, verify_artefact
from churn_core.contract import FeatureContract
from churn_core.decision import ANSWER_FIELDS
from churn_transformer import context
from churn_transformer.engine import Scored, Scorer
from churn_transformer.metrics import get_metrics, start_metrics
from churn_transformer.predictor import (
    PredictorTarget,
    StartupError,
    make_client,
    wait_for_predictor,
)
from churn_transformer.routes import V2Request
from churn_transformer.settings import TransformerSettings
from churn_transformer.validation import InvalidRequestError, ParsedRequest, RequestValidator


@dataclass(frozen=True)
class Prepared:
    """A validated request on its way to the predictor."""

    protocol: str  # "v1" | "v2"
    parsed: ParsedRequest
    request_id: str | None = None
    outputs: list[str] | None = None


@dataclass(frozen=True)
class Artefact:
    """What the transformer reads from the artefact directory, once, at start."""

    contract: FeatureContract
    predictor_model: str
    version: str

    @classmethod
    def read(cls, directory: Path) -> Artefact:
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
    def __init__(self, name: str, settings: TransformerSettings, protocol: str, predictor_host: str) -> None:
        super().__init__(name)
        self.settings = settings
        self.protocol = protocol
        self.predictor_host = predictor_host
        self._build()

    def _build(self) -> None:
        """Everything derived from the artefact; runs in every worker process (see __setstate__)."""
        self.artefact = Artefact.read(self.settings.model_dir)
        self.version = self.artefact.version
        contract = self.artefact.contract
        self.target = PredictorTarget(
            host=self.predictor_host,
            model_name=self.artefact.predictor_model,
            model_version=self.version,
            timeout_s=self.settings.predictor_timeout_s,
        )
        self.scorer = Scorer(
            contract,
            make_client(self.protocol, self.target),
            max_rows=self.settings.batch_max_rows,
            wait_s=self.settings.batch_wait_ms / 1000.0,
            concurrency=self.settings.predictor_concurrency,
        )
        self.validator = RequestValidator(contract, self.scorer.encoder, self.settings.max_batch)
        self._predictor_ok = False
        self._checked_at = float("-inf")
        self._check: asyncio.Future[None] | None = None
        start_metrics(self.version)

    # KServe pickles registered models into its worker processes (`--workers N`, spawn): send only the
    # settings and rebuild from the artefact there (the validator's generated pydantic class and the
    # playbook's closures do not pickle, and sockets must be opened in the worker's own event loop).
    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings,
            "protocol": self.protocol,
            "predictor_host": self.predictor_host,
            "ready": self.ready,
            "enable_latency_logging": self.enable_latency_logging,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        Model.__init__(self, state["name"])
        self.settings = state["settings"]
        self.protocol = state["protocol"]
        self.predictor_host = state["predictor_host"]
        self.enable_latency_logging = state["enable_latency_logging"]
        self._build()
        self.ready = state["ready"]

    def load(self) -> bool:
        """Start-up gate: the predictor must serve this artefact's model version (raises StartupError)."""
        wait_for_predictor(self.protocol, self.target, self.settings.startup_timeout_s)
        self.ready = True
        self._predictor_ok, self._checked_at = True, time.monotonic()
        return True

    async def healthy(self) -> bool:
        """Ready only with a contract and a predictor that answers for our version. KServe asks on every
        inference request too, so an answer is reused for `health_cache_s`, and concurrent callers share
        one check in flight."""
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
        """v2 arrives as our routes' `V2Request` (or KServe's `InferRequest`), v1 as the decoded body."""
        record = context.current()
        if isinstance(payload, V2Request | InferRequest):
            if record is not None:
                record.protocol = "v2"
            if isinstance(payload, V2Request):
                inputs, request_id, outputs = payload.inputs, payload.id, payload.outputs
            else:
                inputs = [
                    (i.name, i.datatype, i.shape, i.data if i.data is not None else i.as_numpy())
                    for i in payload.inputs
                ]
                request_id = payload.id
                outputs = [o.name for o in payload.request_outputs] if payload.request_outputs else None
            prepared = Prepared("v2", self.validator.parse_v2(inputs), request_id, outputs)
        else:
            if record is not None:
                record.protocol = "v1"
            if isinstance(payload, bytes | bytearray | str):
                try:
                    payload = orjson.loads(payload)
                except orjson.JSONDecodeError as error:
                    raise InvalidRequestError("malformed_json", f"body is not valid JSON: {error}") from None
            prepared = Prepared("v1", self.validator.parse_v1(payload))
        if record is not None:
            record.batch_size = len(prepared.parsed)
        return prepared

    async def predict(
        self, payload: Prepared, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> tuple[Prepared, Scored]:
        return payload, await self.scorer.score(payload.parsed.batch)

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any] | InferResponse:
        prepared, scored = result
        predictions = [bool(p) for p in scored.predictions]
        probabilities = [float(p) for p in scored.probabilities]
        get_metrics().record_answers(probabilities, predictions, scored.risk_levels, scored.actions)
        record = context.current()
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
