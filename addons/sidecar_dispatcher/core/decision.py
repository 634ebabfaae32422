"""Where one request goes and what changes on the way: the routing decision, as a value.

    decision = resolve(rules, headers, client_ip=..., path="/x", keep_host=False)   # resolve.py
    decision.label, decision.destination, decision.headers, decision.describe()

The proxy's addons hand the `Decision` itself to one another (observe/flow_decision.py). What
mitmweb shows and `diff` reads back from a recorded flow is its `as_metadata()` view, kept in
`flow.metadata[METADATA_KEY]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Destination, HeaderAppend, HeaderEdit, HeaderPatch, HeaderRemoval, Unmatched

METADATA_KEY = "dispatcher"  # flow.metadata[METADATA_KEY] holds Decision.as_metadata()
DEFAULT_LABEL = "default"  # how the default destination is named in logs, comments, metrics
UNMATCHED_LABEL = "unmatched"  # ... and the `unmatched` answer


def label_for(rule: str | None) -> str:
    """The name a decision goes by: its rule, or "default" when no rule matched."""
    return rule if rule is not None else DEFAULT_LABEL


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str | None  # None: the default destination, or the `unmatched` answer
    reason: str
    destination: Destination | None  # None: answered by the sidecar (`answer`)
    path: str  # the path (and query) sent upstream
    headers: tuple[HeaderEdit, ...]  # applied in this order; a later one wins
    response_headers: tuple[HeaderPatch | HeaderRemoval, ...] = ()
    timeout: float | None = None  # seconds until the response headers must arrive
    mirror: Destination | None = None  # where a copy of this request goes
    answer: Unmatched | None = None  # the sidecar's own answer, sent nowhere
    split_member: int | None = None  # with a split: the index of the member chosen
    split_sticky: bool = False  # ... chosen by the sticky header's value, not drawn
    by_route: bool = False  # `rule` names a route (else a rule of `rewrites`)
    # The request headers edited: `Name` set, `+Name` appended to, `-Name` removed. Computed
    # once: the metadata view and the access log both read it.
    patched_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = []
        for edit in self.headers:
            if isinstance(edit, HeaderRemoval):
                names.append(f"-{edit.name}")
            elif isinstance(edit, HeaderAppend):
                names.append(f"+{edit.name}")
            else:
                names.append(edit.name)
        object.__setattr__(self, "patched_names", tuple(dict.fromkeys(names)))

    @property
    def dispatched(self) -> bool:
        return self.rule is not None

    @property
    def label(self) -> str:
        if self.answer is not None:
            return UNMATCHED_LABEL
        return label_for(self.rule)

    def describe(self) -> str:
        """The flow comment shown in mitmweb: `dev → http://example.com`."""
        if self.answer is not None:
            return f"{self.label} → {self.answer.status} from the sidecar"
        return f"{self.label} → {self.destination}"

    def as_metadata(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "label": self.label,
            "reason": self.reason,
            "destination": self.destination.url if self.destination else None,
            "path": self.path,
            "headers_set": {e.name: e.value for e in self.headers if isinstance(e, HeaderPatch)},
            "patched": list(self.patched_names),
            "response_headers": [
                ["set", e.name, e.value] if isinstance(e, HeaderPatch) else ["remove", e.name, ""]
                for e in self.response_headers
            ],
            "timeout": self.timeout,
            "mirror": self.mirror.url if self.mirror else None,
            "answer": {"status": self.answer.status} if self.answer else None,
        }
