"""Starlette routes: the Interactions API under /v1 and /v1beta, and the /_emulator admin surface."""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .delivery import FAULT_NAMES, Deliverer
from .events import DONE, KEEPALIVE, build_events
from .faults import Fault
from .inputs import MAX_REQUEST_BYTES
from .lifecycle import Interaction, dumps
from .settings import EmulatorSettings, SettingsError, validate_faults
from .store import ApiError, Store, bad_request, parse_create
from .webhooks import Registry, loads, parse_webhook_config

VERSIONS = frozenset({"v1", "v1beta"})
_FAULT_ERRORS = {
    "429": (429, "resource_exhausted", "Rate limit exceeded (emulated fault)."),
    "500": (500, "internal", "Internal error (emulated fault)."),
    "503": (503, "unavailable", "The service is currently unavailable (emulated fault)."),
    "lost_500": (500, "internal", "Internal error (emulated fault; the interaction was created)."),
}
# Seconds between SSE comment lines on an idle stream, so dead clients are noticed.
KEEPALIVE_EVERY = 10.0
DROP_KEY = "emulator.drop"

Handler = Callable[[Request, Fault | None], Awaitable[Response]]


def json_response(data: bytes | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = data if isinstance(data, bytes) else dumps(data)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


class DroppedResponse(Response):
    """Closes the client's connection without sending anything (a lost response).

    With `reset`, the socket is aborted with SO_LINGER 0 so the client sees a TCP reset (a read error)
    instead of an orderly close (a protocol error) - the SDK retries the first but not the second.
    """

    def __init__(self, reset: bool = False) -> None:
        super().__init__(status_code=599)
        self.reset = reset

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drop = scope.get(DROP_KEY)
        if drop is None or not await drop(self.reset):
            # No access to the socket (another server): the closest we can get is a bare error.
            raise RuntimeError("emulated dropped connection")


def install_dropper(scope: Scope, send: Send) -> None:
    """Give handlers a way to close the socket before any response bytes are sent.

    An exception raised before `http.response.start` would make uvicorn answer 500, so instead we reach
    the transport of uvicorn's request cycle (the object its `send` is bound to) and close it. This
    must see uvicorn's own `send`, i.e. run outside every Starlette middleware.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)

    async def drop(reset: bool = False) -> bool:
        if transport is None:
            return False
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        # connection_lost runs on a later loop turn; wait for it so uvicorn sees a disconnect and
        # does not try to answer 500 after we return.
        for _ in range(200):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)
        return True

    scope[DROP_KEY] = drop


class EmulatorStarlette(Starlette):
    """Starlette with access to the raw connection for dropped-connection faults."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            install_dropper(scope, send)
        await super().__call__(scope, receive, send)


class EmulatorApp:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.store = Store(settings)
        # PUT /_emulator/faults may change these; reset puts back the values the emulator started with.
        self._startup_knobs = (settings.retry_after, settings.slow_delay)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        self._key = key.encode() if key else None
        # Webhooks (webhooks.py, delivery.py): the resource the SDK manages, and pushes of interactions' ends.
        self.deliverer = Deliverer(settings.seed)
        self.registry = Registry(self.deliverer)

    # ---- plumbing ----------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        given = request.headers.get("x-goog-api-key", "")
        if not given:
            return False
        return self._key is None or hmac.compare_digest(given.encode(), self._key)

    async def _api(self, request: Request, endpoint: str, handler: Handler) -> Response:
        """Auth, fault injection, error mapping and request counting around one API handler."""
        store = self.store
        if request.path_params.get("version") not in VERSIONS:
            return error_response(404, "not_found", "unknown API version")
        if not self._authorised(request):
            store.count(endpoint, 401)
            # The message never repeats the key that was sent.
            return error_response(401, "unauthenticated", "missing or invalid API key (x-goog-api-key)")
        fault = store.injector.draw(endpoint)
        if fault is not None:
            store.faults_injected[f"{endpoint}:{fault.kind}"] += 1
            early = await self._early_fault(endpoint, fault)
            if early is not None:
                return early
        try:
            response = await handler(request, fault)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
        if fault is not None and fault.kind.startswith("lost") and response.status_code < 400:
            # The interaction exists now, but the client never learns its id.
            response = self._fault_response(fault)
        store.count(endpoint, "dropped" if isinstance(response, DroppedResponse) else response.status_code)
        return response

    async def _early_fault(self, endpoint: str, fault: Fault) -> Response | None:
        if fault.kind == "slow":
            await asyncio.sleep(self.settings.slow_delay)
            return None
        if fault.kind.startswith("lost") or fault.kind == "cut":
            return None
        response = self._fault_response(fault)
        self.store.count(endpoint, "dropped" if isinstance(response, DroppedResponse) else response.status_code)
        return response

    def _fault_response(self, fault: Fault) -> Response:
        if fault.kind in ("drop", "lost", "reset", "lost_reset"):
            return DroppedResponse(reset=fault.kind in ("reset", "lost_reset"))
        status, code, message = _FAULT_ERRORS[fault.kind]
        headers = {"Retry-After": f"{self.settings.retry_after:g}"} if status == 429 else None
        return error_response(status, code, message, headers)

    # ---- API routes ----------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        return await self._api(request, "create", self._create)

    async def _create(self, request: Request, fault: Fault | None) -> Response:
        raw = await request.body()
        if len(raw) > MAX_REQUEST_BYTES:
            # Gemini's documented limit for a request with inline data (see inputs.py).
            raise bad_request(f"request is {len(raw):,} bytes; the limit with inline data is {MAX_REQUEST_BYTES:,}")
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("request body is not valid JSON") from None
        req = parse_create(body)
        webhook_config = parse_webhook_config(body.get("webhook_config"))
        it = self.store.create(req)
        if webhook_config or self.registry.hooks:
            self.deliverer.watch(it, webhook_config)
        if req.stream:
            return self._stream(it, 0, fault)
        return json_response(it.resource_bytes(it.elapsed(time.monotonic())))

    async def get(self, request: Request) -> Response:
        streaming = request.query_params.get("stream", "false").lower() == "true"
        return await self._api(request, "stream" if streaming else "get", self._get)

    async def _get(self, request: Request, fault: Fault | None) -> Response:
        now = time.monotonic()
        it = self.store.lookup(request.path_params["id"], now)
        params = request.query_params
        if params.get("stream", "false").lower() == "true":
            return self._stream(it, _last_event_index(params.get("last_event_id")), fault)
        include_input = params.get("include_input", "false").lower() == "true"
        return json_response(it.resource_bytes(it.elapsed(now), include_input))

    async def cancel(self, request: Request) -> Response:
        return await self._api(request, "cancel", self._cancel)

    async def _cancel(self, request: Request, fault: Fault | None) -> Response:
        now = time.monotonic()
        it = self.store.lookup(request.path_params["id"], now)
        t = it.elapsed(now)
        status = it.status_at(t)
        if it.is_terminal_at(t):
            # requires_action counts as ended here: the emulator never resumes such an interaction.
            raise bad_request(f"interaction {it.id!r} is already {status} and cannot be cancelled")
        it.cancelled_at = t
        self.deliverer.poke(it)  # its end moved: deliver `interaction.cancelled` now
        return json_response(it.resource_bytes(t))

    async def delete(self, request: Request) -> Response:
        return await self._api(request, "delete", self._delete)

    async def _delete(self, request: Request, fault: Fault | None) -> Response:
        it = self.store.lookup(request.path_params["id"], time.monotonic())
        it.deleted = True
        return json_response(b"{}")

    # ---- streaming ------------------------------------------------------------------------------
    def _stream(self, it: Interaction, start: int, fault: Fault | None) -> Response:
        cut_after = fault.cut_after if fault is not None and fault.kind == "cut" else None
        return _SSEResponse(self._events(it, start, cut_after), cut=cut_after is not None)

    async def _events(self, it: Interaction, start: int, cut_after: int | None) -> AsyncIterator[bytes]:
        sent, position, last_write = 0, start, time.monotonic()
        while True:
            now = time.monotonic()
            t = it.elapsed(now)
            events = build_events(it)
            while position < len(events) and events[position][0] <= t:
                if cut_after is not None and sent >= cut_after:
                    yield b""  # The response class sees the cut marker and drops the connection.
                    return
                yield events[position][1]
                position, sent, last_write = position + 1, sent + 1, now
            finished = it.is_terminal_at(t) and position >= len(events)
            if finished or it.deleted:
                yield DONE
                return
            if now - last_write >= KEEPALIVE_EVERY:
                yield KEEPALIVE
                last_write = now
            await asyncio.sleep(self.settings.poll_interval)

    # ---- admin ----------------------------------------------------------------------------------
    async def stats(self, request: Request) -> Response:
        return json_response(self.store.stats(time.monotonic()))

    async def reset(self, request: Request) -> Response:
        self.settings.retry_after, self.settings.slow_delay = self._startup_knobs
        self.store.reset()
        self.deliverer.reset()
        self.registry.reset()
        return json_response({"reset": True})

    async def faults(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response(self._fault_view())
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict | list):
                raise SettingsError("body must be a JSON object")
            if isinstance(body, dict):
                # Optional knobs travel with the fault table; they are not endpoint names.
                retry_after = body.pop("retry_after", self.settings.retry_after)
                slow_delay = body.pop("slow_delay", self.settings.slow_delay)
                self.settings.retry_after = float(retry_after)
                self.settings.slow_delay = float(slow_delay)
            self.store.set_faults(validate_faults(body))
        except (json.JSONDecodeError, SettingsError, ValueError, TypeError) as exc:
            return error_response(400, "invalid_request", str(exc).splitlines()[0])
        return json_response(self._fault_view())

    def _fault_view(self) -> dict[str, Any]:
        return {
            "faults": self.store.injector.faults,
            "retry_after": self.settings.retry_after,
            "slow_delay": self.settings.slow_delay,
        }

    async def describe(self, request: Request) -> Response:
        """What the emulator decided for one interaction (tests use it to compare seeds)."""
        it = self.store.items.get(request.path_params["id"])
        if it is None:
            return error_response(404, "not_found", "unknown interaction id")
        t = it.elapsed(time.monotonic())
        return json_response(
            {
                "id": it.id,
                "ordinal": it.ordinal,
                "outcome": it.outcome,
                "duration": it.duration,
                "status": it.status_at(t),
                "elapsed": t,
                "cancelled_at": it.cancelled_at,
                "deleted": it.deleted,
            }
        )

    # ---- webhooks resource (webhooks.py) and its admin surface ------------------------------------------
    async def webhooks(self, request: Request) -> Response:
        """`/{version}/webhooks[/{id}[:ping|:rotateSigningSecret]]`, every method the SDK's client.webhooks uses."""
        if request.path_params.get("version") not in VERSIONS:
            return error_response(404, "not_found", "unknown API version")
        if not self._authorised(request):
            return error_response(401, "unauthenticated", "missing or invalid API key (x-goog-api-key)")
        try:
            return json_response(await self._webhook_call(request))
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)

    async def _webhook_call(self, request: Request) -> dict[str, Any]:
        hook_id, _, verb = request.path_params.get("name", "").partition(":")
        method, params, registry = request.method, request.query_params, self.registry
        if not hook_id:
            if method == "POST":
                return registry.create(loads(await request.body()))
            return registry.list(params.get("page_size"), params.get("page_token"))
        if verb == "ping" and method == "POST":
            return registry.ping(hook_id)
        if verb == "rotateSigningSecret" and method == "POST":
            return registry.rotate(hook_id, loads(await request.body()))
        if verb:
            raise ApiError(404, "not_found", f"unknown method {verb!r}")
        if method == "PATCH":
            return registry.update(hook_id, loads(await request.body()), params.get("update_mask"))
        if method == "DELETE":
            return registry.delete(hook_id)
        return registry.get(hook_id).resource()

    async def jwks(self, request: Request) -> Response:
        return json_response(self.deliverer.keyring.jwks())

    async def rotate_jwks(self, request: Request) -> Response:
        return json_response({"kid": self.deliverer.keyring.rotate()})

    async def webhook_faults(self, request: Request) -> Response:
        policy = self.deliverer.policy
        if request.method == "PUT":
            try:
                body = json.loads(await request.body() or b"{}")
                for name in ("retry_initial", "retry_max", "give_up_after", "delay_seconds"):
                    setattr(policy, name, float(body.pop(name, getattr(policy, name))))
                if set(body) - set(FAULT_NAMES) or not all(0 <= float(v) <= 1 for v in body.values()):
                    raise ValueError(f"fault rates must be between 0 and 1, for: {', '.join(FAULT_NAMES)}")
                policy.rates = {k: float(v) for k, v in body.items()}
            except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
                return error_response(400, "invalid_request", str(exc).splitlines()[0])
        return json_response(vars(policy))

    async def webhook_stats(self, request: Request) -> Response:
        return json_response(self.deliverer.stats())

    async def health(self, request: Request) -> Response:
        return json_response(b'{"ok":true}')


