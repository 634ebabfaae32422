"""The runner's fast hook path: addon hooks from a table, synchronous ones run under the lock.

    use_fast_hooks(master)   # the runner only; mitmdump and mitmweb keep mitmproxy's path

For every hook a proxy layer starts, mitmproxy's connection handler (`ConnectionHandler.
server_event`) creates a task (`hook_task`) that sends it through `AddonManager.handle_lifecycle`:
`trigger_event` walks every addon and its children with `getattr` under a `safecall` context
manager per addon, then an `update` event the same way, and the layer hears that the hook is
done from another `server_event`, which waits for the connection's `_server_event_lock` (held by
the `server_event` that started the hook) and so for another turn of the event loop. With
mitmproxy's eager task factory the handlers themselves already run at once, under that lock.

Here, in the runner's process and for its master only:

- a `HookTable` keeps, per hook name, the bound handlers in mitmproxy's order (each addon of the
  chain, then its children depth first), grouped by addon of the chain as `safecall` contains
  them; a hook nobody handles costs a dictionary look-up. It is rebuilt when addons are added or
  removed through the addon manager; an addon that swapped its handlers or children without it
  would go unseen (mitmproxy's `script` addon does; the runner does not load it).
- `ProxyConnectionHandler.server_event` is replaced by a copy of mitmproxy's (`_server_event`
  below) that runs a hook whose handlers are all synchronous inline, exactly where mitmproxy's
  eager task would run them, and then hands `HookCompleted` to the layer under the same lock
  acquisition, after the event that started it, in the order mitmproxy's waiting tasks would.
  It also joins consecutive `SendData` to one connection (a response's head and body) into one
  write, so one `send()`; any other command writes what waits first, so the order is kept.

Same as mitmproxy's path: the handlers called and their order; an exception contained per addon
of the chain and logged as `safecall` logs it; `AddonHalt` stops the later addons of that event
(the `update` event still runs); `OptionsError` escapes into a task as it does from `hook_task`;
the timeout watchdog sees the activity. mitmproxy's own path (`hook_task`) runs a hook when any
handler of it or of `update` is a coroutine function (async hooks, `@concurrent`), when its flow
is intercepted, or when it has other than one argument; a handler that returns an awaitable, or
a flow intercepted by a handler, has the rest of the hook finished in a task as `hook_task` would;
and while such a task of the connection is pending, completions go through the lock one task
each, as mitmproxy's do, so that the loop runs the pending hook in between as it would.
Each piece of mitmproxy's source that this reproduces is fingerprinted in `FAST_HOOK_REACHES`:
after an upgrade that changes any of them, the runner logs one warning and takes mitmproxy's own
hook path until this module is reviewed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from mitmproxy import addonmanager, exceptions, flow, hooks, master
from mitmproxy.proxy import commands, events, mode_servers, server
from mitmproxy.utils import asyncio_utils

from ..checking import _STOCK, Reach, Shortcut, stock_method

_TABLE = "_sidecar_hook_table"  # on the runner's AddonManager: its HookTable
_IN_FLIGHT = "_sidecar_hook_tasks"  # on a connection handler: its hook tasks not done yet

Handler = Callable[..., object]


@dataclass(frozen=True, slots=True)
class HookHandlers:
    """One hook's handlers: per addon of the chain that has any, in mitmproxy's order."""

    groups: tuple[tuple[Handler, ...], ...]
    synchronous: bool  # no coroutine function among them: they may run inline


_NOBODY = HookHandlers((), True)


class HookTable:
    """Each hook's bound handlers, looked up once; rebuilt when the addons change."""

    def __init__(self, manager: addonmanager.AddonManager) -> None:
        self._manager = manager
        self._entries: dict[str, HookHandlers] = {}

    def handlers(self, name: str) -> HookHandlers:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = self._collect(name)
        return entry

    def invalidate(self) -> None:
        self._entries = {}

    def _collect(self, name: str) -> HookHandlers:
        # As AddonManager._iter_hooks, for each addon of the chain.
        groups = []
        synchronous = True
        for addon in self._manager.chain:
            group: list[Handler] = []
            for part in addonmanager.traverse([addon]):
                func = getattr(part, name, None)
                if not func or isinstance(func, types.ModuleType):
                    continue
                if not callable(func):  # mitmproxy raises when it gets there, in safecall
                    group.append(_not_callable(name, part))
                    break
                synchronous = synchronous and not inspect.iscoroutinefunction(func)
                group.append(func)
            if group:
                groups.append(tuple(group))
        return HookHandlers(tuple(groups), synchronous) if groups else _NOBODY


