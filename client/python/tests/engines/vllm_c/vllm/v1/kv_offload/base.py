"""Stand-in for vllm.v1.kv_offload.base (vllm-project/vllm @ 0105e232, the
LookupResult API; see ../../../../README): the names kvtier.vllm and its
test use, with vLLM's signatures, nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, NewType

OffloadKey = NewType("OffloadKey", bytes)


def make_offload_key(block_hash: bytes, group_idx: int) -> OffloadKey:
    return OffloadKey(block_hash + group_idx.to_bytes(4, "big", signed=False))


def get_offload_block_hash(key: OffloadKey) -> bytes:
    return key[:-4]


def get_offload_group_idx(key: OffloadKey) -> int:
    return int.from_bytes(key[-4:], "big", signed=False)


class LookupResult(Enum):
    MISS = auto()
    HIT = auto()
    HIT_PENDING = auto()
    RETRY = auto()


class TierFilter(Enum):
    ALL = auto()


class OffloadPolicy(Enum):
    CHUNK_LEVEL = auto()


@dataclass
class ReqContext:
    req_id: str
    kv_transfer_params: dict | None = None
    kv_hints: Any = None
    load_tier_filter: TierFilter = TierFilter.ALL


@dataclass
class RequestOffloadingContext:
    policy: OffloadPolicy = OffloadPolicy.CHUNK_LEVEL


@dataclass
class ScheduleEndContext:
    new_req_ids: list = field(default_factory=list)
    preempted_req_ids: list = field(default_factory=list)