class _SSEResponse(StreamingResponse):
    """An event stream that can be cut mid-way (the `cut` fault) by closing the socket."""

    def __init__(self, content: AsyncIterator[bytes], cut: bool) -> None:
        super().__init__(
            self._until_cut(content), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        self._cut = cut
        self._drop: Callable[[bool], Awaitable[bool]] | None = None

    async def _until_cut(self, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in content:
            if chunk == b"":
                if self._drop is not None:
                    await self._drop(False)
                return
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._drop = scope.get(DROP_KEY)
        await super().__call__(scope, receive, send)


def _last_event_index(value: str | None) -> int:
    """`last_event_id=E` resumes after event E; ids are 1-based ordinals, so E is also the start index."""
    if value is None or value == "":
        return 0
    if not value.isdigit():
        raise bad_request(f"last_event_id {value!r} is not an event id of this interaction")
    return int(value)


def create_app(settings: EmulatorSettings) -> Starlette:
    """The emulator as an ASGI app (wrapped so dropped-connection faults can close the socket)."""
    emulator = EmulatorApp(settings)
    routes = [
        # Admin routes first: "/_emulator/interactions/{id}" would otherwise match "/{version}/...".
        Route("/_emulator/stats", emulator.stats, methods=["GET"]),
        Route("/_emulator/reset", emulator.reset, methods=["POST"]),
        Route("/_emulator/faults", emulator.faults, methods=["GET", "PUT"]),
        Route("/_emulator/interactions/{id}", emulator.describe, methods=["GET"]),
        Route("/_emulator/health", emulator.health, methods=["GET"]),
        Route("/_emulator/jwks.json", emulator.jwks, methods=["GET"]),
        Route("/_emulator/jwks/rotate", emulator.rotate_jwks, methods=["POST"]),
        Route("/_emulator/webhook-faults", emulator.webhook_faults, methods=["GET", "PUT"]),
        Route("/_emulator/webhook-deliveries", emulator.webhook_stats, methods=["GET"]),
        Route("/{version}/webhooks", emulator.webhooks, methods=["GET", "POST"]),
        Route("/{version}/webhooks/{name}", emulator.webhooks, methods=["GET", "POST", "PATCH", "DELETE"]),
        Route("/{version}/interactions", emulator.create, methods=["POST"]),
        Route("/{version}/interactions/{id}", emulator.get, methods=["GET"]),
        Route("/{version}/interactions/{id}", emulator.delete, methods=["DELETE"]),
        Route("/{version}/interactions/{id}/cancel", emulator.cancel, methods=["POST"]),
    ]
    app = EmulatorStarlette(routes=routes)
    app.state.emulator = emulator
    return app