def _not_callable(name: str, part: object) -> Handler:
    def _iter_hooks(*_args: object) -> None:  # named as the frame mitmproxy's log shows
        raise exceptions.AddonManagerError(f"Addon handler {name} ({part}) not callable")

    return _iter_hooks


def use_fast_hooks(lean: master.Master) -> HookTable:
    """Give this master the fast hook path (and the process the replaced `server_event`)."""
    manager = lean.addons
    table = HookTable(manager)
    setattr(manager, _TABLE, table)
    for method in ("add", "register", "remove", "clear"):
        setattr(manager, method, _invalidating(getattr(manager, method), table))
    if not hasattr(mode_servers.ProxyConnectionHandler.server_event, _STOCK):
        setattr(_server_event, _STOCK, server.ConnectionHandler.server_event)
        mode_servers.ProxyConnectionHandler.server_event = _server_event  # type: ignore[method-assign,assignment]
    return table


def hook_table(lean: master.Master) -> HookTable | None:
    table: HookTable | None = getattr(lean.addons, _TABLE, None)
    return table


def _invalidating(method: Callable[..., Any], table: HookTable) -> Callable[..., Any]:
    def changed(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            table.invalidate()

    return changed


# --- running handlers as AddonManager.trigger_event does, without a task or safecall


@dataclass(slots=True)
class _Pending:
    """Where a handler returned an awaitable: the rest of the event runs in a task."""

    groups: tuple[tuple[Handler, ...], ...]
    args: tuple[object, ...]
    group: int
    handler: int
    awaitable: Awaitable[object]


def run_handlers(handlers: HookHandlers, args: tuple[object, ...]) -> _Pending | None:
    """Call each handler as trigger_event does; None when done, else what is left to await."""
    groups = handlers.groups
    for group_number, group in enumerate(groups):
        try:
            for number, func in enumerate(group):
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    return _Pending(groups, args, group_number, number, result)
        except exceptions.AddonHalt:
            return None
        except exceptions.OptionsError:  # safecall lets it through, and so does trigger_event
            raise
        except Exception as e:
            _log_addon_error(e)
    return None


async def finish_handlers(pending: _Pending) -> None:
    """The rest of an event after an awaitable, as trigger_event and invoke_addon do."""
    groups, args = pending.groups, pending.args
    first = True
    for group in groups[pending.group :]:
        try:
            if first:
                first = False
                await pending.awaitable
                rest = group[pending.handler + 1 :]
            else:
                rest = group
            for func in rest:
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception as e:
            _log_addon_error(e)


def _log_addon_error(error: Exception) -> None:
    # As safecall: the traceback from the handler on, on mitmproxy's addonmanager logger.
    traceback = error.__traceback__
    assert traceback is not None
    traceback = traceback.tb_next or traceback  # our own frame
    traceback = addonmanager.cut_traceback(traceback, "invoke_addon_sync")
    traceback = addonmanager.cut_traceback(traceback, "invoke_addon")
    addonmanager.logger.error(
        f"Addon error: {error}",
        exc_info=(type(error), error, traceback),
    )


# --- the connection handler's side


_ARGUMENTS: dict[type[hooks.Hook], tuple[str, ...]] = {}


def _argument_names(hook: hooks.Hook) -> tuple[str, ...]:
    # hooks.Hook.args() walks dataclasses.fields() on each call; the names never change.
    kind = type(hook)
    names = _ARGUMENTS.get(kind)
    if names is None:
        names = _ARGUMENTS[kind] = tuple(f.name for f in dataclasses.fields(kind))  # type: ignore[arg-type]
    return names


def run_hook_inline(
    handler: mode_servers.ProxyConnectionHandler,
    hook: commands.StartHook,
    table: HookTable,
    completed: collections.deque[commands.StartHook],
) -> bool:
    """Run `hook` as ProxyConnectionHandler.handle_hook would; False: leave it to mitmproxy.

    A blocking hook that finishes here is appended to `completed`, for the caller to tell the
    layer; one that cannot finish without awaiting is finished in a task, as hook_task does.
    """
    names = _argument_names(hook)
    if len(names) != 1:  # handle_hook supports single-argument hooks only (and raises)
        return False
    handlers = table.handlers(hook.name)
    data = getattr(hook, names[0])
    is_flow = isinstance(data, flow.Flow)
    update = table.handlers("update") if is_flow else _NOBODY
    if not (handlers.synchronous and update.synchronous):
        return False  # async hooks, @concurrent: mitmproxy's own path
    if is_flow and data.intercepted:
        return False  # waits for resume: mitmproxy's own path
    pending_update: _Pending | None = None
    try:
        pending = run_handlers(handlers, (data,)) if handlers.groups else None
        if pending is None and update.groups:
            pending_update = run_handlers(update, ([data],))
    except exceptions.OptionsError as e:
        # From hook_task it would end that task, unhandled, and the hook would never complete.
        _watchdog_after_hook(handler)
        asyncio_utils.create_task(
            _reraise(e),
            name=f"handle_hook({hook.name})",
            keep_ref=True,
            client=handler.client.peername,
        )
        return True
    if pending is not None or pending_update is not None or (is_flow and data.intercepted):
        _track(
            handler,
            asyncio_utils.create_task(
                _finish_hook(
                    handler,
                    hook,
                    data,
                    pending=pending,
                    pending_update=pending_update,
                    update=update if pending else None,  # not begun yet: all of it
                ),
                name=f"handle_hook({hook.name})",
                keep_ref=True,
                client=handler.client.peername,
            ),
        )
        return True
    _watchdog_after_hook(handler)
    if hook.blocking:
        completed.append(hook)
    return True


def _watchdog_after_hook(handler: mode_servers.ProxyConnectionHandler) -> None:
    # handle_hook runs under timeout_watchdog.disarm(); leaving it records activity unless
    # another hook of the connection still holds it.
    watchdog = handler.timeout_watchdog
    if watchdog.blocker == 0:
        watchdog.register_activity()


async def _reraise(error: Exception) -> None:
    raise error


async def _finish_hook(
    handler: mode_servers.ProxyConnectionHandler,
    hook: commands.StartHook,
    data: object,
    *,
    pending: _Pending | None,
    pending_update: _Pending | None,
    update: HookHandlers | None,
) -> None:
    """The rest of handle_hook, then hook_task's completion, for a hook begun inline."""
    with handler.timeout_watchdog.disarm():
        if pending is not None:
            await finish_handlers(pending)
        if update is not None and update.groups:
            rest = run_handlers(update, ([data],))
            if rest is not None:
                await finish_handlers(rest)
        if pending_update is not None:
            await finish_handlers(pending_update)
        if isinstance(data, flow.Flow):
            await data.wait_for_resume()
    if hook.blocking:
        await handler.server_event(events.HookCompleted(hook))


async def _server_event(self: mode_servers.ProxyConnectionHandler, event: events.Event) -> None:
    """mitmproxy's ConnectionHandler.server_event, with inline hooks for a fast-path master."""
    table: HookTable | None = getattr(self.master.addons, _TABLE, None)
    if table is None:
        await server.ConnectionHandler.server_event(self, event)
        return
    async with self._server_event_lock:
        # No `await` beyond this point (as in mitmproxy's).
        completed: collections.deque[commands.StartHook] = collections.deque()
        _handle_event(self, event, table, completed)
        while completed:  # each as mitmproxy's waiting hook task would: in turn, on its own
            if self.__dict__.get(_IN_FLIGHT):
                # A hook of this connection awaits something: mitmproxy would let the loop run
                # it before each completion (each waits for the lock), so do as mitmproxy does.
                for hook in completed:
                    _track(
                        self,
                        asyncio_utils.create_task(
                            self.server_event(events.HookCompleted(hook)),
                            name=f"handle_hook({hook.name})",
                            keep_ref=True,
                            client=self.client.peername,
                        ),
                    )
                return
            _handle_event(self, events.HookCompleted(completed.popleft()), table, completed)


def _track(handler: mode_servers.ProxyConnectionHandler, task: asyncio.Task[None]) -> None:
    if not task.done():  # eager: it may have finished already
        tasks: set[asyncio.Task[None]] = handler.__dict__.setdefault(_IN_FLIGHT, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _handle_event(  # noqa: PLR0912  # a copy of mitmproxy's, branch for branch
    self: mode_servers.ProxyConnectionHandler,
    event: events.Event,
    table: HookTable,
    completed: collections.deque[commands.StartHook],
) -> None:
    # Copied from mitmproxy 12.3.1's ConnectionHandler.server_event (inside its lock); the
    # changes are the StartHook branch and the writes: consecutive SendData to one connection
    # (a response's head and body) go out in one write, one send() instead of one each.
    # STOCK_FINGERPRINTS notices when mitmproxy's changes.
    self.timeout_watchdog.register_activity()
    writes = _Writes()
    try:
        layer_commands = self.layer.handle_event(event)
        for command in layer_commands:
            if isinstance(command, commands.SendData):
                if command.connection in self.transports:
                    writer = self.transports[command.connection].writer
                    assert writer
                    writes.add(writer, command.data)
                continue
            writes.flush()  # before anything else the layer asks for, in its order
            if isinstance(command, commands.OpenConnection):
                assert command.connection not in self.transports
                handler = asyncio_utils.create_task(
                    self.open_connection(command),
                    name=f"server connection handler {command.connection.address}",
                    keep_ref=False,
                    client=self.client.peername,
                )
                self.transports[command.connection] = server.ConnectionIO(handler=handler)
            elif isinstance(command, commands.RequestWakeup):
                task = asyncio_utils.create_task(
                    self.wakeup(command),
                    name=f"wakeup timer ({command.delay:.1f}s)",
                    keep_ref=False,
                    client=self.client.peername,
                )
                assert task is not None
                self.wakeup_timer.add(task)
            elif (
                isinstance(command, commands.ConnectionCommand)
                and command.connection not in self.transports
            ):
                pass  # The connection has already been closed.
            elif isinstance(command, commands.CloseTcpConnection):
                self.close_connection(command.connection, command.half_close)
            elif isinstance(command, commands.CloseConnection):
                self.close_connection(command.connection, False)
            elif isinstance(command, commands.StartHook):
                if not run_hook_inline(self, command, table, completed):
                    _track(
                        self,
                        asyncio_utils.create_task(
                            self.hook_task(command),
                            name=f"handle_hook({command.name})",
                            keep_ref=True,
                            client=self.client.peername,
                        ),
                    )
            elif isinstance(command, commands.Log):
                self.log(command.message, command.level)
            else:
                raise RuntimeError(f"Unexpected command: {command}")
        writes.flush()
    except Exception:
        writes.flush()  # what the layer sent before it failed, as mitmproxy's would have
        self.log("mitmproxy has crashed!", logging.ERROR, exc_info=True)


class _Writer(Protocol):  # asyncio's StreamWriter or mitmproxy_rs's Stream
    def is_closing(self) -> bool: ...
    def write(self, data: bytes) -> None: ...


class _Writes:
    """SendData held back while the next command sends to the same connection."""

    __slots__ = ("chunks", "writer")

    def __init__(self) -> None:
        self.writer: _Writer | None = None
        self.chunks: list[bytes] = []

    def add(self, writer: _Writer, data: bytes) -> None:
        if writer is not self.writer:
            self.flush()
            self.writer = writer
        self.chunks.append(data)

    def flush(self) -> None:
        writer = self.writer
        if writer is None:
            return
        chunks, self.chunks, self.writer = self.chunks, [], None
        # No await since the first of them: nothing can have closed the writer in between.
        if not writer.is_closing():
            writer.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))


