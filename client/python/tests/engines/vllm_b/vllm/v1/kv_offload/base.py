"""Stand-in for vllm.v1.kv_offload.base of the bool | None tiering API
(vllm-project/vllm @ 041410b9; see ../../../../README): the names
kvtier.vllm and its test use, nothing more.  That API has no
LookupResult."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NewType

OffloadKey = NewType("OffloadKey", bytes)


def make_offload_key(block_hash: bytes, group_idx: int) -> OffloadKey:
    return OffloadKey(block_hash + group_idx.to_bytes(4, "big", signed=False))


@dataclass
class ReqContext:
    req_id: str
    kv_transfer_params: dict | None = None
    kv_hints: Any = None


@dataclass
class RequestOffloadingContext:
    pass
