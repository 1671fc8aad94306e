"""Stand-in for vllm.v1.kv_offload.tiering.base of the bool | None API
(vllm-project/vllm @ 041410b9: JobMetadata with block_ids, get_finished;
see ../../../../../README): SecondaryTierManager and its job types with
vLLM's signatures, nothing more."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from vllm.v1.kv_offload.base import (OffloadKey, ReqContext,
                                     RequestOffloadingContext)


@dataclass
class JobMetadata:
    job_id: int
    keys: Collection[OffloadKey]
    block_ids: np.ndarray
    is_promotion: bool
    req_context: ReqContext


@dataclass
class JobResult:
    job_id: int
    success: bool


class SecondaryTierManager(ABC):
    def __init__(self, offloading_spec: "OffloadingSpec",
                 primary_kv_view: memoryview, tier_type: str) -> None:
        self._offloading_spec = offloading_spec
        self._primary_kv_view = primary_kv_view
        self.tier_type = tier_type

    @abstractmethod
    def lookup(self, key: OffloadKey, req_context: ReqContext
               ) -> bool | None:
        pass

    @abstractmethod
    def submit_store(self, job_metadata: JobMetadata) -> None:
        pass

    @abstractmethod
    def submit_load(self, job_metadata: JobMetadata) -> None:
        pass

    @abstractmethod
    def get_finished(self) -> Iterable[JobResult]:
        pass

    def touch(self, keys: Collection[OffloadKey], req_context: ReqContext):
        pass

    def get_request_offloading_context(self, req_context: ReqContext
                                       ) -> RequestOffloadingContext:
        return RequestOffloadingContext()

    def request_finished(self, req_context: ReqContext) -> None:
        pass

    def shutdown(self) -> None:
        pass