# --- its checks


def fingerprint(function: object) -> str:
    """A digest of a function's source, whitespace ignored."""
    source = inspect.getsource(function)  # type: ignore[arg-type]
    return hashlib.sha256("".join(source.split()).encode()).hexdigest()[:16]


def _stock_pieces() -> Iterator[tuple[str, object]]:
    yield "ConnectionHandler.server_event", server.ConnectionHandler.server_event
    yield "ConnectionHandler.hook_task", server.ConnectionHandler.hook_task
    yield "ProxyConnectionHandler.handle_hook", mode_servers.ProxyConnectionHandler.handle_hook
    yield "TimeoutWatchdog.disarm", inspect.unwrap(server.TimeoutWatchdog.disarm)
    yield "AddonManager.handle_lifecycle", addonmanager.AddonManager.handle_lifecycle
    yield "AddonManager.trigger_event", addonmanager.AddonManager.trigger_event
    yield "AddonManager.invoke_addon", addonmanager.AddonManager.invoke_addon
    yield "AddonManager._iter_hooks", addonmanager.AddonManager._iter_hooks
    yield "addonmanager.traverse", addonmanager.traverse
    yield "addonmanager.safecall", inspect.unwrap(addonmanager.safecall)
    yield "addonmanager.cut_traceback", addonmanager.cut_traceback
    yield "Flow.wait_for_resume", flow.Flow.wait_for_resume
    yield "Flow.intercept", flow.Flow.intercept
    yield "hooks.Hook.args", hooks.Hook.args


