"""Banned addresses, as Core's `listbanned` and `setban` show and change them.

A peer that misbehaves (an invalid block, bad proof of work, a malformed or oversize message,
headers that do not connect, a flood) is banned for `DEFAULT_BAN_TIME`; `setban` adds and
removes bans by hand. The list is kept in a JSON file beside the chain (written aside and
renamed, so a kill leaves the old list or the new one), so a restart keeps the bans. As in Core,
a ban refuses inbound connections and automatic outbound ones; a connection the user asked for
(`--connect`, `addnode`) is made all the same.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from miner.errors import InvalidInput

log = logging.getLogger(__name__)
DEFAULT_BAN_TIME = 24 * 60 * 60  # Core's -bantime


@dataclass(frozen=True)
class Ban:
    subnet: str  # as Core shows it: "127.0.0.1/32"
    created: int
    until: int
    reason: str = ""


def normalize_subnet(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or subnet as `setban` takes it; InvalidInput for anything else."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidInput(f"Error: Invalid IP/Subnet: {text!r}") from None


class BanList:
    def __init__(self, path: Path | None = None):
        self.path = path
        self.bans: dict[str, Ban] = {}
        self._parsed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._parsed_for = -1
        self._parsed_keys: set[str] = set()
        if path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            rows = json.loads(self.path.read_text())
            for row in rows:
                ban = Ban(str(row["subnet"]), int(row["created"]), int(row["until"]), str(row.get("reason", "")))
                normalize_subnet(ban.subnet)
                self.bans[ban.subnet] = ban
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, InvalidInput) as exc:
            log.warning("ban list %s is unreadable (%s); starting with no bans", self.path, exc)
            self.bans.clear()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps([vars(b) for b in self.bans.values()], indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("ban list %s not saved: %s", self.path, exc)

    def sweep(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        gone = [k for k, b in self.bans.items() if b.until <= now]
        for k in gone:
            del self.bans[k]
        if gone:
            self._save()

    def ban(self, subnet: str, seconds: int = DEFAULT_BAN_TIME, absolute: bool = False,
            reason: str = "") -> Ban:
        net = str(normalize_subnet(subnet))
        now = int(time.time())
        ban = Ban(net, now, seconds if absolute else now + seconds, reason)
        self.bans[net] = ban
        self._save()
        return ban

    def unban(self, subnet: str) -> bool:
        net = str(normalize_subnet(subnet))
        if self.bans.pop(net, None) is None:
            return False
        self._save()
        return True

    def clear(self) -> None:
        self.bans.clear()
        self._save()

    def is_banned(self, host: str) -> bool:
        """Checked at every inbound connection: an exact address is one set lookup; only
        wider subnets are tested one by one (parsed once, when the ban is made)."""
        self.sweep()
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if str(ipaddress.ip_network(addr)) in self.bans:
            return True
        return any(addr in net for net in self._subnets())

    def _subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        if self._parsed_for != len(self.bans) or self._parsed_keys != self.bans.keys():
            self._parsed = [n for n in (ipaddress.ip_network(k) for k in self.bans) if n.num_addresses > 1]
            self._parsed_for, self._parsed_keys = len(self.bans), set(self.bans)
        return self._parsed

    def listed(self) -> list[dict]:
        """listbanned's answer."""
        self.sweep()
        now = int(time.time())
        return [{"address": b.subnet, "ban_created": b.created, "banned_until": b.until,
                 "ban_duration": b.until - b.created, "time_remaining": max(0, b.until - now)}
                for b in sorted(self.bans.values(), key=lambda b: b.created)]
