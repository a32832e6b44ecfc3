"""Conversations: one store per conversation under `--stores`, one lock each, and the message log that
lets a client resend the whole history while only what is new is appended."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from megacontext.base import BaseModel
from megacontext.config import MegaConfig
from megacontext.prompts import FORMATS, Prompt, TurnFormat
from megacontext.runtime import MegaContext
from megacontext.serve.protocol import ApiError
from megacontext.serve.security import conversation_path
from megacontext.store import discard_side_file

CONVERSATION_HEADER = "X-MegaContext-Conversation"
MESSAGES = "messages.json"  # hashes of the messages already in a conversation's store


def message_hash(m: dict) -> str:
    return hashlib.sha256(json.dumps([m["role"], m["content"]]).encode()).hexdigest()[:16]


class Conversations:
    """Open sessions, one per conversation, each behind its own lock."""

    def __init__(self, root: Path, base: BaseModel, config: MegaConfig,
                 turn_format: TurnFormat = FORMATS["plain"]) -> None:
        self.root, self.base, self.config = Path(root).resolve(), base, config
        self.turn_format = turn_format
        self._sessions: dict[str, MegaContext] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, cid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(cid, threading.Lock())

    def path(self, cid: str, exists: bool = False) -> Path:
        """The store directory of `cid`, inside `root` (`ApiError` 400 otherwise); with `exists`, 404
        unless a store is there."""
        path = conversation_path(self.root, cid)
        if exists and not (path / "meta.json").exists():
            raise ApiError(404, f"unknown conversation {cid!r}", "conversation_not_found")
        return path

    def session(self, cid: str, create: bool) -> MegaContext:
        """The writable session of `cid`, opened (and with `create`, its store created) on first use."""
        with self._guard:
            if cid not in self._sessions:
                path = self.path(cid, exists=not create)
                self._sessions[cid] = MegaContext.open(path, self.base, self.config, create=True)
            return self._sessions[cid]

    def live(self, cid: str) -> MegaContext | None:
        """The session of `cid` if this server has one open (read-only routes never open one)."""
        with self._guard:
            return self._sessions.get(cid)

    def close(self) -> None:
        with self._guard:
            for s in self._sessions.values():
                s.close()
            self._sessions.clear()


def new_text(mc: MegaContext, messages: list[dict],
             turn_format: TurnFormat = FORMATS["plain"]) -> tuple[Prompt, list[str]]:
    """The prompt (text and stop strings) for the messages this store has not seen yet, and the updated
    message log."""
    seen = (mc.store.read_json(MESSAGES, required=("hashes",)) or {}).get("hashes", [])
    if not isinstance(seen, list) or not all(isinstance(h, str) for h in seen):
        seen = discard_side_file(mc.store.path / MESSAGES, "`hashes` is not a list of strings") or []
    hashes = [message_hash(m) for m in messages]
    fresh = messages[len(seen):] if hashes[:len(seen)] == seen and len(hashes) > len(seen) else messages
    # every logged exchange ends with the answer, so a store with a log ends with a reply
    prompt = turn_format.turn(mc.base, fresh, after_reply=bool(seen))
    return prompt, seen + [message_hash(m) for m in fresh]