# What this module reproduces, as mitmproxy 12.3.1 has it. When an upgrade changes one, read the
# new source, bring this module in line (and its tests), then update the fingerprint.
STOCK_FINGERPRINTS = {
    "ConnectionHandler.server_event": "4b1672648073e4a4",
    "ConnectionHandler.hook_task": "4f89ffbcdd1ddb73",
    "ProxyConnectionHandler.handle_hook": "b2090322d744a161",
    "TimeoutWatchdog.disarm": "4e1d661be2d51c46",
    "AddonManager.handle_lifecycle": "fb7038af2963e3d5",
    "AddonManager.trigger_event": "3345d5a6ca2757ed",
    "AddonManager.invoke_addon": "dd9ed3a27331ae9c",
    "AddonManager._iter_hooks": "86786dc1bb46390c",
    "addonmanager.traverse": "271e474ffd255f10",
    "addonmanager.safecall": "6941eccf18721473",
    "addonmanager.cut_traceback": "c48bf8d921843f25",
    "Flow.wait_for_resume": "da5e03451de232c3",
    "Flow.intercept": "91d45d947578976a",
    "hooks.Hook.args": "78581e7f08673fcd",
}


def _check_stock_source(_lean: master.Master) -> str | None:
    for name, function in _stock_pieces():
        try:
            now = fingerprint(stock_method(function))  # type: ignore[arg-type]
        except (OSError, TypeError):
            return f"the source of {name} cannot be read to compare it"
        if now != STOCK_FINGERPRINTS.get(name):
            return (
                f"{name} is not the code the fast hook path reproduces "
                f"(fingerprint {now}, expected {STOCK_FINGERPRINTS.get(name)})"
            )
    return None


