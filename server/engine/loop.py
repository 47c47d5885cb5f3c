"""One engine thread per loaded model: it owns every call into that model's backend.

The HTTP side talks to an engine through :meth:`Engine.submit`, :meth:`Engine.abort` and
:meth:`Engine.call`, which only put commands on the engine's inbox (thread-safe). The
engine answers each request through its :class:`RequestStream`, an asyncio queue filled
with ``loop.call_soon_threadsafe``; errors travel as :class:`Failed` values and are
raised on the HTTP side. Each loop iteration is one step: take commands, admit, plan,
run one batched forward pass, hand out the tokens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from backends.base import (
    Backend,
    BackendError,
    BackendPlugin,
    Capabilities,
    Delta,
    LoadRequest,
    OutOfMemory,
    Work,
)
from server.engine.inbox import STOP, Abort, Call, CancelAll, Prepared, RequestStream, Submit
from server.engine.metrics import Metrics
from server.engine.requests import (
    Accepted,
    Admitted,
    EngineRequest,
    EventSink,
    Failed,
    Finished,
    FinishReason,
    GenerationRequest,
    TextDelta,
)
from server.engine.scheduler import QueueFullError, Scheduler, SeqState
from server.engine.sequences import Active, prepare
from server.engine.speculation import Speculation
from server.errors import (
    HearthError,
    InternalError,
    ModelUnavailable,
    QueueFull,
    WrongModelTask,
)

log = logging.getLogger("hearth.engine")
MAX_STEP_ERRORS = 3
PREPARE_INLINE_CHARS = 32_768  # larger prompts are rendered and tokenized off the step loop
RETRY_AFTER_S = 5  # a request refused for memory: running ones free some within seconds
T = TypeVar("T")


def _text_size(request: GenerationRequest) -> int:
    size = len(request.prompt or "")
    if request.messages is not None:
        size += sum(len(m.content) for m in request.messages)
    if request.fim is not None:
        size += len(request.fim.prefix) + len(request.fim.suffix)
        size += sum(len(text) for _, text in request.fim.extra)
    return size


def wrong_kind(model: str, serves: str) -> WrongModelTask:
    """A request of a kind this engine's model does not serve (the routes check the
    model's task first; this is the engine's own guard)."""
    return WrongModelTask(f"model {model!r} {serves}; it cannot serve this request",
                          param="model")  # fmt: skip


class EngineState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class Engine:
    def __init__(
        self,
        name: str,
        plugin: BackendPlugin,
        load: LoadRequest,
        *,
        metrics: Metrics,
        max_waiting: int,
        default_max_tokens: int,
    ) -> None:
        self.name = name
        self.state = EngineState.LOADING
        self.error: str | None = None
        self.backend: Backend | None = None
        self._plugin = plugin
        self._load = load
        self._metrics = metrics
        self._max_waiting = max_waiting
        self._default_max_tokens = default_max_tokens
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"engine-{name}", daemon=True)
        self._active: dict[int, Active] = {}
        self._by_request: dict[str, int] = {}
        self._next_seq = 0
        self._scheduler: Scheduler | None = None
        self._speculation: Speculation | None = None
        self._spec_totals: dict[str, list[int]] = {}  # drafter: [drafted, accepted]
        self._step_errors = 0
        self._widest_step = 0  # the most sequences one step has advanced
        # Prompts are rendered and tokenized here, so that a huge one does not stall the
        # step loop (llama.cpp's tokenizer releases the GIL); results come back in order.
        self._prep = concurrent.futures.ThreadPoolExecutor(1, f"prepare-{name}")
        self._preparing: dict[str, Submit] = {}

    # -- the HTTP side (any thread) --------------------------------------------------

    @property
    def capabilities(self) -> Capabilities | None:
        return self.backend.capabilities if self.backend else None

    @property
    def vocab_size(self) -> int:
        return self.backend.capabilities.vocab_size if self.backend else 0

    def start(self) -> None:
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def submit(self, request: EngineRequest, loop: asyncio.AbstractEventLoop) -> RequestStream:
        if self.state is not EngineState.READY:
            raise ModelUnavailable(
                f"model {self.name!r} is {self.state.value}"
                + (f": {self.error}" if self.error else ""),
                retry_after=5,
            )
        stream = RequestStream(request.request_id, loop)
        self.enqueue(request, stream)
        return stream

    def enqueue(self, request: EngineRequest, sink: EventSink) -> None:
        """Queue a request whose events go to ``sink`` (the runner's outbox)."""
        self._inbox.put(Submit(request, sink))

    def abort(self, request_id: str) -> None:
        """The client went away: drop its sequence before the next step."""
        self._inbox.put(Abort(request_id))

    def call(self, fn: Callable[[Backend], T]) -> concurrent.futures.Future[T]:
        """Run ``fn(backend)`` on the engine thread (tokenize and the like)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self.state is not EngineState.READY:
            future.set_exception(ModelUnavailable(f"model {self.name!r} is {self.state.value}"))
        else:
            self._inbox.put(Call(fn, future))
        return future

    def invoke(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``backend.method(*args, **kwargs)`` on the engine thread."""
        return self.call(lambda backend: getattr(backend, method)(*args, **kwargs))

    def join(self) -> None:
        self._thread.join()

    def died_serving(self) -> bool:
        return self.state is EngineState.FAILED and self.backend is not None

    def check(self) -> None:
        """A thread cannot be replaced; a hung step shows as a stream past its timeout."""

    @property
    def pid(self) -> int | None:
        return None  # in this process

    def resident_bytes(self) -> int | None:
        return None  # this process holds every in-process model together

    def cancel_all(self, message: str) -> None:
        """End every request of this engine with a 503 error event."""
        self._inbox.put(CancelAll(message))

    def stop(self, timeout: float = 30.0) -> None:
        self._inbox.put(STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the engine thread -----------------------------------------------------------

    def _main(self) -> None:
        try:
            self.backend = self._plugin.load(self._load)
        except Exception as exc:
            self.error = str(exc) if isinstance(exc, BackendError) else f"load failed: {exc!r}"
            self.state = EngineState.FAILED
            log.error("model %s failed to load: %s", self.name, self.error)
            self._loaded.set()
            return
        self._setup(self.backend.capabilities)
        self.state = EngineState.READY
        self._loaded.set()
        try:
            self._run(self.backend)
        except Exception:
            log.exception("engine %s died", self.name)
            self.error = "the engine failed; see the server log"
            self.state = EngineState.FAILED
            self._fail_all(InternalError("the model's engine failed"))
        finally:
            if self.state is EngineState.READY:
                self.state = EngineState.STOPPED
            self._prep.shutdown(wait=True, cancel_futures=True)
            self.backend.close()

    def _setup(self, caps: Capabilities) -> None:
        """The loaded model's scheduling, before the engine is ready."""
        self._scheduler = Scheduler(
            max_running=caps.max_sequences,
            kv_capacity=caps.context_length,
            step_tokens=max(self._load.batch_tokens, caps.max_sequences),
            max_waiting=self._max_waiting,
        )
        self._metrics.set("hearth_kv_cache_capacity_tokens", caps.context_length, model=self.name)
        spec = self._load.speculative
        if caps.drafters and spec is not None:
            self._speculation = Speculation(max_draft=spec.max_draft, max_batch=spec.max_batch)

    def _run(self, backend: Backend) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        while True:
            if not self._drain(block=not scheduler.has_work()):
                self._fail_all(ModelUnavailable("the server is shutting down", retry_after=5))
                return
            for seq in scheduler.admit():
                self._admit(backend, seq)
            for seq_id in scheduler.out_of_room():
                self._end(seq_id, finished=FinishReason.LENGTH)
            work = scheduler.plan()
            if work and self._speculation is not None:
                work = self._speculation.plan(work, self._draft_room, scheduler.step_tokens)
            if work:
                self._step(backend, scheduler, work)
            self._gauges(backend, scheduler)

    def _admit(self, backend: Backend, seq: SeqState) -> None:
        """Start a sequence in the backend; if that raises, only this request fails."""
        active = self._active[seq.seq_id]
        try:
            seq.fed = backend.add(seq.seq_id, active.prompt, active.request.sampling)
        except OutOfMemory as exc:
            self._end(seq.seq_id, failed=ModelUnavailable(str(exc), retry_after=RETRY_AFTER_S))
            return
        except Exception:
            log.exception("request %s could not start", active.request.request_id)
            self._end(seq.seq_id, failed=InternalError("the model could not start this request"))
            return
        active.on_admitted(seq.fed, self._metrics)
        active.stream.push(Admitted(seq.fed))

    def _draft_room(self, seq_id: int) -> int:
        """The most a sequence may draft this step: none where it opted out or a
        reasoning budget is counting its tokens (the engine may force its close)."""
        active = self._active.get(seq_id)
        if active is None or active.request.speculative is False or active.budget is not None:
            return 0
        assert self._scheduler is not None
        return self._scheduler.draft_room(seq_id)

    def _step(self, backend: Backend, scheduler: Scheduler, work: list[Work]) -> None:
        started = time.perf_counter()
        try:
            deltas, failures = backend.step(work)
        except Exception:
            # The batch's requests fail with an error event; the next ones are served.
            # A backend that keeps raising is broken: the engine dies (readiness 503,
            # the process exits for its supervisor to restart it).
            self._step_errors += 1
            log.exception("step failed (%d in a row)", self._step_errors)
            if self._step_errors >= MAX_STEP_ERRORS:
                raise
            for w in work:
                if w.seq_id in self._active:
                    self._end(w.seq_id, failed=InternalError("the model failed on this batch"))
            return
        self._step_errors = 0
        self._count_step(len(work))
        scheduler.advance(work, self._speculated(work, deltas, time.perf_counter() - started))
        for failure in failures:
            for seq_id in failure.seq_ids:
                self._end(seq_id, failed=InternalError(failure.message), release=False)
        for delta in deltas:
            active = self._active.get(delta.seq_id)
            if active is None:
                continue  # ended by an earlier token of this step (a speculative one)
            reason = active.on_delta(delta, self._metrics)
            if reason is None and active.force_due:
                reason = self._force(backend, scheduler, delta.seq_id, active)
            if reason is not None:
                self._end(delta.seq_id, finished=reason)

    def _speculated(self, work: list[Work], deltas: list[Delta], seconds: float) -> dict[int, int]:
        """Record a step's verified drafts (the policy's rates and costs, the metrics);
        returns the draft tokens each sequence had accepted."""
        accepted: dict[int, int] = {}
        drafted = 0
        for delta in deltas:
            if not delta.drafted:
                continue
            drafted += delta.drafted
            accepted[delta.seq_id] = delta.accepted
            m, kind = self._metrics, delta.drafter
            m.inc("hearth_spec_draft_tokens_total", delta.drafted, model=self.name, drafter=kind)
            m.inc("hearth_spec_accepted_tokens_total", delta.accepted, model=self.name,
                  drafter=kind)  # fmt: skip
            m.inc("hearth_spec_drafts_total", model=self.name, drafter=kind)
            totals = self._spec_totals.setdefault(kind, [0, 0])
            totals[0] += delta.drafted
            totals[1] += delta.accepted
            rate = totals[1] / totals[0]
            m.set("hearth_spec_acceptance_rate", rate, model=self.name, drafter=kind)
            if self._speculation is not None:
                self._speculation.record(delta.seq_id, delta.drafted, delta.accepted)
        if self._speculation is not None:
            tokens = sum(w.n_tokens for w in work) + drafted
            self._speculation.step_took(tokens, seconds, len(work))
        return accepted

    def _force(
        self, backend: Backend, scheduler: Scheduler, seq_id: int, active: Active
    ) -> FinishReason | None:
        """The reasoning budget is spent: the close text is fed in place of the next
        sample (where a step has room for it), and is output."""
        if not scheduler.force(seq_id, len(active.close_tokens)):
            active.force_due = False
            return None
        backend.force(seq_id, active.close_tokens)
        return active.on_forced()

    def _count_step(self, n: int) -> None:
        self._metrics.inc("hearth_steps_total", model=self.name)
        self._metrics.inc("hearth_step_sequences_total", n, model=self.name)
        if n > self._widest_step:
            self._widest_step = n
            self._metrics.set("hearth_step_sequences_max", n, model=self.name)

    def _drain(self, *, block: bool) -> bool:
        """Handle inbox commands; wait for one when idle. False means stop."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if item is STOP:
                return False
            if isinstance(item, Submit):
                self._prepare(item)
            elif isinstance(item, Prepared):
                self._accept(item)
            elif isinstance(item, Abort):
                self._abort(item.request_id)
            elif isinstance(item, Call):
                self._call(item)
            elif isinstance(item, CancelAll):
                self._fail_all(ModelUnavailable(item.message, retry_after=10))

    def _prepare(self, item: Submit) -> None:
        assert self.backend is not None
        if not isinstance(item.request, GenerationRequest):
            self._reject(item, wrong_kind(self.name, "generates text"))
            return
        seq_id, self._next_seq = self._next_seq, self._next_seq + 1
        args = (seq_id, item.request, item.stream, self.backend, self._default_max_tokens)
        self._prepare_with(item, seq_id, _text_size(item.request), prepare, *args)

    def _prepare_with(
        self, item: Submit, seq_id: int, size: int, fn: Callable[..., Any], *args: Any
    ) -> None:
        """Render and tokenize (``fn(*args)``): here when the text is small (so requests
        that arrive together start together), on the preparing thread when it is large;
        the result goes to :meth:`_accept` either way."""
        self._preparing[item.request.request_id] = item
        if size < PREPARE_INLINE_CHARS:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            try:
                future.set_result(fn(*args))
            except Exception as exc:
                future.set_exception(exc)
            self._accept(Prepared(item, seq_id, future))
            return
        future = self._prep.submit(fn, *args)
        future.add_done_callback(lambda f: self._inbox.put(Prepared(item, seq_id, f)))

    def _accept(self, prepared: Prepared) -> None:
        """Queue a prepared request, or refuse it (its preparation failed, the queue is
        full)."""
        item = prepared.submit
        if self._preparing.pop(item.request.request_id, None) is None:
            return  # aborted, or failed by cancel_all, while it was being prepared
        try:
            self._queue(prepared)
        except QueueFullError:
            waiting = f"model {self.name!r} has {self._max_waiting} requests waiting"
            self._reject(item, QueueFull(f"{waiting}; retry later", retry_after=2))
        except HearthError as exc:
            self._reject(item, exc)
        except Exception:
            log.exception("request %s could not be prepared", item.request.request_id)
            self._reject(item, InternalError("the request could not be prepared"))

    def _queue(self, prepared: Prepared) -> None:
        """Hand a prepared request to the scheduler; it is accepted. Raises what
        ``prepare`` raised, or QueueFullError."""
        assert self._scheduler is not None
        item, seq_id = prepared.submit, prepared.seq_id
        active, seq = prepared.future.result()
        self._scheduler.add(seq)
        self._active[seq_id] = active
        self._by_request[item.request.request_id] = seq_id
        item.stream.push(Accepted(len(active.prompt), reasoning_open=active.reasoning_open))

    def _reject(self, item: Submit, exc: HearthError) -> None:
        """Refuse a request before it is queued; it fails alone."""
        reason = exc.code or type(exc).__name__
        self._metrics.inc("hearth_requests_rejected_total", model=self.name, reason=reason)
        item.stream.push(Failed(exc))

    def _abort(self, request_id: str) -> None:
        if self._preparing.pop(request_id, None) is not None:
            return
        seq_id = self._by_request.get(request_id)
        if seq_id is not None:
            self._end(seq_id, aborted=True)

    def _call(self, item: Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        assert self.backend is not None
        try:
            item.future.set_result(item.fn(self.backend))
        except Exception as exc:
            item.future.set_exception(exc)

    def _end(
        self,
        seq_id: int,
        *,
        finished: FinishReason | None = None,
        failed: HearthError | None = None,
        aborted: bool = False,
        release: bool = True,
    ) -> None:
        assert self.backend is not None and self._scheduler is not None
        active = self._active.pop(seq_id)
        self._by_request.pop(active.request.request_id, None)
        self._scheduler.finish(seq_id)
        if self._speculation is not None:
            self._speculation.forget(seq_id)
        if release:
            self.backend.release(seq_id)
        outcome = "aborted" if aborted else "error" if failed else str(finished and finished.value)
        self._metrics.inc("hearth_requests_total", model=self.name, finish_reason=outcome)
        if failed is not None:
            active.stream.push(Failed(failed))
        elif finished is not None:
            tail = active.stops.flush()
            if tail:
                active.stream.push(TextDelta(tail))
            active.stream.push(Finished(finished, active.usage(), active.stops.matched))

    def _fail_all(self, error: HearthError) -> None:
        preparing, self._preparing = self._preparing, {}
        for item in preparing.values():
            item.stream.push(Failed(error))
        for seq_id in list(self._active):
            try:
                self._end(seq_id, failed=error)
            except Exception:
                log.exception("cleanup of sequence %d failed", seq_id)

    def _gauges(self, backend: Backend, scheduler: Scheduler) -> None:
        m, name = self._metrics, self.name
        m.set("hearth_requests_running", len(scheduler.running), model=name)
        m.set("hearth_requests_waiting", len(scheduler.waiting), model=name)
        m.set("hearth_kv_cache_used_tokens", backend.kv_cache_used(), model=name)
        m.set("hearth_kv_cache_reserved_tokens", scheduler.kv_reserved, model=name)
        stats = getattr(backend, "prompt_cache_stats", None)
        if stats is not None:
            for key, value in stats().items():
                m.set(f"hearth_prompt_cache_{key}", value, model=name)
