"""FastAPI app (DESIGN.md 3.3): JSON and CSV fits, probes, model info, the upload page.

Inference runs in worker threads, at most ``max_concurrency`` at a time; at most ``queue_bound`` more
requests wait, and beyond that the service answers 503 with ``Retry-After``. Bodies larger than
``max_body_bytes`` get 413, also when sent chunked. With ``ODEFORMER_API_KEY`` set, every API route
needs ``Authorization: Bearer <key>`` (the probes, the page and the docs do not).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import anyio
import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from odeformer import ambiguity, display
from odeformer import checkpoint as ckpt
from odeformer.csv_io import CSVFileError, parse_csv_text
from odeformer.regressor import ODERegressor
from odeformer.validation import LIMITS, InputError, check_limits, prepare
from service import schemas

log = logging.getLogger("odeformer.access")
PAGE = Path(__file__).resolve().parent / "static" / "index.html"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes, by Content-Length or by counting chunks."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes"})
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes"})


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


#: the media types each POST route reads; anything else gets 415
ACCEPTED_TYPES = {"/v1/fit": ("application/json",), "/v1/fit/csv": ("multipart/form-data",)}


def unsupported_type(path: str, content_type: str | None) -> str | None:
    """The 415 message for a body of ``content_type`` sent to ``path``, or None when it is accepted (a JSON
    route also takes ``application/*+json``)."""
    accepted = ACCEPTED_TYPES.get(path.rstrip("/") or "/")
    if accepted is None:
        return None
    media = (content_type or "").split(";")[0].strip().lower()
    if media in accepted:
        return None
    if "application/json" in accepted and media.startswith("application/") and media.endswith("+json"):
        return None
    other = "; a CSV file goes to POST /v1/fit/csv as multipart/form-data (field 'file')" \
        if path.rstrip("/") == "/v1/fit" else "; JSON goes to POST /v1/fit"
    return (f"unsupported content type {media or '(none)'!r} for POST {path.rstrip('/')}: send "
            f"{' or '.join(accepted)}{other}")


def with_display(candidates: list[dict], equations, variables: list[str]) -> list[dict]:
    """Add ``latex`` (when the library has not) and ``mathml`` (dv/dt = ... per variable, for the page)."""
    for d, cand in zip(candidates, equations):
        exprs = getattr(cand, "expressions", None)
        if exprs is None:
            continue
        if not d.get("latex"):
            d["latex"] = display.latex_rhs(exprs, variables)
        d["mathml"] = {v: display.mathml_equation(v, e) for v, e in zip(variables, exprs)}
    return candidates


class Gate:
    """At most ``running`` fits at once and ``waiting`` more in line; the rest get 503."""

    def __init__(self, running: int, waiting: int):
        self.sem = asyncio.Semaphore(running)
        self.capacity = running + waiting
        self.admitted = 0

    async def run(self, fn, *args):
        if self.admitted >= self.capacity:
            raise HTTPException(503, "too many requests in line; retry shortly", headers={"Retry-After": "2"})
        self.admitted += 1
        try:
            async with self.sem:
                return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.admitted -= 1


def create_app(checkpoint: str | Path | None = None, max_body_bytes: int = 4_000_000, max_concurrency: int = 2,
               queue_bound: int = 16, api_key: str | None = None, warmup: bool = True) -> FastAPI:
    api_key = api_key if api_key is not None else os.environ.get("ODEFORMER_API_KEY") or None
    state: dict = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max_concurrency))
        c = await anyio.to_thread.run_sync(ckpt.load, checkpoint or ckpt.default_path())
        state["ckpt"] = c
        state["model"] = {"name": c.name, "sha256": next(iter(c.config["weights"].values()))}
        if warmup:
            t = np.linspace(0, 5, 20)
            await anyio.to_thread.run_sync(
                lambda: ODERegressor.from_checkpoint(c, beam_size=2, time_budget_s=2).fit(t, np.exp(-t)))
        state["ready"] = True
        yield

    app = FastAPI(title="odeformer", version="0.1.0", lifespan=lifespan,
                  description="Symbolic regression of ODEs: trajectories in, ranked closed-form dx/dt = f(x, t) out.")
    gate = Gate(max_concurrency, queue_bound)
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.middleware("http")
    async def content_type(request: Request, call_next):
        if request.method == "POST":
            problem = unsupported_type(request.url.path, request.headers.get("content-type"))
            if problem:
                return JSONResponse({"detail": problem}, status_code=415,
                                    headers={"Accept-Post": ", ".join(ACCEPTED_TYPES.get(
                                        request.url.path.rstrip("/"), ()))})
        return await call_next(request)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        start = time.monotonic()
        response = await call_next(request)
        log.info(json.dumps({"method": request.method, "path": request.url.path, "status": response.status_code,
                             "ms": round(1000 * (time.monotonic() - start), 1),
                             "client": request.client.host if request.client else None}))
        return response

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    def authorize(request: Request) -> None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    def ready_model():
        if not state["ready"]:
            raise HTTPException(503, "model not loaded yet", headers={"Retry-After": "5"})
        return state["ckpt"]

    def make_regressor(c, opts: schemas.FitOptions) -> ODERegressor:
        bounds = {k: list(v) for k, v in opts.experiment_bounds.items()} if opts.experiment_bounds else None
        return ODERegressor.from_checkpoint(c, beam_size=opts.beam_size, top_k=opts.top_k,
                                            time_budget_s=opts.time_budget_s,
                                            allowed_operators=opts.allowed_operators, decoding=opts.decoding,
                                            temperature=opts.temperature, experiment=opts.suggest_experiment,
                                            experiment_bounds=bounds,
                                            experiment_max_duration=opts.experiment_max_duration)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})
        return {"status": "ready", "model": state["model"]}

    @app.get("/v1/model", dependencies=[Depends(authorize)])
    async def model_info() -> dict:
        c = ready_model()
        return {**state["model"], "parameters": c.model.n_params(), "max_variables": c.grammar.max_dim,
                "operators": sorted(c.grammar.output_operators), "grammar": c.grammar.data,
                "provenance": c.provenance, "benchmarks": c.config.get("benchmarks", {}),
                "limits": {"max_body_bytes": max_body_bytes, **LIMITS.as_dict(), "max_beam_size": schemas.MAX_BEAM,
                           "max_top_k": schemas.MAX_TOP_K, "max_time_budget_s": schemas.MAX_TIME_BUDGET_S,
                           "concurrent_fits": max_concurrency, "queue_bound": queue_bound}}

    @app.post("/v1/fit", response_model=schemas.FitResponse, dependencies=[Depends(authorize)],
              responses={413: {"model": schemas.ErrorResponse}, 415: {"model": schemas.ErrorResponse},
                         422: {"model": schemas.ErrorResponse},
                         503: {"model": schemas.ErrorResponse}})
    async def fit(req: schemas.FitRequest):
        c = ready_model()
        d = len(req.variables)
        if d > c.grammar.max_dim:
            raise HTTPException(422, f"variables: {d} variables; the model supports at most {c.grammar.max_dim}")
        for i, tr in enumerate(req.trajectories):
            if len(tr.x) != len(tr.t):
                raise HTTPException(422, f"trajectory {i + 1}: {len(tr.x)} rows of x for {len(tr.t)} times")
            for j, row in enumerate(tr.x):
                if len(row) != d:
                    raise HTTPException(422, f"trajectory {i + 1}: x[{j}] has {len(row)} values for {d} variables")
        opts = req.options
        if not opts.suggest_experiment and (opts.experiment_bounds or opts.experiment_max_duration is not None):
            raise HTTPException(422, "experiment_bounds and experiment_max_duration need suggest_experiment=true")
        if opts.experiment_bounds is not None:  # unknown variables, lower > upper: 422 before fitting
            ambiguity.check_bounds(opts.experiment_bounds, req.variables)
        reg = make_regressor(c, req.options)
        ts = [np.array(tr.t) for tr in req.trajectories]
        xs = [np.array(tr.x, dtype=float).reshape(len(tr.t), d) for tr in req.trajectories]
        # the same checks as the CSV route and the library, with the trajectory and the variable named
        check_limits(list(zip(ts, xs)))
        prepare(ts, xs, c.grammar.max_dim, variables=req.variables)
        start = time.monotonic()
        await gate.run(lambda: reg.fit(ts, xs, variables=req.variables))
        candidates = with_display([cd.to_dict() for cd in reg.equations_], reg.equations_, req.variables)
        out = {"variables": req.variables, "candidates": candidates,
               "low_confidence": bool(reg.low_confidence_), "ambiguous": bool(reg.ambiguous_),
               "rivals": [r + 1 for r in reg.rivals_], "model": state["model"],
               "elapsed_s": round(time.monotonic() - start, 3)}
        if reg.experiment_ is not None:
            out["experiment"] = reg.experiment_.to_dict(req.variables)
        return out

    @app.post("/v1/fit/csv", response_model=schemas.CSVFitResponse, dependencies=[Depends(authorize)],
              responses={413: {"model": schemas.ErrorResponse}, 415: {"model": schemas.ErrorResponse},
                         422: {"model": schemas.ErrorResponse},
                         503: {"model": schemas.ErrorResponse}})
    async def fit_csv(file: Annotated[UploadFile, File()],
                      beam_size: Annotated[int, Query(ge=1, le=schemas.MAX_BEAM)] = 16,
                      top_k: Annotated[int, Query(ge=1, le=schemas.MAX_TOP_K)] = 5,
                      time_budget_s: Annotated[float, Query(gt=0, le=schemas.MAX_TIME_BUDGET_S,
                                                            allow_inf_nan=False)] = 10.0,
                      plot: Annotated[bool, Query(description="add a PNG of data vs the best candidate")] = False,
                      suggest_experiment: Annotated[bool, Query(description="also suggest the experiment that best "
                                                                "separates the rivals (docs/ambiguity.md)")] = False,
                      experiment_bounds: Annotated[str | None, Query(max_length=2000, description=
                                                                     "NAME=LO:HI[,NAME=LO:HI...]")] = None,
                      experiment_max_duration: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None):
        c = ready_model()
        raw = await file.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HTTPException(422, "file: not UTF-8 text") from None
        try:
            systems = parse_csv_text(text, default_system=Path(file.filename or "upload").stem or "upload")
        except CSVFileError as e:
            raise HTTPException(422, f"file: {e}") from None
        total = sum(len(t) for s in systems for t, _ in s.trajectories)
        if total > LIMITS.max_total_points:
            raise HTTPException(422, f"file: {total} points in all; at most {LIMITS.max_total_points}")
        for s in systems:  # the JSON route's limits, per system
            if not s.error:
                try:
                    check_limits(s.trajectories, s.labels)
                except InputError as e:
                    s.error = str(e)
        bounds = None
        if experiment_bounds is not None:
            bounds = ambiguity.parse_bounds(experiment_bounds)  # InputError: 422
            known = {v for s in systems for v in s.variables}
            if set(bounds) - known:
                raise HTTPException(422, f"experiment_bounds: no system in the file has the variable(s) "
                                         f"{sorted(set(bounds) - known)}")
        if not suggest_experiment and (bounds or experiment_max_duration is not None):
            raise HTTPException(422, "experiment_bounds and experiment_max_duration need suggest_experiment=true")
        opts = schemas.FitOptions(beam_size=beam_size, top_k=top_k, time_budget_s=time_budget_s,
                                  suggest_experiment=suggest_experiment, experiment_bounds=bounds,
                                  experiment_max_duration=experiment_max_duration)

        def run_all():
            from odeformer.batch import result_for

            out = []
            for s in systems:
                if not s.error and len(s.variables) > c.grammar.max_dim:
                    s.error = f"{len(s.variables)} variables; the model supports at most {c.grammar.max_dim}"
                reg = make_regressor(c, opts)
                r = result_for(reg, s)
                if r.get("candidates"):
                    with_display(r["candidates"], reg.equations_, s.variables)
                if plot and r.get("candidates"):
                    from service.plots import trajectory_png

                    r["plot_png_base64"] = base64.b64encode(trajectory_png(reg, s)).decode()
                out.append(r)
            return out

        results = await gate.run(run_all)
        if all(r.get("error") for r in results):  # nothing could be fitted: the request itself is bad
            raise HTTPException(422, "; ".join(f"system {r['system']}: {r['error']}" for r in results))
        return {"systems": results, "model": state["model"]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text())

    return app