def _check_server_event(_lean: master.Master) -> str | None:
    current = getattr(mode_servers.ProxyConnectionHandler, "server_event", None)
    if current is None:
        return "ProxyConnectionHandler has no server_event() method"
    stock = stock_method(current)
    if stock is not server.ConnectionHandler.server_event:
        return "ProxyConnectionHandler.server_event is already replaced (or mitmproxy moved it)"
    if list(inspect.signature(stock).parameters) != ["self", "event"]:
        return f"ConnectionHandler.server_event{inspect.signature(stock)} is not (self, event)"
    if not inspect.iscoroutinefunction(stock):
        return "ConnectionHandler.server_event is no longer a coroutine function"
    return None


def _check_connection_handler(_lean: master.Master) -> str | None:
    """What the copy uses of the handler: its lock, layer, watchdog and helpers."""
    source = inspect.getsource(server.ConnectionHandler.__init__)
    for attribute in ("self._server_event_lock", "self.timeout_watchdog", "self.layer"):
        if attribute not in source:
            return f"ConnectionHandler.__init__ no longer sets {attribute}"
    for method in ("open_connection", "wakeup", "close_connection", "hook_task", "log"):
        if not callable(getattr(server.ConnectionHandler, method, None)):
            return f"ConnectionHandler has no {method}() method"
    if "self.blocker" not in inspect.getsource(server.TimeoutWatchdog.__init__):
        return "TimeoutWatchdog no longer counts its blockers in .blocker"
    return None


def _check_addon_manager(lean: master.Master) -> str | None:
    manager = lean.addons
    if not isinstance(getattr(manager, "chain", None), list):
        return "AddonManager.chain is not the list of addons"
    for method in ("add", "register", "remove", "clear"):
        if not callable(getattr(manager, method, None)):
            return f"AddonManager has no {method}() method"
    if getattr(hooks.UpdateHook, "name", None) != "update":
        return "the update hook is no longer named `update`"
    return None


def _check_eager_tasks(_lean: master.Master) -> str | None:
    # Inline hooks run where mitmproxy's hook task runs under its eager task factory.
    if "set_eager_task_factory()" not in inspect.getsource(master.Master.run):
        return "Master.run no longer installs the eager task factory"
    return None


FAST_HOOK_REACHES = (
    Reach(
        "mitmproxy's hook path (reproduced by the fast hooks)",
        _check_stock_source,
        shortcut=Shortcut.FAST_HOOKS,
    ),
    Reach(
        "ProxyConnectionHandler.server_event (replaced in the runner)",
        _check_server_event,
        shortcut=Shortcut.FAST_HOOKS,
    ),
    Reach(
        "ConnectionHandler's lock, layer and watchdog",
        _check_connection_handler,
        shortcut=Shortcut.FAST_HOOKS,
    ),
    Reach(
        "AddonManager.chain and its add/register/remove/clear",
        _check_addon_manager,
        shortcut=Shortcut.FAST_HOOKS,
    ),
    Reach("Master.run's eager task factory", _check_eager_tasks, shortcut=Shortcut.FAST_HOOKS),
)
